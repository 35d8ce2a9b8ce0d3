// Node `ws` chat server for scripts/bench: every message to every other client, like lua/chat.lua.
// usage: node ws-chat.js [--tls CERT KEY] [--deflate] PORT  (see ws-server.js)
'use strict';
require('./ws-server')((ws, wss) => {
  ws.on('message', (data, isBinary) => {
    for (const client of wss.clients) if (client !== ws) client.send(data, { binary: isBinary });
  });
});

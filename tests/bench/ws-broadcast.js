// Node `ws` broadcast server for scripts/bench: every message to every client, sender included.
// usage: node ws-broadcast.js [--tls CERT KEY] [--deflate] PORT  (see ws-server.js)
'use strict';
require('./ws-server')((ws, wss) => {
  ws.on('message', (data, isBinary) => {
    for (const client of wss.clients) client.send(data, { binary: isBinary });
  });
});

// Node `ws` chat server for scripts/bench: every message to every other client, like lua/chat.lua.
// usage: node ws-chat.js PORT  (ws is found through NODE_PATH)
'use strict';
const { WebSocketServer } = require('ws');
const wss = new WebSocketServer({ host: '127.0.0.1', port: +process.argv[2] || 0, perMessageDeflate: false });
wss.on('listening', () => console.error(`listening on 127.0.0.1:${wss.address().port}`));
wss.on('connection', (ws) => {
  ws.on('message', (data, isBinary) => {
    for (const client of wss.clients) if (client !== ws) client.send(data, { binary: isBinary });
  });
});

// Node `ws` echo server for scripts/bench: every message back to its sender.
// usage: node ws-echo.js PORT  (ws is found through NODE_PATH)
'use strict';
const { WebSocketServer } = require('ws');
const wss = new WebSocketServer({ host: '127.0.0.1', port: +process.argv[2] || 0, perMessageDeflate: false });
wss.on('listening', () => console.error(`listening on 127.0.0.1:${wss.address().port}`));
wss.on('connection', (ws) => {
  ws.on('message', (data, isBinary) => ws.send(data, { binary: isBinary }));
});

// Node `ws` chat server for scripts/bench: every message to every other client, like lua/chat.lua.
// usage: node ws-chat.js [--tls CERT KEY] PORT  (ws is found through NODE_PATH; --tls: wss://)
'use strict';
const { WebSocketServer } = require('ws');
const tls = process.argv[2] === '--tls' ? process.argv.splice(2, 3).slice(1) : null;
const https = tls && require('https').createServer({
  cert: require('fs').readFileSync(tls[0]), key: require('fs').readFileSync(tls[1]),
});
const wss = new WebSocketServer(https ? { server: https, perMessageDeflate: false }
  : { host: '127.0.0.1', port: +process.argv[2] || 0, perMessageDeflate: false });
const where = () => `listening on 127.0.0.1:${(https || wss).address().port}`;
if (https) https.listen(+process.argv[2] || 0, '127.0.0.1', () => console.error(where()));
else wss.on('listening', () => console.error(where()));
wss.on('connection', (ws) => {
  ws.on('message', (data, isBinary) => {
    for (const client of wss.clients) if (client !== ws) client.send(data, { binary: isBinary });
  });
});

// The Node `ws` server behind ws-echo.js, ws-broadcast.js and ws-chat.js (scripts/bench).
// Their usage: node ws-KIND.js [--tls CERT KEY] [--deflate] PORT  (ws is found through NODE_PATH)
//   --tls       wss://, behind Node's https server
//   --deflate   permessage-deflate as wsluad's --deflate does it: the server keeps no context,
//               zlib level 1, messages under 256 bytes plain
// Calls onConnection(ws, wss) for every client; prints "listening on 127.0.0.1:PORT".
'use strict';
const fs = require('fs');
const { WebSocketServer } = require('ws');

module.exports = function serve(onConnection) {
  const argv = process.argv.slice(2);
  let tls = null;
  let deflate = false;
  while (argv.length && argv[0].startsWith('--')) {
    const opt = argv.shift();
    if (opt === '--tls') tls = argv.splice(0, 2);
    else if (opt === '--deflate') deflate = true;
    else throw new Error(`unknown option ${opt}`);
  }
  const port = +argv[0] || 0;
  const perMessageDeflate = deflate
    ? { serverNoContextTakeover: true, threshold: 256, zlibDeflateOptions: { level: 1 } }
    : false;
  const https = tls && require('https').createServer({
    cert: fs.readFileSync(tls[0]), key: fs.readFileSync(tls[1]),
  });
  const wss = new WebSocketServer(https ? { server: https, perMessageDeflate }
    : { host: '127.0.0.1', port, perMessageDeflate });
  const where = () => `listening on 127.0.0.1:${(https || wss).address().port}`;
  if (https) https.listen(port, '127.0.0.1', () => console.error(where()));
  else wss.on('listening', () => console.error(where()));
  wss.on('connection', (ws) => onConnection(ws, wss));
};

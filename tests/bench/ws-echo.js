// Node `ws` echo server for scripts/bench: every message back to its sender.
// usage: node ws-echo.js [--tls CERT KEY] [--deflate] PORT  (see ws-server.js)
'use strict';
require('./ws-server')((ws) => {
  ws.on('message', (data, isBinary) => ws.send(data, { binary: isBinary }));
});

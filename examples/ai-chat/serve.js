// Serves the example's pages (page/) on 127.0.0.1. The pages talk to spoold directly
// (WebSocket, and REST with CORS: run spoold with --cors-origins '*' or the page's origin).
//   node serve.js [port]       (default 8081; 0 = any free port, printed)
'use strict';
const fs = require('fs');
const http = require('http');
const path = require('path');

const ROOT = path.join(__dirname, 'page');
const TYPES = {'.html': 'text/html; charset=utf-8', '.js': 'text/javascript; charset=utf-8', '.css': 'text/css'};

function start(port = 8081) {
  return new Promise((resolve) => {
    const server = http.createServer((req, res) => {
      const name = path.basename(new URL(req.url, 'http://x').pathname) || 'user.html';
      const file = path.join(ROOT, name);
      if (!TYPES[path.extname(file)] || !fs.existsSync(file)) {
        res.writeHead(404).end('not found');
        return;
      }
      res.writeHead(200, {'Content-Type': TYPES[path.extname(file)], 'Cache-Control': 'no-store'});
      fs.createReadStream(file).pipe(res);
    });
    server.listen(port, '127.0.0.1', () => resolve(server));
  });
}

module.exports = {start};
if (require.main === module)
  start(Number(process.argv[2] || 8081)).then((s) => console.log(`pages on http://127.0.0.1:${s.address().port}/user.html`));

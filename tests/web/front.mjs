// Interim stand-in, used only while the host has no development sign-in
// (run.mjs asks GET /auth/config first): serves web/, answers GET
// /auth/config and POST /dev/token (with `bearbnb token`) and proxies
// everything else, streams included, to the host.
import http from 'node:http';
import { readFile } from 'node:fs/promises';
import { join, normalize, extname } from 'node:path';
import { freePort } from './host.mjs';

const TYPES = { '.html': 'text/html; charset=utf-8', '.js': 'text/javascript; charset=utf-8', '.css': 'text/css; charset=utf-8' };

export async function startFront(host, webRoot) {
  const target = new URL(host.url);
  const server = http.createServer(async (req, res) => {
    const u = new URL(req.url, 'http://x');
    if (req.method === 'GET' && u.pathname === '/auth/config') {
      res.writeHead(200, { 'Content-Type': 'application/json' });
      return res.end('{"mode":"dev"}');
    }
    if (req.method === 'POST' && u.pathname === '/dev/token') {
      let b = '';
      for await (const c of req) b += c;
      try {
        const { sub, role } = JSON.parse(b);
        if (!/^[A-Za-z0-9._-]{1,64}$/.test(sub) || !['host', 'guest'].includes(role)) throw new Error('bad');
        res.writeHead(200, { 'Content-Type': 'application/json' });
        return res.end(JSON.stringify({ token: host.token(sub, role) }));
      } catch {
        res.writeHead(400, { 'Content-Type': 'application/problem+json' });
        return res.end('{"type":"about:blank","title":"Bad Request","status":400,"detail":"field \'sub\' must be a name"}');
      }
    }
    const file = u.pathname === '/' ? 'index.html' : normalize(u.pathname).replace(/^\/+/, '');
    if (req.method === 'GET' && (u.pathname === '/' || /^(js\/[a-z0-9]+\.js|app\.css)$/.test(file))) {
      try {
        const data = await readFile(join(webRoot, file));
        res.writeHead(200, { 'Content-Type': TYPES[extname(file)] || 'application/octet-stream' });
        return res.end(data);
      } catch { /* fall through to the proxy */ }
    }
    const p = http.request({ host: target.hostname, port: target.port, method: req.method, path: req.url, headers: req.headers }, (up) => {
      res.writeHead(up.statusCode, up.headers);
      up.pipe(res);
    });
    p.on('error', () => { res.writeHead(502); res.end(); });
    req.pipe(p);
  });
  const port = await freePort();
  await new Promise((r) => server.listen(port, '127.0.0.1', r));
  return { url: `http://127.0.0.1:${port}`, stop: () => new Promise((r) => { server.closeAllConnections(); server.close(r); }) };
}

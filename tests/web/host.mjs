// Start and stop a real all-in-one bearbnb for the browser test: a fresh
// data dir, a free loopback port, the sanitizer options from meson's env.
import { spawn, execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, openSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import net from 'node:net';

export function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.listen(0, '127.0.0.1', () => { const p = s.address().port; s.close(() => resolve(p)); });
    s.on('error', reject);
  });
}

// wantPort and dir: the same host again (a restart on its port and data).
export async function startHost(extraEnv = {}, wantPort = 0, dataDir = null) {
  const bin = process.env.BEARBNB_BIN;
  if (!bin) throw new Error('BEARBNB_BIN is not set (run through meson test)');
  const dir = dataDir || mkdtempSync(join(tmpdir(), 'bnb-web-'));
  const port = wantPort || await freePort();
  const logPath = join(dir, 'host.log');
  const log = openSync(logPath, 'a');
  const env = { ...process.env, ...extraEnv };
  const proc = spawn(bin, ['--listen', `127.0.0.1:${port}`, '--data', dir], { env, stdio: ['ignore', log, log] });
  let exited = null;
  const exit = new Promise((r) => proc.on('exit', (code, sig) => { exited = code ?? 128; r(exited); void sig; }));
  const url = `http://127.0.0.1:${port}`;
  const tail = () => { try { return readFileSync(logPath, 'utf8').slice(-4000); } catch { return ''; } };
  const deadline = Date.now() + 30000;
  for (;;) {
    if (exited !== null) throw new Error('bearbnb exited ' + exited + '\n' + tail());
    try { if ((await fetch(url + '/readyz')).status === 200) break; } catch { /* not yet */ }
    if (Date.now() > deadline) { proc.kill('SIGKILL'); throw new Error('bearbnb did not become ready\n' + tail()); }
    await new Promise((r) => setTimeout(r, 100));
  }
  return {
    url, dir, tail,
    token: (sub, role) => execFileSync(bin, ['token', '--data', dir, '--sub', sub, '--role', role], { env, encoding: 'utf8' }).trim(),
    async stop() {
      if (exited === null) {
        proc.kill('SIGTERM');
        const t = setTimeout(() => proc.kill('SIGKILL'), 30000);
        await exit;
        clearTimeout(t);
      }
      return exited;
    },
    cleanup() { rmSync(dir, { recursive: true, force: true }); },
  };
}

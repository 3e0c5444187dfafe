"""Start and stop a real all-in-one `bearbnb` for the Python e2e checks.

Environment (tests/meson.build e2e_env): BEARBNB_BIN, BEARBNB_PLUGIN_DIR, the
sanitizer options. The host gets a fresh data dir and a free loopback port;
its log is printed when something fails."""
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request


def free_port():
    s = socket.socket()
    s.bind(('127.0.0.1', 0))
    port = s.getsockname()[1]
    s.close()
    return port


class Host:
    def __init__(self, env=None):
        self.dir = tempfile.mkdtemp(prefix='bnb-py-')
        self.port = free_port()
        self.url = 'http://127.0.0.1:%d' % self.port
        e = dict(os.environ)
        e.update(env or {})
        self.log_path = os.path.join(self.dir, 'host.log')
        self.log = open(self.log_path, 'wb')
        self.bin = os.environ['BEARBNB_BIN']
        self.env = e
        self.proc = subprocess.Popen([self.bin, '--listen', '127.0.0.1:%d' % self.port, '--data', self.dir],
                                     stdout=self.log, stderr=subprocess.STDOUT, env=e)
        deadline = time.time() + 30
        while time.time() < deadline:
            if self.proc.poll() is not None:
                break
            try:
                if self.get('/readyz')[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError('bearbnb did not become ready:\n' + self.tail())

    def tail(self, n=4000):
        try:
            return open(self.log_path, 'rb').read()[-n:].decode('utf-8', 'replace')
        except OSError:
            return ''

    def request(self, method, path, body=None, token=None):
        h = {}
        if token:
            h['Authorization'] = 'Bearer ' + token
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            h['Content-Type'] = 'application/json'
        rq = urllib.request.Request(self.url + path, data=data, method=method, headers=h)
        try:
            with urllib.request.urlopen(rq, timeout=30) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()

    def get(self, path, token=None):
        return self.request('GET', path, token=token)

    def token(self, sub, role):
        out = subprocess.run([self.bin, 'token', '--data', self.dir, '--sub', sub, '--role', role],
                             env=self.env, capture_output=True, text=True, check=True)
        return out.stdout.strip()

    def stop(self):
        """SIGTERM; the exit status (23 = a sanitizer report)."""
        rc = None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                rc = self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                rc = self.proc.wait()
        else:
            rc = self.proc.returncode
        self.log.close()
        return rc

    def cleanup(self):
        shutil.rmtree(self.dir, ignore_errors=True)

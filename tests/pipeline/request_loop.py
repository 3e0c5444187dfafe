#!/usr/bin/env python3
"""A steady, bounded stream of HTTP requests to one loopback address.

  request_loop.py --port P --stop-file F [--path /rooms] [--workers 2]
                  [--max-seconds 150] [--max-requests 20000] [--out result.json]

Each worker sends one request per new connection (so every request meets
whichever process accepts it), until F exists or a bound is reached. A request
fails when the connection is refused/reset/times out or the status is not 200.
Writes {"requests", "ok", "failed", "errors": {...}, "seconds"}.
"""
import argparse
import http.client
import json
import os
import threading
import time


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--path", action="append")
    ap.add_argument("--stop-file", required=True)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--max-seconds", type=float, default=150)
    ap.add_argument("--max-requests", type=int, default=20000)
    ap.add_argument("--interval", type=float, default=0.01)
    ap.add_argument("--out")
    a = ap.parse_args()
    if a.host not in ("127.0.0.1", "localhost", "::1"):
        raise SystemExit("loopback only")
    paths = a.path or ["/rooms"]
    lock = threading.Lock()
    st = {"requests": 0, "ok": 0, "failed": 0, "errors": {}}
    t0 = time.monotonic()

    def done():
        return (os.path.exists(a.stop_file) or time.monotonic() - t0 > a.max_seconds
                or st["requests"] >= a.max_requests)

    def worker(n):
        i = n
        while not done():
            path = paths[i % len(paths)]
            i += 1
            err = None
            try:
                c = http.client.HTTPConnection(a.host, a.port, timeout=20)
                c.request("GET", path, headers={"Connection": "close"})
                r = c.getresponse()
                r.read()
                if r.status != 200:
                    err = "%s %d" % (path, r.status)
                c.close()
            except Exception as e:  # noqa: BLE001 - every failure counts
                err = "%s %s" % (path, type(e).__name__)
            with lock:
                st["requests"] += 1
                if err:
                    st["failed"] += 1
                    st["errors"][err] = st["errors"].get(err, 0) + 1
                else:
                    st["ok"] += 1
            time.sleep(a.interval)

    ts = [threading.Thread(target=worker, args=(n,)) for n in range(a.workers)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    st["seconds"] = round(time.monotonic() - t0, 2)
    text = json.dumps(st)
    if a.out:
        with open(a.out, "w") as f:
            f.write(text)
    print(text)


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Helpers of bench/scale.sh (stdlib only).

  scale.py book-search PORT IN OUT
      a ReservationPlaced for every 10th of the first 2,000 rooms in list
      order (POST /admin/events: the availability read model is fed as by
      the reservation service); prints how many.
  scale.py bookings PORT ROUNDS TOKENS_FILE ROOM_SIZE=ROOM_ID ...
      bookings one at a time on one kept-alive connection, the rooms
      interleaved round by round (a shared machine's noise falls on every
      size alike), each a one-night stay on a night of its own (60 days ahead
      and on), guests rotating so that nobody holds more than 9 active
      reservations; GET /healthz timed in the same rounds. 10 warm-up rounds
      are not counted. Prints "SIZE CASE P50 P99 N" lines (ms).
  scale.py drop-mongo URL
      dropDatabase of the URL's database (one OP_MSG, no driver needed).
"""
import datetime
import http.client
import json
import socket
import struct
import sys
import time
import urllib.parse


def conn(port):
    return http.client.HTTPConnection("127.0.0.1", int(port), timeout=60)


def req(c, method, path, body=None, token=None, ok=(200, 201, 202, 204)):
    h = {}
    if body is not None:
        h["Content-Type"] = "application/json"
    if token:
        h["Authorization"] = "Bearer " + token
    c.request(method, path, body=body, headers=h)
    r = c.getresponse()
    data = r.read()
    if r.status not in ok:
        sys.exit(f"scale.py: {method} {path}: {r.status} {data[:300]!r}")
    return r.status, (json.loads(data) if data else None)


def book_search(port, cin, cout):
    c = conn(port)
    ids, cursor = [], None
    while len(ids) < 2000:
        q = "/rooms?limit=100" + ("&cursor=" + urllib.parse.quote(cursor, safe="") if cursor else "")
        _, page = req(c, "GET", q)
        ids += [r["id"] for r in page["items"]]
        cursor = page["next"]
        if not cursor:
            break
    for n, rid in enumerate(ids[:2000]):
        if n % 10:
            continue
        ev = {"id": f"bench-placed-{rid}", "type": "ReservationPlaced", "source": "reservation",
              "subject": f"bench-{rid}", "correlationId": f"bench-{rid}", "time": "2026-01-01T00:00:00Z",
              "data": {"id": f"bench-{rid}", "roomId": rid, "hostId": "bench-host", "guestId": "bench-guest",
                       "checkIn": cin, "checkOut": cout, "guests": 2, "amount": 27000, "status": "PENDING",
                       "version": 1}}
        req(c, "POST", "/admin/events?topic=bearbnb.reservation", json.dumps(ev))
    print(len(ids[:2000:10]))


def pct(v, p):
    v = sorted(v)
    return v[min(len(v) - 1, int(p * (len(v) - 1) + 0.5))] if v else 0.0


def bookings(port, rounds, tokens_file, rooms):
    tokens = [t.strip() for t in open(tokens_file) if t.strip()]
    sizes = [(int(s), rid) for s, rid in (r.split("=", 1) for r in rooms)]
    c = conn(port)
    lat = {s: [] for s, _ in sizes}
    hz = []
    statuses = {}
    today = datetime.date.today()
    n = 0
    warm = 10
    for rnd in range(-warm, rounds):
        t0 = time.perf_counter()
        req(c, "GET", "/healthz")
        t = (time.perf_counter() - t0) * 1000
        if rnd >= 0:
            hz.append(t)
        day = today + datetime.timedelta(days=60 + rnd + warm)
        for s, rid in sizes:
            tok = tokens[n // 9]
            n += 1
            body = json.dumps({"roomId": rid, "checkIn": day.isoformat(),
                               "checkOut": (day + datetime.timedelta(days=1)).isoformat(),
                               "guests": 1, "card": "4111111111111111"})
            t0 = time.perf_counter()
            st, _ = req(c, "POST", "/reservations", body, tok, ok=(201, 202))
            t = (time.perf_counter() - t0) * 1000
            statuses[st] = statuses.get(st, 0) + 1
            if rnd >= 0:
                lat[s].append(t)
    for s, _ in sizes:
        print(f"{s} healthz {pct(hz, .5):.3f} {pct(hz, .99):.3f} {len(hz)}")
        print(f"{s} booking {pct(lat[s], .5):.3f} {pct(lat[s], .99):.3f} {len(lat[s])}")
    print("# booking answers: " + ", ".join(f"{k}: {v}" for k, v in sorted(statuses.items())), file=sys.stderr)


def bson_doc(items):
    out = b""
    for k, v in items:
        kb = k.encode() + b"\0"
        if isinstance(v, int):
            out += b"\x10" + kb + struct.pack("<i", v)
        else:
            vb = v.encode() + b"\0"
            out += b"\x02" + kb + struct.pack("<i", len(vb)) + vb
    return struct.pack("<i", len(out) + 5) + out + b"\0"


def drop_mongo(url):
    u = urllib.parse.urlparse(url)
    db = u.path.strip("/")
    if not db:
        return
    body = struct.pack("<I", 0) + b"\0" + bson_doc([("dropDatabase", 1), ("$db", db)])
    msg = struct.pack("<iiii", 16 + len(body), 1, 0, 2013) + body
    with socket.create_connection((u.hostname, u.port or 27017), timeout=30) as s:
        s.sendall(msg)
        s.recv(65536)


def main():
    cmd = sys.argv[1]
    if cmd == "book-search":
        book_search(*sys.argv[2:5])
    elif cmd == "bookings":
        bookings(sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5:])
    elif cmd == "drop-mongo":
        drop_mongo(sys.argv[2])
    else:
        sys.exit("scale.py: unknown command " + cmd)


if __name__ == "__main__":
    main()

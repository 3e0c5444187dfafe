#!/usr/bin/env python3
"""Schemathesis against the all-in-one host, as a host and as a guest.

Starts `bearbnb` (every plugin, SQLite in a temp dir, rate limits off so the
fuzzer is not answered 429), lists a room, books it and reviews it (so that
generated requests also meet real data), then runs Schemathesis on
docs/openapi.json twice -- with a host's token and with a guest's -- with a
bounded number of examples per operation and these checks:
  not_a_server_error            no 5xx
  status_code_conformance       every status is documented
  content_type_conformance      every Content-Type is documented
  response_schema_conformance   every body matches its schema
Finally the host must stop cleanly (exit 0: no sanitizer report).

usage: run_schemathesis.py DOCS_OPENAPI_JSON
env:   BNB_SCHEMATHESIS   the schemathesis program (scripts/api-deps installs it
                          into .deps/venv-api); missing: exit 77 (skipped)
       BNB_FUZZ_EXAMPLES  examples per operation and phase (default 15)
       BNB_FUZZ_SEED      the seed (default 1: CI runs are reproducible)
"""
import datetime
import json
import os
import subprocess
import sys

import bnbhost

# Operations (operationId) held only to "no 5xx" (not to their response
# schema), each with the reason, printed every run. Keep this empty unless an
# operation cannot pass for a reason outside the document; say so when adding one.
EXCLUDED = {
}

# Operations Schemathesis cannot call at all, each with the reason and where
# they are tested instead.
NOT_RUN = {
    'dashboardStream': 'a Server-Sent Events answer never ends (tests/e2e/web/test_web_stream.c)',
}


def main():
    doc = sys.argv[1]
    st = os.environ.get('BNB_SCHEMATHESIS', '')
    if not st or not os.access(st, os.X_OK):
        print('schemathesis not installed (BNB_SCHEMATHESIS=%r): run scripts/api-deps' % st)
        return 77
    examples = os.environ.get('BNB_FUZZ_EXAMPLES', '15')
    seed = os.environ.get('BNB_FUZZ_SEED', '1')
    h = bnbhost.Host({'BEARBNB_LIMITS_USER_RATE': '0', 'BEARBNB_LIMITS_IP_RATE': '0'})
    failed = False
    try:
        host_tok = h.token('fuzz-host', 'host')
        guest_tok = h.token('fuzz-guest', 'guest')
        # some real data: a room, a booking of it, a review
        s, b = h.request('POST', '/rooms', {'name': 'Fuzz loft', 'description': 'seed', 'city': 'Oslo',
                                            'pricePerNight': 100, 'capacity': 2}, host_tok)
        assert s == 201, (s, b)
        room = json.loads(b)['id']
        day = datetime.date.today() + datetime.timedelta(days=40)
        s, b = h.request('POST', '/reservations', {'roomId': room, 'checkIn': day.isoformat(),
                                                   'checkOut': (day + datetime.timedelta(days=2)).isoformat(),
                                                   'guests': 2, 'card': '4111111111111111'}, guest_tok)
        assert s in (201, 202), (s, b)
        s, b = h.request('POST', '/rooms/%s/reviews' % room, {'rating': 5, 'content': 'fine'}, guest_tok)
        assert s == 201, (s, b)
        # an operation held to no-5xx only because it answers no page yet is
        # held to every check as soon as it answers one (EXCLUDED cannot hide it)
        probes = {'listRooms': ('/rooms', host_tok), 'listReviews': ('/rooms/%s/reviews' % room, host_tok),
                  'listReservations': ('/reservations', guest_tok), 'listPayments': ('/payments', guest_tok)}
        excluded = dict(EXCLUDED)
        for op, (path, tok) in probes.items():
            if op not in excluded:
                continue
            s, b = h.request('GET', path, token=tok)
            try:
                page = s == 200 and isinstance(json.loads(b), dict) and 'items' in json.loads(b)
            except ValueError:
                page = False
            if page:
                del excluded[op]
                print('%s answers a page now: held to every check (remove it from EXCLUDED in %s)' % (op, __file__),
                      flush=True)
        for k, v in excluded.items():
            print('only checked for 5xx: %s (%s)' % (k, v))
        for k, v in NOT_RUN.items():
            print('not run: %s (%s)' % (k, v))
        full = 'not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance'
        for who, tok in (('host', host_tok), ('guest', guest_tok)):
            # one worker: with two, Schemathesis 4.32.5's coverage phase sometimes
            # fails inside itself (KeyError in its schema walker), not in BearBnB
            base = [st, 'run', doc, '--url', h.url, '-H', 'Authorization: Bearer ' + tok,
                    '--max-examples', examples, '--seed', seed, '--phases', 'examples,coverage,fuzzing',
                    '--workers', '1', '--generation-database', 'none', '--no-color', '--request-timeout', '20']
            base += [a for k in NOT_RUN for a in ('--exclude-operation-id', k)]
            runs = [('every check', base + ['--checks', full] +
                     [a for k in excluded for a in ('--exclude-operation-id', k)])]
            if excluded:
                runs.append(('no 5xx', base + ['--checks', 'not_a_server_error'] +
                             [a for k in excluded for a in ('--include-operation-id', k)]))
            for what, cmd in runs:
                print('== schemathesis as a %s, %s (%s examples per operation, seed %s)' % (who, what, examples, seed),
                      flush=True)
                r = subprocess.run(cmd, cwd=h.dir)
                if r.returncode != 0:
                    failed = True
                    print('== schemathesis as a %s, %s: FAILED (exit %d)' % (who, what, r.returncode), flush=True)
    finally:
        rc = h.stop()
        if rc != 0:
            failed = True
            print('bearbnb exited with %s:\n%s' % (rc, h.tail()))
        h.cleanup()
    return 1 if failed else 0


if __name__ == '__main__':
    sys.exit(main())

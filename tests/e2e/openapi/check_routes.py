#!/usr/bin/env python3
"""docs/openapi.json against the routes the host really serves.

Starts an all-in-one bearbnb with every plugin (admin mode, loopback), reads
its route table from GET /admin/routes and fails when
  - a route a client may call (who != service) is missing from the document,
  - the document lists a path/method the host does not serve,
  - the document lists a service-only route (clients can never call those),
  - GET /openapi.json is not byte for byte docs/openapi.json,
  - the document is not OpenAPI 3.1 or a $ref does not resolve.
usage: check_routes.py DOCS_OPENAPI_JSON"""
import json
import sys

import bnbhost

METHODS = ('get', 'put', 'post', 'delete', 'patch', 'head', 'options')

# Documented routes of the contract that a plugin does not serve yet, each
# with the reason. Printed every run; a route listed here that the host serves
# fails the test (remove it from here), so this list cannot go stale.
PENDING = {
}


def refs(node, doc, where, errors):
    if isinstance(node, dict):
        r = node.get('$ref')
        if isinstance(r, str):
            cur = doc
            for part in r.lstrip('#/').split('/'):
                cur = cur.get(part) if isinstance(cur, dict) else None
            if cur is None:
                errors.append('%s: $ref %s does not resolve' % (where, r))
        for k, v in node.items():
            refs(v, doc, where + '/' + k, errors)
    elif isinstance(node, list):
        for i, v in enumerate(node):
            refs(v, doc, '%s/%d' % (where, i), errors)


def main():
    path = sys.argv[1]
    raw = open(path, 'rb').read()
    doc = json.loads(raw)
    errors = []
    if not str(doc.get('openapi', '')).startswith('3.1'):
        errors.append('openapi is %r, want 3.1.x' % doc.get('openapi'))
    refs(doc, doc, '#', errors)
    documented = set()
    for p, item in doc.get('paths', {}).items():
        for m in item:
            if m in METHODS:
                documented.add((m.upper(), p))
                op = item[m]
                if 'responses' not in op or not op['responses']:
                    errors.append('%s %s: no responses' % (m.upper(), p))
    h = bnbhost.Host({'BEARBNB_ADMIN': '1'})
    try:
        st, body = h.get('/admin/routes')
        if st != 200:
            raise SystemExit('GET /admin/routes: %d %s' % (st, body[:200]))
        routes = json.loads(body)
        st, served = h.get('/openapi.json')
        if st != 200 or served != raw:
            errors.append('GET /openapi.json (%d, %d bytes) is not %s (%d bytes)' % (st, len(served), path, len(raw)))
    finally:
        rc = h.stop()
        if rc != 0:
            errors.append('bearbnb exited with %s:\n%s' % (rc, h.tail()))
        h.cleanup()
    public = {(r['method'], r['path']) for r in routes if r['who'] != 'service'}
    service = {(r['method'], r['path']) for r in routes if r['who'] == 'service'}
    plugins = sorted({r['plugin'] for r in routes if r['plugin']})
    for m, p in sorted(public - documented):
        errors.append('served but not documented: %s %s' % (m, p))
    for m, p in sorted(documented - public - service):
        if (m, p) in PENDING:
            print('pending: %s %s is documented, not served yet: %s' % (m, p, PENDING[(m, p)]))
        else:
            errors.append('documented but not served: %s %s' % (m, p))
    for m, p in sorted(set(PENDING) & public):
        errors.append('%s %s is served now: remove it from PENDING in %s' % (m, p, __file__))
    for m, p in sorted(set(PENDING) - documented):
        errors.append('%s %s is in PENDING but not documented' % (m, p))
    for m, p in sorted(documented & service):
        errors.append('documented but only services may call it: %s %s' % (m, p))
    print('%d routes served (%d service-only) by plugins %s; %d documented' %
          (len(routes), len(service), ','.join(plugins), len(documented)))
    if len(plugins) < 4:
        errors.append('expected the four plugins in the all-in-one host, got %s' % plugins)
    for e in errors:
        print('FAIL: ' + e)
    return 1 if errors else 0


if __name__ == '__main__':
    sys.exit(main())

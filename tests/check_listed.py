#!/usr/bin/env python3
"""Build-time check (tests/meson.build): every tests/**/test_*.c (and
test_*.mjs, the browser tests) is named in its folder's meson.build, as
'test_<x>.c' or as '<x>' in a list the folder builds 'test_' + t + '.c'
from. A test file nobody lists would never run; this makes it fail the
build instead. (A listed file that is missing already
fails meson setup.)

usage: check_listed.py TESTS_SOURCE_DIR OUTPUT
"""
import os
import sys


def walk(root):
    """os.walk without npm's node_modules (tests/web)."""
    for d, dirs, names in os.walk(root):
        dirs[:] = [x for x in dirs if x != 'node_modules']
        yield d, names


def main():
    root, out = sys.argv[1], sys.argv[2]
    errors = []
    for d, names in sorted(walk(root)):
        tests = sorted(n for n in names if n.startswith('test_') and n.endswith(('.c', '.mjs')))
        if not tests:
            continue
        rel = os.path.relpath(d, os.path.dirname(root))
        mb = os.path.join(d, 'meson.build')
        text = open(mb, encoding='utf-8').read() if os.path.exists(mb) else ''
        for n in tests:
            stem = n[len('test_'):n.rindex('.')]
            if f"'{n}'" not in text and f"'{stem}'" not in text:
                errors.append(f'{rel}/{n}: not listed in {rel}/meson.build (a test nobody runs)')
    if errors:
        print('\n'.join(errors), file=sys.stderr)
        return 1
    with open(out, 'w') as f:
        f.write('ok\n')
    return 0


if __name__ == '__main__':
    sys.exit(main())

#!/usr/bin/env python3
"""Build-time check (tests/meson.build): every tests/**/test_*.c is named in
its folder's meson.build, as 'test_<x>.c' or as '<x>' in a list the folder
builds 'test_' + t + '.c' from. A test file nobody lists would never run;
this makes it fail the build instead. (A listed file that is missing already
fails meson setup.)

usage: check_listed.py TESTS_SOURCE_DIR OUTPUT
"""
import os
import sys


def main():
    root, out = sys.argv[1], sys.argv[2]
    errors = []
    for d, _, names in sorted(os.walk(root)):
        tests = sorted(n for n in names if n.startswith('test_') and n.endswith('.c'))
        if not tests:
            continue
        rel = os.path.relpath(d, os.path.dirname(root))
        mb = os.path.join(d, 'meson.build')
        text = open(mb, encoding='utf-8').read() if os.path.exists(mb) else ''
        for n in tests:
            stem = n[len('test_'):-len('.c')]
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

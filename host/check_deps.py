#!/usr/bin/env python3
"""Build-time check of host/'s layering (host/README.md), run by host/meson.build.

Include directories already stop a folder from including another folder's
headers. Third-party headers all live in /usr/include, where no include path
can hide them, so this script checks them: a folder may include the headers
of the libraries it links (ALLOWED) and no other third-party header. It also
fails when a .c or .h file in a host folder is not listed in the meson files
(an unlisted file would silently not be built or checked).

usage: check_deps.py HOST_SOURCE_DIR OUTPUT_HEADER LISTED_FILE...
"""
import os
import re
import sys

# Third-party header (or its first path component) -> library name.
THIRD_PARTY = {
    'h2o.h': 'h2o', 'h2o': 'h2o',
    'uv.h': 'libuv', 'uv': 'libuv',
    'jansson.h': 'jansson',
    'jwt.h': 'libjwt',
    'yaml.h': 'libyaml',
    'uuid': 'uuid', 'uuid.h': 'uuid',
    'openssl': 'openssl',
    'curl': 'libcurl',
    'librdkafka': 'librdkafka',
    'mysql.h': 'mariadb', 'mariadb': 'mariadb', 'mysql': 'mariadb',
    'mongoc': 'mongoc', 'bson': 'mongoc', 'mongoc.h': 'mongoc', 'bson.h': 'mongoc',
    'sqlite3.h': 'sqlite',
    'zlib.h': 'zlib',
}

# What each folder (or one file in it) may include. Database clients: only storage/.
ALLOWED = {
    'core': {'jansson', 'libyaml', 'uuid', 'libuv'},
    'core/main.c': {'jansson', 'libuv', 'libcurl'},  # curl_global_init before any thread
    'http': {'h2o', 'libuv', 'openssl', 'jansson'},
    'http/webapp.c': {'h2o', 'libuv', 'openssl', 'zlib'},  # the app's scripts gzipped in memory
    'gateway': {'libcurl', 'openssl', 'jansson'},
    'auth': {'libjwt', 'openssl', 'libcurl', 'jansson'},
    'events': {'libuv', 'jansson'},
    'events/kafka.c': {'librdkafka', 'jansson'},
}

INCLUDE = re.compile(r'^\s*#\s*include\s*<([^>]+)>', re.M)


def main():
    if len(sys.argv) < 3:
        print(__doc__, file=sys.stderr)
        return 2
    src, stamp, listed = sys.argv[1], sys.argv[2], sys.argv[3:]
    listed = {os.path.realpath(p) for p in listed}
    errors = []
    for folder in sorted(os.listdir(src)):
        d = os.path.join(src, folder)
        if not os.path.isdir(d):
            continue
        for name in sorted(os.listdir(d)):
            if not name.endswith(('.c', '.h')):
                continue
            rel = folder + '/' + name
            path = os.path.join(d, name)
            if listed and os.path.realpath(path) not in listed:
                errors.append(f'host/{rel}: not listed in host/{folder}/meson.build')
            allowed = ALLOWED.get(rel, ALLOWED.get(folder))
            if allowed is None:
                errors.append(f'host/{rel}: folder {folder}/ has no entry in host/check_deps.py ALLOWED')
                continue
            with open(path, encoding='utf-8') as f:
                text = f.read()
            for m in INCLUDE.finditer(text):
                header = m.group(1)
                lib = THIRD_PARTY.get(header) or THIRD_PARTY.get(header.split('/')[0])
                if lib and lib not in allowed:
                    line = text.count('\n', 0, m.start()) + 1
                    errors.append(f'host/{rel}:{line}: <{header}> is {lib}, which host/{folder}/ may not use '
                                  f'(allowed: {", ".join(sorted(allowed))}; see host/README.md)')
    if errors:
        print('\n'.join(errors), file=sys.stderr)
        return 1
    with open(stamp, 'w') as f:
        f.write('/* host/check_deps.py passed */\n')
    return 0


if __name__ == '__main__':
    sys.exit(main())

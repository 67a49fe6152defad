"""Python's own storage for a zurl, for the tests that compare wcfs with it.

open_zurl(zurl) opens what upstream wendelin.core's ``zstor_2zurl`` would
turn back into that zurl:

- a path or ``file://PATH``: FileStorage;
- ``zeo://HOST:PORT``, ``zeo://[V6]:PORT``, ``zeo://SOCKET/PATH``, each with
  ``?storage=NAME``: ZEO ClientStorage(addr, storage=NAME);
- ``zeos://ADDR?ca=PATH[&cert=PATH[&key=PATH]][&server_hostname=NAME]
  [&storage=NAME]`` (wcfs' own form, parameters URL-quoted): the same over
  TLS, ClientStorage(addr, ssl=<context trusting ca, with cert and key>,
  ssl_server_hostname=NAME);
- ``postgresql://...``: RelStorage (pgstorage);
- ``neo://NAME@HOST:PORT[,HOST:PORT...]``: NEO's client Storage (only in
  the NEO venv, where ``neo`` imports);
- ``demo:(BASE)/(DELTA)``: DemoStorage(base=<BASE, read-only>,
  changes=<DELTA>).

The demo split here is deliberately simple (the tests give plain parts):
the one ``)/(`` that leaves both sides' parentheses balanced.
"""

import pgstorage


def _balanced(s):
    depth = 0
    for c in s:
        if c == '(':
            depth += 1
        elif c == ')':
            depth -= 1
            if depth < 0:
                return False
    return depth == 0


def split_demo(zurl):
    """(base, delta) of a demo: zurl."""
    body = zurl[len('demo:'):]
    if not (body.startswith('(') and body.endswith(')')):
        raise ValueError('bad demo zurl %r' % zurl)
    inner = body[1:-1]
    splits = []
    i = inner.find(')/(')
    while i >= 0:
        a, b = inner[:i], inner[i + 3:]
        if _balanced(a) and _balanced(b):
            splits.append((a, b))
        i = inner.find(')/(', i + 1)
    if len(splits) != 1:
        raise ValueError('cannot split demo zurl %r' % zurl)
    return splits[0]


def zeo_addr(rest):
    """(addr, storage name) of what follows zeo://"""
    name = '1'
    q = rest.rfind('?storage=')
    if q >= 0:
        rest, name = rest[:q], rest[q + len('?storage='):]
    host, sep, port = rest.rpartition(':')
    if sep and port.isdigit() and '/' not in host:
        return (host.strip('[]'), int(port)), name
    return rest, name


def zeos_args(rest):
    """(addr, storage name, ssl context, server host name) of what follows
    zeos://"""
    import ssl
    from urllib.parse import unquote
    addr, _, query = rest.partition('?')
    p = {}
    for kv in query.split('&'):
        if kv:
            k, _, v = kv.partition('=')
            p[k] = unquote(v)
    addr, _ = zeo_addr(addr)
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=p['ca'])
    if 'cert' in p:
        ctx.load_cert_chain(p['cert'], p.get('key'))
    return addr, p.get('storage', '1'), ctx, p.get('server_hostname')


def open_zurl(zurl, read_only=False):
    if pgstorage.is_pg(zurl):
        return pgstorage.open_relstorage(zurl, read_only=read_only)
    if zurl.startswith('zeo://'):
        from ZEO.ClientStorage import ClientStorage
        addr, name = zeo_addr(zurl[len('zeo://'):])
        return ClientStorage(addr, storage=name, read_only=read_only)
    if zurl.startswith('zeos://'):
        from ZEO.ClientStorage import ClientStorage
        addr, name, ctx, host = zeos_args(zurl[len('zeos://'):])
        return ClientStorage(addr, storage=name, read_only=read_only,
                             ssl=ctx, ssl_server_hostname=host)
    if zurl.startswith('neo://'):
        from neo.client.Storage import Storage
        name, masters = zurl[len('neo://'):].rsplit('@', 1)
        return Storage(master_nodes=masters.replace(',', ' '), name=name,
                       read_only=read_only)
    if zurl.startswith('demo:'):
        from ZODB.DemoStorage import DemoStorage
        base, delta = split_demo(zurl)
        return DemoStorage(base=open_zurl(base, read_only=True),
                           changes=open_zurl(delta, read_only=read_only))
    from ZODB.FileStorage import FileStorage
    if zurl.startswith('file://'):
        zurl = zurl[len('file://'):]
    return FileStorage(zurl, read_only=read_only)

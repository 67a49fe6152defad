"""Python oracle for the WCFS pickle decoder and ZODB record decoder tests.

Usage:  gen.py corpus   -- plain pickles of a varied corpus, protocols 0..5
        gen.py zodb     -- ZODB data records (needs ZODB; use the venv python)

Each output line is tab-separated:

    case   <name> <protocol> <pickle hex> <rendering>
    record <name> <record hex> <module.class> <state rendering> <refs>

The rendering is computed by unpickling with Python's own (pure-Python)
unpickler, with hooks that build a mirror of the pickle's *data* instead of
importing and calling anything: globals, calls (REDUCE/INST/OBJ), NEWOBJ,
BUILD and persistent ids become plain marker objects. Everything else --
memo sharing and in-place mutation, opcode semantics -- is Python's.  The
rendering grammar is what tests/pickle_common.rs renders on the Rust side;
"ERR" means the decoder must refuse the pickle (nested deeper than 256,
which includes cycles).
"""

import codecs
import io
import os
import pickle
import struct
import sys
import tempfile

MAX_DEPTH = 256


class G:
    """A global (class or function), never imported."""

    def __init__(self, m, n):
        self.m, self.n = m, n

    def __call__(self, *args):
        return Obj('R', self, args)

    def __setstate__(self, state):
        raise TypeError('BUILD on a global')


class Obj:
    """REDUCE / NEWOBJ result; BUILD states are recorded in order."""

    def __init__(self, kind, *parts):
        self.kind, self.parts, self.builds = kind, parts, []

    def __call__(self, *args):
        return Obj('R', self, args)

    def __setstate__(self, state):
        self.builds.append(state)


class P:
    def __init__(self, pid):
        self.pid = pid


class Mirror(pickle._Unpickler):
    def __init__(self, f):
        super().__init__(f, encoding='bytes')

    def find_class(self, module, name):
        # The two call forms that are byte strings in disguise are real.
        if (module, name) == ('_codecs', 'encode'):
            return codecs.encode
        if name == 'bytes' and module in ('builtins', '__builtin__'):
            return bytes
        return G(module, name)

    def persistent_load(self, pid):
        return P(pid)

    dispatch = dict(pickle._Unpickler.dispatch)

    def load_newobj(self):
        args = self.stack.pop()
        cls = self.stack.pop()
        self.append(Obj('N', cls, args, None))
    dispatch[pickle.NEWOBJ[0]] = load_newobj

    def load_newobj_ex(self):
        kwargs = self.stack.pop()
        args = self.stack.pop()
        cls = self.stack.pop()
        self.append(Obj('N', cls, args, kwargs))
    dispatch[pickle.NEWOBJ_EX[0]] = load_newobj_ex


class TooDeep(Exception):
    pass


def render(x, refs=None, depth=0):
    if depth > MAX_DEPTH:
        raise TooDeep()
    d = depth + 1

    def r(y, dd=d):
        return render(y, refs, dd)
    if x is None:
        return 'N'
    if x is True:
        return 'T'
    if x is False:
        return 'F'
    if isinstance(x, int):
        return 'i%d' % x
    if isinstance(x, float):
        return 'f' + struct.pack('>d', x).hex()
    if isinstance(x, (bytes, bytearray)):
        return 'b' + bytes(x).hex()
    if isinstance(x, str):
        return 's' + x.encode('utf-8').hex()
    if isinstance(x, tuple):
        return '(' + ','.join(r(y) for y in x) + ')'
    if isinstance(x, list):
        return '[' + ','.join(r(y) for y in x) + ']'
    if isinstance(x, dict):
        return '{' + ','.join(r(k) + ':' + r(v) for k, v in x.items()) + '}'
    if isinstance(x, frozenset):
        return 'Z{' + ','.join(sorted(r(y) for y in x)) + '}'
    if isinstance(x, set):
        return 'S{' + ','.join(sorted(r(y) for y in x)) + '}'
    if isinstance(x, G):
        return 'g%s.%s' % (x.m, x.n)
    if isinstance(x, P):
        if refs is not None:
            refs.append(interpret_ref(x.pid))
        return 'P(' + r(x.pid) + ')'
    if isinstance(x, Obj):
        # BUILD wraps: B(B(obj, s1), s2); the innermost object is deepest.
        nb = len(x.builds)
        base_depth = d - 1 + nb
        if x.kind == 'R':
            s = 'R(%s,%s)' % (render(x.parts[0], refs, base_depth + 1),
                              render(x.parts[1], refs, base_depth + 1))
        else:
            c, a, kw = x.parts
            s = 'N(%s,%s,%s)' % (render(c, refs, base_depth + 1),
                                 render(a, refs, base_depth + 1),
                                 '-' if kw is None else render(kw, refs, base_depth + 1))
        if base_depth > MAX_DEPTH:
            raise TooDeep()
        for i in range(nb - 1, -1, -1):
            s = 'B(%s,%s)' % (s, render(x.builds[nb - 1 - i], refs, depth + i + 1))
        return s
    raise TypeError('cannot render %r' % (x,))


def mirror_load(f):
    return Mirror(f).load()


def expect(data, refs=None):
    try:
        return render(mirror_load(io.BytesIO(data)), refs)
    except (TooDeep, RecursionError):
        return 'ERR'


# ---- the plain corpus ----

class Plain:
    def __init__(self):
        self.a = 1
        self.b = [u'x', b'y']

    def __eq__(self, o):
        return type(o) is type(self) and o.__dict__ == self.__dict__


class Slots:
    __slots__ = ('p', 'q')

    def __init__(self):
        self.p, self.q = 1, (2, 3)


class NewArgs:
    def __new__(cls, *args):
        return object.__new__(cls)

    def __init__(self, n):
        self.n = n

    def __getnewargs__(self):
        return (self.n, 'z')


class NewArgsEx:
    def __new__(cls, *args, **kw):
        return object.__new__(cls)

    def __getnewargs_ex__(self):
        return ((1,), {'k': 2})


class WithReduce:
    def __reduce__(self):
        return (os.path.join, ('a', 'b'))


class WithReduceState:
    def __reduce__(self):
        return (Plain, (), {'s': 1})


class PRef:
    """Pickled as a persistent id."""

    def __init__(self, pid):
        self.pid = pid


class PidPickler(pickle.Pickler):
    def persistent_id(self, obj):
        if isinstance(obj, PRef):
            return obj.pid
        return None


def corpus():
    c = {}
    for i, v in enumerate([0, 1, -1, 127, 128, 255, 256, 65535, 65536, -65536,
                           2**31 - 1, -2**31, 2**31, -2**31 - 1, 2**32,
                           2**63 - 1, -2**63, 2**63, -2**63 - 1, 2**64 - 1,
                           2**64, -2**64, 10**30, -10**30, 2**1000,
                           -(2**1000) + 1, -(2**2040), 3**5000]):
        c['int%d' % i] = v
    for i, v in enumerate([0.0, -0.0, 1.5, -2.25, 1e300, -1e-300, 5e-324,
                           1.7976931348623157e308, float('inf'), float('-inf'),
                           float('nan'), 0.1]):
        c['float%d' % i] = v
    for n in (0, 1, 255, 256, 70000):
        c['bytes%d' % n] = bytes((i * 7 + 3) % 256 for i in range(n))
    c['bytes_all'] = bytes(range(256))
    for i, s in enumerate(['', 'a', 'héllo', '日本語', '😀 and \U0010ffff',
                           'with\nnewline and \\ backslash \\u0041',
                           'x' * 300, '\x00\x1a\r\t', '\\', '\\\\u']):
        c['str%d' % i] = s
    c['none'] = None
    c['true'] = True
    c['false'] = False
    c['bools'] = [True, False, (True,)]
    c['empty'] = ((), [], {}, set(), frozenset(), '', b'')
    c['nested'] = (1, (2, (3, [4, {5: 6, 'k': [7, (8,)]}])))
    c['dict'] = {'a': [1, 2], 'b': (None, True), 3: 'c', (1, 2): b'x', 2.5: {}}
    shared = [1, 2]
    c['shared_list'] = (shared, shared, [shared])
    d = {}
    c['shared_dict'] = [d, d, d]
    a = []
    b = [a, a]
    a.extend([1, b'q'])
    c['self_filled'] = (a, b)
    t = ('s', 'h')
    c['shared_tuple'] = [t, t, {'t': t}]
    s = 'memoized string'
    c['shared_str'] = [s, s, s, {s: s}]
    bb = b'memoized bytes'
    c['shared_bytes'] = [bb, bb]
    c['list1000'] = list(range(1500))
    c['dict2000'] = {i: str(i) for i in range(2500)}
    c['set'] = {1, 2, 3, 'x'}
    c['frozenset'] = frozenset({'a', 'b', (1, 2)})
    c['set_of_frozen'] = {frozenset({1}), frozenset()}
    c['sets_shared'] = [frozenset({1}), {2}]
    c['cls'] = Plain
    c['func'] = os.path.join
    c['plain'] = Plain()
    c['plain_shared'] = (lambda p: [p, p])(Plain())
    c['slots'] = Slots()
    c['newargs'] = NewArgs(5)
    c['newargs_ex'] = NewArgsEx()
    c['reduce'] = WithReduce()
    c['reduce_state'] = WithReduceState()
    c['bytearray'] = bytearray(b'abc\xff')
    c['pid_bytes'] = PRef(b'\x00' * 7 + b'\x05')
    c['pid_tuple'] = [PRef((b'\x00' * 7 + b'\x06', Plain)), 1]
    c['pid_list'] = {'w': PRef(['w', (b'\x00' * 7 + b'\x07',)])}
    c['pid_str'] = PRef('some text id')
    deep = 'leaf'
    for _ in range(200):
        deep = [deep]
    c['deep200'] = deep
    deep = 'leaf'
    for _ in range(300):
        deep = [deep]
    c['deep300'] = deep
    cyc = []
    cyc.append(cyc)
    c['cycle'] = cyc
    cd = {}
    cd['self'] = cd
    c['cycle_dict'] = cd
    return c


def main_corpus():
    out = sys.stdout
    for name, v in corpus().items():
        for proto in range(0, 6):
            f = io.BytesIO()
            try:
                PidPickler(f, protocol=proto).dump(v)
            except TypeError:
                continue  # e.g. __slots__ without __getstate__ below protocol 2
            data = f.getvalue()
            out.write('case\t%s\t%d\t%s\t%s\n' % (name, proto, data.hex(), expect(data)))
        # The pure-Python pickler memoizes and frames slightly differently.
        f = io.BytesIO()
        pickle._Pickler(f, protocol=4).dump(v) if not _has_pref(v) else None
        if f.getvalue():
            data = f.getvalue()
            out.write('case\t%s-pypickler\t4\t%s\t%s\n' % (name, data.hex(), expect(data)))


def _has_pref(v):
    return isinstance(v, PRef) or (isinstance(v, (list, dict)) and any(
        isinstance(x, PRef) for x in (v.values() if isinstance(v, dict) else v)))


# ---- ZODB records ----

def interpret_ref(pid):
    """(oid hex, class, database, weak) as ZODB's ObjectReader reads pid."""
    def oid(o):
        if isinstance(o, str):
            o = o.encode('ascii')
        assert isinstance(o, bytes) and len(o) == 8, o
        return o.hex()

    def klass(k):
        if isinstance(k, G):
            return '%s.%s' % (k.m, k.n)
        if isinstance(k, tuple):
            m, n = (x.decode() if isinstance(x, bytes) else x for x in k)
            return '%s.%s' % (m, n)
        return '-'

    def s(x):
        return x.decode() if isinstance(x, bytes) else x
    if isinstance(pid, tuple):
        o, k = pid
        return '%s/%s/-/0' % (oid(o), klass(k))
    if isinstance(pid, (bytes, str)):
        return '%s/-/-/0' % oid(pid)
    if len(pid) == 1:
        return '%s/-/-/1' % oid(pid[0])
    kind, args = pid
    kind = s(kind)
    if kind == 'w':
        return '%s/-/%s/1' % (oid(args[0]), s(args[1]) if len(args) > 1 else '-')
    if kind == 'n':
        return '%s/-/%s/0' % (oid(args[1]), s(args[0]))
    if kind == 'm':
        return '%s/%s/%s/0' % (oid(args[1]), klass(args[2]), s(args[0]))
    raise ValueError(pid)


def record_line(name, data):
    from ZODB.utils import get_pickle_metadata
    f = io.BytesIO(data)
    mod, cls = get_pickle_metadata(data)
    # One unpickler for both pickles, as ZODB: they share the memo.
    u = Mirror(f)
    u.load()
    refs = []
    state = render(u.load(), refs)
    assert f.read() == b''
    return 'record\t%s\t%s\t%s.%s\t%s\t%s\n' % (
        name, data.hex(), mod, cls, state, ' '.join(refs) or '-')


def main_zodb():
    import persistent
    import transaction
    from BTrees.IOBTree import IOBTree
    from BTrees.LOBTree import LOBTree
    from persistent.mapping import PersistentMapping
    from persistent.wref import WeakRef
    from ZODB import DB
    from ZODB.FileStorage import FileStorage

    global Thing, ThingNewArgs

    class Thing(persistent.Persistent):
        pass

    class ThingNewArgs(persistent.Persistent):
        def __getnewargs__(self):
            return ()

    Thing.__module__ = ThingNewArgs.__module__ = 'pickle_oracle_gen'
    sys.modules['pickle_oracle_gen'] = sys.modules[__name__]

    out = sys.stdout
    with tempfile.TemporaryDirectory() as tmp:
        dbs = {}
        db1 = DB(FileStorage(os.path.join(tmp, '1.fs')), databases=dbs, database_name='one')
        db2 = DB(FileStorage(os.path.join(tmp, '2.fs')), databases=dbs, database_name='two')
        conn1 = db1.open()
        conn2 = conn1.get_connection('two')
        root1, root2 = conn1.root(), conn2.root()
        other = Thing()
        other_na = ThingNewArgs()
        root2['other'] = other
        root2['other_na'] = other_na
        transaction.commit()

        t = Thing()
        t.bytes = b'\x00\x01' * 1000
        t.text = 'héllo'
        t.num = 2**70
        t.child = Thing()
        t.child_na = ThingNewArgs()
        t.weak = WeakRef(t.child)
        t.weak_other = WeakRef(other)
        t.xref = other
        t.xref_na = other_na
        t.shared = [1, 2]
        t.shared2 = t.shared
        root1['t'] = t
        m = PersistentMapping({'a': t.child, 'b': [t.child, 1]})
        root1['m'] = m
        lo = LOBTree()
        for i in range(200):
            lo[i * 1000] = Thing()
        root1['lo'] = lo
        io_ = IOBTree()
        for i in range(5):
            io_[i * 10] = b'chunk%d' % i
        root1['io'] = io_
        transaction.commit()
        t.num = -5
        lo[5] = t
        transaction.commit()
        db1.close()
        db2.close()
        for fname in ('1.fs', '2.fs'):
            fs = FileStorage(os.path.join(tmp, fname), read_only=True)
            for txn in fs.iterator():
                for rec in txn:
                    if rec.data:
                        out.write(record_line('%s-%s-%s' % (fname, txn.tid.hex(), rec.oid.hex()),
                                              rec.data))
            fs.close()

    # Crafted class-description forms and reference forms, written by the
    # pickler with the given protocol exactly as ZODB's ObjectWriter would.
    oid = b'\x00' * 7 + b'\x2a'
    refs = {
        'ref_oid': oid,
        'ref_tuple_global': (oid, Thing),
        'ref_tuple_names': (oid, ('mod.sub', 'Cls')),
        'ref_w': ['w', (oid,)],
        'ref_w_db': ['w', (oid, 'dbname')],
        'ref_n': ['n', ('dbname', oid)],
        'ref_m': ['m', ('dbname', oid, Thing)],
        'ref_m_names': ['m', ('dbname', oid, ('mod', 'Cls'))],
        'ref_legacy_weak': [oid],
    }
    metas = {
        'cls1': Thing,
        'cls2': (Thing, (1, 'x')),
        'cls5': (Thing, None),
        'cls3': (('mod.sub', 'Cls'), None),
        'cls7': (('mod.sub', 'Cls'), ()),
        'cls4': (('mod.sub', 'Cls'), (1, 2)),
    }
    for proto in (1, 2, 3):
        for mname, meta in metas.items():
            for rname, pid in refs.items():
                f = io.BytesIO()
                p = PidPickler(f, protocol=proto)
                p.dump(meta)  # no clear_memo(): ZODB shares the memo
                p.dump({'r': PRef(pid), 'n': 1})
                out.write(record_line('%s-%s-p%d' % (mname, rname, proto), f.getvalue()))


if __name__ == '__main__':
    {'corpus': main_corpus, 'zodb': main_zodb}[sys.argv[1]]()

"""Records written byte by byte, in forms the Python 3 ZODB no longer writes.

Python 3's ZODB always pickles records with protocol 3 and `bytes` as
BINBYTES. Databases written by Python 2 hold protocol 1 (ZODB 3/4) or 2
pickles with byte strings pickled as `str` (SHORT_BINSTRING, BINSTRING,
and STRING in protocol 0), and class descriptions and references in several
historical forms. To get such records into a test database we pickle them
ourselves and store them through the storage's low-level two-phase commit
API, bypassing ZODB's serializer.

Everything written here must still load in Python's ZODB: gen.py checks it,
and oracle.py depends on it.

A record, as ZODB writes it, is two pickles produced by one pickler whose
memo is shared between them (the state pickle may refer back to memo entries
of the class pickle, e.g. a BTree node naming its own class in a child
reference). `record()` keeps that property.
"""

import io
import pickle
import struct

from ZODB.Connection import TransactionMetaData
from ZODB.utils import z64


class Ref:
    """A persistent reference to store in a state.

    form: 'tuple' → (oid, class) — what ZODB writes for most objects;
          'oid'   → the bare oid (ZODB writes it for classes with
                    __getnewargs__, and readers must take it anywhere).
    """

    def __init__(self, oid, cls, form='tuple'):
        self.oid = oid
        self.cls = cls
        self.form = form


class RecordPickler(pickle._Pickler):
    """The pure-Python pickler, taught two things of Python 2's ZODB:

    - persistent references for `Ref` values;
    - `bytes` written as Python 2 `str` when py2str is set.
    """

    dispatch = dict(pickle._Pickler.dispatch)

    def __init__(self, f, protocol, py2str):
        super().__init__(f, protocol)
        self.py2str = py2str

    def persistent_id(self, obj):
        if isinstance(obj, Ref):
            if obj.form == 'oid':
                return obj.oid
            return (obj.oid, obj.cls)
        return None

    def save_py2str(self, obj):
        if not self.py2str:
            return pickle._Pickler.save_bytes(self, obj)
        n = len(obj)
        if self.bin:
            if n < 256:
                self.write(pickle.SHORT_BINSTRING + bytes([n]) + obj)
            else:
                self.write(pickle.BINSTRING + struct.pack('<i', n) + obj)
        else:
            self.write(pickle.STRING + py2_repr(obj) + b'\n')
        self.memoize(obj)

    dispatch[bytes] = save_py2str


def py2_repr(b):
    """repr() of a Python 2 str, as protocol 0 STRING carries it."""
    out = [b"'"]
    for c in b:
        ch = bytes([c])
        if ch in (b"'", b'\\'):
            out.append(b'\\' + ch)
        elif ch == b'\n':
            out.append(b'\\n')
        elif ch == b'\r':
            out.append(b'\\r')
        elif ch == b'\t':
            out.append(b'\\t')
        elif 32 <= c < 127:
            out.append(ch)
        else:
            out.append(b'\\x%02x' % c)
    out.append(b"'")
    return b''.join(out)


def classmeta(cls, form):
    """The class description in one of the forms ZODB reads.

    'class'        type(obj)                        (ZODB ≥ 3.? default)
    'class_none'   (type(obj), None)
    'name_none'    ((module, name), None)
    """
    if form == 'class':
        return cls
    if form == 'class_none':
        return (cls, None)
    if form == 'name_none':
        return ((cls.__module__, cls.__name__), None)
    raise ValueError(form)


def record(cls, state, protocol=3, py2str=False, classform='class'):
    f = io.BytesIO()
    p = RecordPickler(f, protocol, py2str)
    p.dump(classmeta(cls, classform))
    p.dump(state)
    return f.getvalue()


class LowLevelWriter:
    """Stores crafted records into an open storage, one transaction at a time."""

    def __init__(self, storage):
        self.storage = storage
        self.serials = {}

    def new_oid(self):
        return self.storage.new_oid()

    def commit(self, records, note=''):
        """records: {oid: data}. Returns the new tid."""
        st = self.storage
        t = TransactionMetaData(description=note)
        st.tpc_begin(t)
        for oid, data in records.items():
            st.store(oid, self.serials.get(oid, z64), data, '', t)
        st.tpc_vote(t)
        tid = st.tpc_finish(t)
        for oid in records:
            self.serials[oid] = tid
        return tid

"""Writers and the oracle for the NEO driver's tests (zodb/tests/neo_oracle.rs).

Runs in the NEO venv (neoppod + ZODB), against the cluster named by
$NEO_MASTERS (comma-separated) and $NEO_NAME.

  neooracle.py write SEED NTXN     commit NTXN transactions through the
                                   low-level storage API: new objects,
                                   new revisions, big zlib-compressible and
                                   incompressible records, deletions, undos
                                   (each writer touches only its own oids,
                                   so writers run concurrently without
                                   conflicts); prints "ready" first, then
                                   waits for a line on stdin to start
  neooracle.py pack TID           pack the cluster at TID (16 hex digits;
                                   NEO packs without garbage collection:
                                   the revisions superseded at TID go) and
                                   wait until every storage node is done;
                                   prints the pack transaction's tid
  neooracle.py dump OUT            what neo.client.Storage answers: every
                                   transaction with its oids, and
                                   loadBefore(oid, tid+1) of every oid at
                                   every tid
"""
import hashlib, os, random, sys
import transaction
from ZODB.POSException import POSKeyError
from ZODB.utils import p64, u64
from neo.client.Storage import Storage


def open_storage():
    # TLS when $NEO_CA, $NEO_CERT and $NEO_KEY are set.
    tls = {k: os.environ['NEO_' + k.upper()] for k in ('ca', 'cert', 'key')
           if os.environ.get('NEO_' + k.upper())}
    return Storage(master_nodes=os.environ['NEO_MASTERS'].replace(',', ' '),
                   name=os.environ['NEO_NAME'], **tls)


def commit(st, stores, deletes=(), note=''):
    txn = transaction.Transaction()
    txn.note(note)
    st.tpc_begin(txn)
    for oid, serial, data in stores:
        st.store(oid, serial, data, '', txn)
    for oid, serial in deletes:
        st.deleteObject(oid, serial, txn)
    st.tpc_vote(txn)
    tid = st.tpc_finish(txn)
    return tid


def undo(st, tid):
    txn = transaction.Transaction()
    st.tpc_begin(txn)
    st.undo(tid, txn)
    st.tpc_vote(txn)
    return st.tpc_finish(txn)


def write(seed, ntxn):
    rng = random.Random(seed)
    st = open_storage()
    print('ready', flush=True)
    sys.stdin.readline()
    serials = {}  # our live oids -> last serial
    last = None   # our last transaction (tid, oids), which we may undo
    nundo = ndel = 0
    for i in range(ntxn):
        # Every run makes at least one undo (the last transaction) and one
        # deletion (in the last two), whatever the seed: the tests want
        # both. The forcing draws no extra random numbers, so a seed makes
        # the same choices as before up to there.
        force_undo = nundo == 0 and i == ntxn - 1
        force_del = ndel == 0 and i >= ntxn - 2
        if last is not None and (rng.random() < 0.15 or force_undo):
            # Undo our last transaction: nobody touched its objects since.
            # NEO writes undo records that name the data's transaction.
            undo(st, last[0])
            nundo += 1
            for oid in last[1]:
                try:
                    serials[oid] = st.load(oid)[1]
                except POSKeyError:
                    serials.pop(oid, None)
            last = None
            continue
        stores, deletes = [], []
        for _ in range(rng.randint(1, 4)):
            if serials and rng.random() < 0.6:
                oid = rng.choice(sorted(serials))
                serial = serials[oid]
            else:
                oid, serial = st.new_oid(), None
            if any(o == oid for o, _, _ in stores):
                continue
            r = rng.random()
            if r < 0.05:
                data = os.urandom(rng.randint(1, 3 << 20))
            elif r < 0.12:
                data = bytes(rng.randint(1, 3 << 20))  # zeros: zlib
            else:
                data = os.urandom(rng.randint(1, 300)) * rng.randint(1, 20)
            stores.append((oid, serial, data))
        if serials and (rng.random() < 0.1 or force_del):
            oid = rng.choice(sorted(serials))
            if force_del and any(o == oid for o, _, _ in stores):
                free = [o for o in sorted(serials) if all(o != s for s, _, _ in stores)]
                oid = free[0] if free else oid
            if all(o != oid for o, _, _ in stores):
                deletes.append((oid, serials[oid]))
        tid = commit(st, stores, deletes, 'w%d-%d' % (seed, i))
        for oid, _, _ in stores:
            serials[oid] = tid
        for oid, _ in deletes:
            del serials[oid]
        ndel += len(deletes)
        last = (tid, [o for o, _, _ in stores] + [o for o, _ in deletes])
    print('done undos=%d deletes=%d' % (nundo, ndel), flush=True)
    st.close()


def pack(tid):
    st = open_storage()
    st.app.wait_for_pack = True   # returns once the pack is done
    st.app.pack(p64(int(tid, 16)))
    print(st.lastTransaction().hex(), flush=True)
    st.close()


def dump(out):
    st = open_storage()
    st.sync()
    txns = []
    oids = set()
    for t in st.iterator():
        tid = t.tid
        toids = list(t.oid_list)
        txns.append((tid, toids))
        oids.update(toids)
    with open(out, 'w') as f:
        f.write('last %s\n' % st.lastTransaction().hex())
        for tid, toids in txns:
            f.write('txn %s %s\n' % (tid.hex(), ','.join(o.hex() for o in toids) or '-'))
        for oid in sorted(oids):
            for tid, _ in txns:
                try:
                    r = st.loadBefore(oid, p64(u64(tid) + 1))
                except POSKeyError:
                    f.write('load %s %s nokey\n' % (oid.hex(), tid.hex()))
                    continue
                except Exception as e:
                    f.write('load %s %s %s\n' % (oid.hex(), tid.hex(), type(e).__name__))
                    continue
                if r is None:
                    f.write('load %s %s none\n' % (oid.hex(), tid.hex()))
                else:
                    data, serial, _ = r
                    f.write('load %s %s %s %d %s\n' % (oid.hex(), tid.hex(), serial.hex(),
                            len(data), hashlib.sha1(data).hexdigest()))
    st.close()


if __name__ == '__main__':
    cmd = sys.argv[1]
    if cmd == 'write':
        write(int(sys.argv[2]), int(sys.argv[3]))
    elif cmd == 'pack':
        pack(sys.argv[2])
    elif cmd == 'dump':
        dump(sys.argv[2])
    else:
        sys.exit('usage: neooracle.py write SEED NTXN | pack TID | dump OUT')

"""RelStorage (PostgreSQL, history-preserving) opened from a zurl, for the
tests and benchmarks of wcfs's PostgreSQL storage.

A zurl is a libpq URI (``postgresql://user@host:port/db``). RelStorage
appends its own ``application_name=...`` to the DSN it is given, which
only works with a ``key=value`` DSN: the URI is converted with psycopg2's
own parser first.
"""


def is_pg(where):
    return where.startswith(('postgresql://', 'postgres://'))


def dsn_of(zurl):
    from psycopg2.extensions import make_dsn, parse_dsn
    return make_dsn(**parse_dsn(zurl))


def open_relstorage(zurl, read_only=False, keep_history=True, **options):
    """A RelStorage on the database ``zurl`` names; creates RelStorage's
    schema there on first use (as RelStorage always does)."""
    from relstorage.adapters.postgresql import PostgreSQLAdapter
    from relstorage.options import Options
    from relstorage.storage import RelStorage
    opts = Options(keep_history=keep_history, read_only=read_only, **options)
    return RelStorage(PostgreSQLAdapter(dsn=dsn_of(zurl), options=opts), options=opts)


def committed_tid(conn, changed=None):
    """The tid of the last transaction committed through ZODB Connection
    ``conn``, or the serial of ``changed`` (an object that transaction
    changed). RelStorage's ``lastTransaction()`` is the newest of the last
    commit of ours and the last *polled* one — another writer's, when
    several commit at once."""
    if changed is not None:
        return changed._p_serial
    return conn._storage._last_tid_i_committed_bytes

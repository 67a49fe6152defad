"""Test data for WCFS, written and read back by the real Python ZODB stack.

- ``wendelin/bigfile/file_zodb.py``: our own minimal ZBigFile/ZBlk0/ZBlk/ZBlk1/
  ZData with the same pickled state as wendelin.core (module path matters: the
  pickles name ``wendelin.bigfile.file_zodb``).
- ``gen.py``: writes the test databases (deterministic from a seed).
- ``oracle.py``: reads them back with Python's ZODB and prints what every
  block of every ZBigFile looks like at every revision.
- ``benchgen.py``: writes the large database the Rust benchmark reads.

The scripts put this directory on ``sys.path`` themselves, so the
``wendelin`` package here is what ZODB imports when it unpickles.
"""

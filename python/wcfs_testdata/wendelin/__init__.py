# Stand-in for the `wendelin` namespace of wendelin.core: only what the test
# data needs (see wendelin/bigfile/file_zodb.py).

# See file_zodb.py.

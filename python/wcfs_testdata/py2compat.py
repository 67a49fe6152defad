"""Let Python 3's ZODB read Python 2 byte strings as bytes.

Python 2 pickled byte strings as `str` (STRING/BINSTRING/SHORT_BINSTRING).
ZODB on Python 3 unpickles those with encoding='ASCII', errors='strict':
ASCII-only ones become `str`, anything else fails to load. Databases written
by Python 2 wendelin.core hold binary block data that way, and WCFS reads it
as bytes. The oracle must read the same records, so it decodes them the way
Python 3's pickle does with encoding='bytes' — which is what this patch does
to ZODB's unpickler. (Class and module names are unaffected: GLOBAL carries
text in every protocol.)
"""

import zodbpickle.pickle
import ZODB._compat

_Unpickler = ZODB._compat.Unpickler


class BytesUnpickler(_Unpickler):
    def __init__(self, f):
        zodbpickle.pickle.Unpickler.__init__(self, f, encoding='bytes')


def install():
    ZODB._compat.Unpickler = BytesUnpickler

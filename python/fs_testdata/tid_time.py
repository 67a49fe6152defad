#!/usr/bin/env python
"""Print the time of a tid as ZODB/py's TimeStamp prints it, in integer
microseconds since the Unix epoch (the oracle of durations between tids).

usage: tid_time.py TID     (16 hex digits)
"""
import calendar
import sys
from datetime import datetime

from persistent.TimeStamp import TimeStamp
from ZODB.utils import p64

ts = TimeStamp(p64(int(sys.argv[1], 16)))
dt = datetime.strptime(str(ts), "%Y-%m-%d %H:%M:%S.%f")
print(calendar.timegm(dt.timetuple()) * 1000000 + dt.microsecond)

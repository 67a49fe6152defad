# On the PYTHONPATH of the NEO nodes that testkit::neo starts (and of the
# neo-cluster script's helpers): only the nodes are changed.
#
# A NEO node keeps its debug log in memory (the last 16 MiB of records, as
# it counts them) and writes it all to its SQLite log file at the first
# WARNING or ERROR. A packet's record holds the packet's arguments; the
# node counts a record as its size plus the length of those arguments,
# which for an object's answer is the 7 of a tuple, not the size of the
# data in it. So a storage node serving 2 MiB blocks holds on to every
# block it sent, up to some 7000 of them (GiBs: 3 GiB per node by the
# driver part of the neo_read bench), and any warning — a connection that
# leaves before identifying, for one — makes its single thread write them
# all to disk: for tens of seconds it answers no load and no new
# connection gets a handshake (what hung that bench). Packets larger than
# a few KiB are therefore logged without their arguments, as NEO's own
# test runner does for its nodes (there with a larger limit), with the
# fix below for what NEO then does when its backlog is full.
import os
import sys

if os.path.basename(sys.argv[0] if sys.argv else "") in (
    "neomaster",
    "neostorage",
    "neoadmin",
):
    from neo.lib import logger as _logger
    from neo.lib import logging

    # This NEO logs such a packet with no message (None), but when its
    # backlog is full it drops the oldest records by taking len() of their
    # message: the first packet logged without arguments to be dropped
    # raises TypeError in the node's only thread, and the node dies. An
    # empty message instead of None keeps the record and its accounting the
    # same (None was counted as 0 when queued) and the node alive.
    class _PacketRecord(_logger.PacketRecord):
        def __init__(self, **fields):
            if fields.get("msg") is None:
                fields["msg"] = b""
            self.__dict__.update(fields)

    # The logger tells packet records by their exact type, through this
    # module global: both where it makes them and where it writes them out.
    _logger.PacketRecord = _PacketRecord

    logging.backlog(max_packet=4096)

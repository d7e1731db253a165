"""When to acknowledge which LSN to PostgreSQL: the end of a transaction once Kafka has all
of its events; on an idle stream the server's WAL end, so the slot never holds WAL back."""

from __future__ import annotations

import time

from producers.crash_hook import crash_point
from producers.event_writer import EventWriter
from producers.postgres.pgoutput import Commit, Keepalive, PgOutputMessage
from producers.postgres.replication import ReplicationStream


class AckTracker:
    """Tracks commits and keepalives; `maybe_ack` flushes Kafka, then reports the LSN."""

    def __init__(self, stream: ReplicationStream, writer: EventWriter, interval: float) -> None:
        self.stream = stream
        self.writer = writer
        self.interval = interval
        self.acked = 0
        self.committed = 0  # end LSN of the last transaction whose events were all produced
        self.server_end = 0
        self.in_tx = False
        self.reply_due = False
        self._last = time.monotonic()
        self._flushed_count = writer.produced  # the full load before this was flushed

    def on_message(self, msg: PgOutputMessage, in_tx: bool) -> None:
        self.in_tx = in_tx
        if isinstance(msg, Commit):
            self.committed = max(self.committed, msg.end_lsn)

    def on_row_change(self) -> None:
        """A row change of an open transaction that skipped `on_message` (the native path)."""
        self.in_tx = True

    def on_native(self, committed: int, in_tx: bool, server_end: int, reply: bool) -> None:
        """What a run of the native frame loop handled: its last commit's end LSN and its
        keepalives' highest WAL end (0: none), whether one asked for a reply."""
        self.in_tx = in_tx
        self.committed = max(self.committed, committed)
        self.server_end = max(self.server_end, server_end)
        self.reply_due = self.reply_due or reply

    def on_keepalive(self, frame: Keepalive) -> None:
        self.server_end = max(self.server_end, frame.wal_end)
        self.reply_due = self.reply_due or frame.reply_requested

    def maybe_ack(self, force: bool = False) -> bool:
        """Flush and acknowledge when due; True when the acknowledged LSN moved."""
        if not (force or self.reply_due or time.monotonic() - self._last >= self.interval):
            return False
        self._last = time.monotonic()
        self.reply_due = False
        if self.writer.produced != self._flushed_count:
            self.writer.flush()
            self._flushed_count = self.writer.produced
            crash_point(self.in_tx)
        candidate = self.committed
        if not self.in_tx:
            # Everything decoded before the last keepalive is produced and flushed.
            candidate = max(candidate, self.server_end)
        moved = candidate > self.acked
        self.acked = max(self.acked, candidate)
        # Ask for a keepalive when idle so the next round learns the server's WAL end.
        self.stream.send_status(self.acked, reply_requested=not self.in_tx)
        return moved

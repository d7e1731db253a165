"""The replication connection's I/O: slot commands, START_REPLICATION, reading CopyBoth
frames and sending standby status updates, at the libpq level of psycopg 3 (which has no
high-level replication API). Decoding lives in `pgoutput`; this module only moves bytes."""

from __future__ import annotations

import select
import time
from dataclasses import dataclass
from typing import Any, NoReturn

import psycopg
from psycopg import pq, sql

from producers.errors import SourceError
from producers.postgres.pgoutput import (
    Keepalive,
    XLogData,
    format_lsn,
    parse_copy_frame,
    parse_lsn,
    standby_status,
)


class ReplicationLost(SourceError):
    """The replication connection broke or the server ended the stream: reconnect."""


@dataclass(frozen=True, slots=True)
class CreatedSlot:
    name: str
    consistent_point: int
    snapshot_name: str | None


class ReplicationStream:
    """One replication connection streaming one slot."""

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self.conn = conn
        self.pgconn = conn.pgconn
        self.streaming = False

    def create_slot(self, slot: str, export_snapshot: bool) -> CreatedSlot:
        """CREATE_REPLICATION_SLOT; with `export_snapshot`, the snapshot stays valid until
        this connection runs its next command."""
        mode = "export" if export_snapshot else "nothing"
        query = sql.SQL("CREATE_REPLICATION_SLOT {} LOGICAL pgoutput (SNAPSHOT {})").format(
            sql.Identifier(slot), sql.Literal(mode)
        )
        try:
            row = self.conn.execute(query).fetchone()
        except psycopg.errors.DuplicateObject:
            raise SourceError(f"replication slot {slot} already exists") from None
        except psycopg.Error as exc:
            raise SourceError(f"cannot create replication slot {slot}: {exc}") from None
        assert row is not None
        return CreatedSlot(str(row[0]), parse_lsn(str(row[1])), row[2] and str(row[2]))

    def start(self, slot: str, publication: str, start_lsn: int = 0) -> None:
        """START_REPLICATION from `start_lsn` (0 resumes at the slot's confirmed position)."""
        command = sql.SQL(
            "START_REPLICATION SLOT {} LOGICAL {} "
            "(proto_version '1', publication_names {}, messages 'true')"
        ).format(sql.Identifier(slot), sql.SQL(format_lsn(start_lsn)), sql.Literal(publication))
        self.pgconn.send_query(command.as_bytes(self.conn))
        result = self.pgconn.get_result()
        if result is None or result.status != pq.ExecStatus.COPY_BOTH:
            message = result.error_message.decode(errors="replace") if result else "no result"
            state = result.error_field(pq.DiagnosticField.SQLSTATE) if result else None
            failure = f"START_REPLICATION on slot {slot} failed: {message.strip()}"
            # Retried: the slot still in use by the previous reader (55006), or this
            # connection ended under the command (57: terminated by an administrator or a
            # shutdown; 08: connection failure), as a dropped stream is.
            lost = state == b"55006" or (state or b"")[:2] in (b"57", b"08")
            if lost or self.pgconn.status == pq.ConnStatus.BAD:
                raise ReplicationLost(failure)
            raise SourceError(failure)
        self.streaming = True

    def read(self, timeout: float) -> XLogData | Keepalive | None:
        """The next frame, or None if none arrived within `timeout` seconds."""
        try:
            nbytes, data = self.pgconn.get_copy_data(1)
            if nbytes == 0:
                if not self.wait(timeout):
                    return None
                nbytes, data = self.pgconn.get_copy_data(1)
                if nbytes == 0:
                    return None
        except (psycopg.OperationalError, OSError, ValueError) as exc:
            # ValueError: the socket is gone (fileno -1) once libpq has closed it.
            self.streaming = False
            raise ReplicationLost(f"replication connection lost: {exc}") from None
        if nbytes == -1:
            self.ended()
        if nbytes < 0:
            self.broken()
        return parse_copy_frame(bytes(data))

    def wait(self, timeout: float) -> bool:
        """Wait up to `timeout` seconds for the socket, then take in what arrived; False if
        nothing did."""
        try:
            ready, _, _ = select.select([self.pgconn.socket], [], [], timeout)
            if not ready:
                return False
            self.pgconn.consume_input()
        except (psycopg.OperationalError, OSError, ValueError) as exc:
            self.streaming = False
            raise ReplicationLost(f"replication connection lost: {exc}") from None
        return True

    def ended(self) -> NoReturn:
        """The server ended the copy (PQgetCopyData said -1): say why."""
        self.streaming = False
        result = self.pgconn.get_result()
        reason = result.error_message.decode(errors="replace").strip() if result else ""
        raise ReplicationLost(f"replication stream ended by the server: {reason or 'no reason'}")

    def broken(self) -> NoReturn:
        """Reading failed (PQgetCopyData said -2)."""
        self.streaming = False
        raise ReplicationLost(f"replication stream broken: {self.pgconn.get_error_message()!r}")

    def send_status(self, lsn: int, reply_requested: bool = False) -> None:
        """Report `lsn` as flushed: the server may now recycle WAL before it."""
        try:
            self.pgconn.put_copy_data(standby_status(lsn, reply_requested))
            self.pgconn.flush()
        except psycopg.OperationalError as exc:
            self.streaming = False
            raise ReplicationLost(f"replication connection lost: {exc}") from None

    def stop(self, timeout: float = 10.0) -> None:
        """End the copy cleanly so the slot is released at once."""
        if not self.streaming:
            return
        self.streaming = False
        try:
            self.pgconn.put_copy_end()
            self.pgconn.flush()
            self._drain(time.monotonic() + timeout)
        except psycopg.Error:
            pass

    def _drain(self, deadline: float) -> None:
        # The server may still send CopyData before it honours our CopyDone; read past it
        # until the copy ends, then collect the results of the command.
        while time.monotonic() < deadline:
            nbytes, _ = self.pgconn.get_copy_data(1)
            if nbytes == -1:
                break
            if nbytes == 0:
                select.select([self.pgconn.socket], [], [], 0.2)
                self.pgconn.consume_input()
            elif nbytes < -1:
                return
        while time.monotonic() < deadline and self.pgconn.get_result() is not None:
            pass


def slot_info(conn: psycopg.Connection[Any], slot: str) -> dict[str, Any] | None:
    """The slot's row in pg_replication_slots (with retained WAL bytes), or None."""
    row = conn.execute(
        """SELECT plugin, active, confirmed_flush_lsn::text,
                  pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)::bigint,
                  database
           FROM pg_replication_slots WHERE slot_name = %s""",
        (slot,),
    ).fetchone()
    if row is None:
        return None
    plugin, active, confirmed, retained, database = row
    return {
        "plugin": plugin,
        "active": active,
        "confirmed_flush_lsn": confirmed,
        "retained_wal_bytes": int(retained or 0),
        "database": database,
    }


def drop_slot(conn: psycopg.Connection[Any], slot: str) -> None:
    """Drop the slot, waiting for a previous reader to release it."""
    conn.execute("SELECT pg_drop_replication_slot(%s)", (slot,))

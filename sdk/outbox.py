"""Store-and-forward: what is produced while the broker is away is kept, bounded, and sent after reconnect.

One implementation for the device and the cloud: :class:`Outbox` (a bounded FIFO, optionally spooled
to a file) and :class:`StoreAndForward` (a :class:`~sdk.transport.Transport` that routes the kept
message kinds through it). ``DeviceRunner`` and ``TailWorker`` wrap their transport in it.

**What is kept, per message kind** (:data:`KEPT_KINDS`):

* ``result`` (the cloud's answers and ErrorMessages) and ``report`` (per-frame timings): kept. A result
  arriving after the device answered the frame locally is counted there (``late_answers``), never
  written twice; the reports still feed the estimator and the fleet view.
* ``telemetry``: kept; each snapshot covers its own window, a later one does not replace it.
* ``act`` (activations, raw frames): **not kept**. Publishing one while disconnected still raises
  ``BrokerUnavailableError``, so the device answers the frame locally at once; a frame sent seconds later
  would be answered by nobody.
* ``status``: not kept; it is retained and republished by the device on every connect, and the last
  will covers "offline".

**Order and bound.** Messages leave in the order they were produced: while the outbox holds anything,
a new message goes behind it, even when the broker is back. It is flushed on the transport's reconnect
callback (and before every later publish, should a reconnect race a store). At the bound
(``max_messages``, ``max_bytes``: topic + payload) the **oldest** message is dropped: the newest
telemetry describes the present, and the oldest results are for frames the device answered locally
long ago. Every drop is counted (``dropped``, ``dropped_bytes``), logged (the 1st, 10th, 100th,
1000th, then every 10000th), shown in the device's telemetry (``outbox_dropped``) and in the device's
and the worker's summaries.

**Spool** (``spool_dir``): the queue is also appended to ``<spool_dir>/<name>.outbox`` and fsynced per
message, so it survives a crash or a reboot: a restarted process sends what its predecessor could not. A
record cut short by a crash (a torn tail, a CRC mismatch) is skipped with a counted warning
(``corrupt``) and the file is truncated there; a record whose seq does not grow ends the file too. Once
more than half of it is dead (sent or dropped), it is compacted: the live records written to a new file,
fsynced and renamed over it. ``<name>.outbox.lock`` is held (``flock``) while the process runs: two
processes with the same name and folder are refused with a :class:`~sdk.errors.SpoolError`. The record layout is a contract
(tests/test_outbox.py spells it out byte by byte), little-endian::

    magic   b"SO"   2 bytes
    kind    u8      1 = PUT (a message), 2 = CUT (every PUT with seq <= this one is gone: sent or dropped)
    length  u32     of the body
    crc32   u32     of the body
    body    PUT: seq u64, qos u8, retain u8, topic length u16, topic (UTF-8), payload
            CUT: seq u64

Delivery is exactly once while the process runs. Across a crash in the middle of a flush, the messages
sent since the last CUT record (at most :data:`CUT_EVERY`) are sent again: at least once.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import re
import struct
import threading
import zlib
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from sdk import topics
from sdk.config import OutboxSettings
from sdk.errors import BrokerUnavailableError, SpoolError, TransportError
from sdk.topics import TopicKind
from sdk.transport import ConnectionCallback, Handler, Transport

__all__ = [
    "CUT_EVERY",
    "KEPT_KINDS",
    "Outbox",
    "OutboxSettings",
    "OutboxStats",
    "Stored",
    "StoreAndForward",
    "keeps_topic",
]

log = logging.getLogger(__name__)

#: The message kinds kept while the broker is away (module doc: why act and status are not).
KEPT_KINDS: frozenset[TopicKind] = frozenset({TopicKind.RESULT, TopicKind.REPORT, TopicKind.TELEMETRY})
#: A flush writes a CUT record to the spool after this many messages (and at its end).
CUT_EVERY = 32

_MAGIC = b"SO"
_PUT, _CUT = 1, 2
_HEADER = struct.Struct("<2sBII")  # magic, kind, body length, crc32 of the body
_PUT_HEAD = struct.Struct("<QBBH")  # seq, qos, retain, topic length
_CUT_BODY = struct.Struct("<Q")
_MAX_BODY = 256 * 1024 * 1024  # an MQTT payload is at most 256 MiB
_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}")


def keeps_topic(topic_name: str) -> bool:
    """True for a splitedge topic of a kept kind (:data:`KEPT_KINDS`); False for any other topic."""
    try:
        _, kind = topics.parse(topic_name)
    except ValueError:
        return False
    return kind in KEPT_KINDS


@dataclass(frozen=True, slots=True)
class Stored:
    """One message waiting in the outbox."""

    seq: int
    topic: str
    payload: bytes
    qos: int = 0
    retain: bool = False

    @property
    def size(self) -> int:
        """What it counts against ``max_bytes``: topic + payload."""
        return len(self.topic.encode("utf-8")) + len(self.payload)


@dataclass(frozen=True, slots=True)
class OutboxStats:
    """Counters since the outbox was opened (``queued*`` is the present)."""

    queued: int
    queued_bytes: int
    stored: int  # messages that had to wait (broker away, or behind others)
    forwarded: int  # of those, sent after all
    dropped: int  # dropped at the bound, too large for it, refused by the broker, or unsent at close
    dropped_bytes: int
    corrupt: int  # torn or corrupt spool tails skipped on open
    recovered: int  # messages read back from the spool on open

    def to_dict(self) -> dict[str, int]:
        return asdict(self)


def encode_put(m: Stored) -> bytes:
    """The spool record of one message (module doc)."""
    topic_bytes = m.topic.encode("utf-8")
    body = _PUT_HEAD.pack(m.seq, m.qos, int(m.retain), len(topic_bytes)) + topic_bytes + m.payload
    return _HEADER.pack(_MAGIC, _PUT, len(body), zlib.crc32(body)) + body


def encode_cut(seq: int) -> bytes:
    """The spool record saying every message up to ``seq`` is gone."""
    body = _CUT_BODY.pack(seq)
    return _HEADER.pack(_MAGIC, _CUT, len(body), zlib.crc32(body)) + body


def decode_records(data: bytes) -> tuple[list[Stored], int, int]:
    """Parse a spool: (live messages in order, the last seq seen, the offset where valid records end)."""
    live: deque[Stored] = deque()
    last_seq, offset = 0, 0
    while offset + _HEADER.size <= len(data):
        magic, kind, length, crc = _HEADER.unpack_from(data, offset)
        start = offset + _HEADER.size
        body = data[start : start + length]
        if magic != _MAGIC or kind not in (_PUT, _CUT) or length > _MAX_BODY or len(body) != length:
            break
        if zlib.crc32(body) != crc:
            break
        if kind == _CUT:
            if length != _CUT_BODY.size:
                break
            (cut,) = _CUT_BODY.unpack(body)
            while live and live[0].seq <= cut:
                live.popleft()
            last_seq = max(last_seq, cut)
        else:
            if length < _PUT_HEAD.size:
                break
            seq, qos, retain, tlen = _PUT_HEAD.unpack_from(body)
            if _PUT_HEAD.size + tlen > length or qos > 2:
                break
            try:
                topic = body[_PUT_HEAD.size : _PUT_HEAD.size + tlen].decode("utf-8")
            except UnicodeDecodeError:
                break
            if seq <= last_seq:  # seqs only grow: an older record here is debris, not a message
                break
            live.append(Stored(seq, topic, bytes(body[_PUT_HEAD.size + tlen :]), qos, bool(retain)))
            last_seq = seq
        offset = start + length
    return list(live), last_seq, offset


class _Spool:
    """The append-only file behind an :class:`Outbox` (module doc)."""

    def __init__(self, folder: Path, name: str) -> None:
        if not _NAME.fullmatch(name):
            raise SpoolError(
                f"outbox spool name {name!r} (the device or worker id) cannot be a file name in {folder}; expected "
                "1-128 characters from A-Z a-z 0-9 . _ - not starting with '.': pick another --worker-id"
            )
        self.folder = folder
        self.path = folder / f"{name}.outbox"
        try:  # the lock is a file of its own, so that a compaction can replace the spool atomically
            folder.mkdir(parents=True, exist_ok=True)
            self._lock_fd = os.open(folder / f"{name}.outbox.lock", os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise SpoolError(
                f"outbox spool {self.path}: {exc.strerror}; expected a folder this user can write "
                "([outbox] spool_dir or --outbox-dir): create it, fix its permissions, or pick another"
            ) from exc
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(self._lock_fd)
            raise SpoolError(
                f"outbox spool {self.path} is in use by another process; expected one process per spool file: "
                "stop the other one, or give this one another device/worker id or spool folder"
            ) from None
        try:
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            os.close(self._lock_fd)
            raise SpoolError(f"outbox spool {self.path}: {exc.strerror}; expected a file this user can write") from exc
        self.size = os.fstat(self._fd).st_size
        self.dead = 0  # bytes of records no longer live (compaction)

    def read(self) -> bytes:
        os.lseek(self._fd, 0, os.SEEK_SET)
        chunks = []
        while chunk := os.read(self._fd, 1 << 20):
            chunks.append(chunk)
        return b"".join(chunks)

    def truncate(self, size: int) -> None:
        os.ftruncate(self._fd, size)
        os.fsync(self._fd)
        self.size = size
        if size == 0:
            self.dead = 0

    def append(self, record: bytes) -> None:
        os.lseek(self._fd, 0, os.SEEK_END)
        view = memoryview(record)
        while view:
            view = view[os.write(self._fd, view) :]
        os.fsync(self._fd)
        self.size += len(record)

    def rewrite(self, live: Iterator[Stored]) -> None:
        """Replace the file by one holding the live messages only (after many CUTs): written aside, fsynced,
        renamed over the old one, so a crash leaves either file whole."""
        data = b"".join(encode_put(m) for m in live)
        tmp = self.path.with_name(self.path.name + ".tmp")
        fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        except BaseException:
            os.close(fd)
            raise
        os.replace(tmp, self.path)
        dir_fd = os.open(self.folder, os.O_RDONLY)
        try:
            os.fsync(dir_fd)  # the rename itself survives a power cut
        finally:
            os.close(dir_fd)
        os.close(self._fd)
        self._fd = fd
        self.size, self.dead = len(data), 0

    def close(self) -> None:
        for fd in (self._fd, self._lock_fd):
            with contextlib.suppress(OSError):
                os.close(fd)


class Outbox:
    """A bounded FIFO of messages waiting for the broker; drop-oldest at the bound, every drop counted.

    Thread-safe: one re-entrant lock (:attr:`lock`) guards the queue, the spool and the counters; a
    :class:`StoreAndForward` holds it across "flush, then send or store" so no message overtakes another.
    """

    def __init__(self, settings: OutboxSettings | None = None, *, name: str = "outbox") -> None:
        self.settings = settings or OutboxSettings()
        if self.settings.max_messages < 0 or self.settings.max_bytes < 1:
            raise ValueError(f"max_messages must be >= 0 and max_bytes >= 1, got {self.settings}")
        self.name = name
        self.lock = threading.RLock()
        self._queue: deque[Stored] = deque()
        self._bytes = 0
        self._seq = 0
        self._since_cut = 0
        self.stored = self.forwarded = self.dropped = self.dropped_bytes = self.corrupt = self.recovered = 0
        self._spool: _Spool | None = None
        if self.settings.spool_dir is not None and self.enabled:
            self._spool = _Spool(Path(self.settings.spool_dir), name)
            self._recover()

    @property
    def enabled(self) -> bool:
        """False with ``max_messages = 0``: nothing is kept (a publish while away raises, as without an outbox)."""
        return self.settings.max_messages > 0

    @property
    def spool_path(self) -> Path | None:
        return self._spool.path if self._spool is not None else None

    def __len__(self) -> int:
        return len(self._queue)

    @property
    def nbytes(self) -> int:
        return self._bytes

    def stats(self) -> OutboxStats:
        with self.lock:
            return OutboxStats(len(self._queue), self._bytes, self.stored, self.forwarded, self.dropped,
                               self.dropped_bytes, self.corrupt, self.recovered)  # fmt: skip

    # ------------------------------------------------------------------ spool
    def _recover(self) -> None:
        assert self._spool is not None
        data = self._spool.read()
        live, last_seq, end = decode_records(data)
        if end < len(data):
            self.corrupt += 1
            log.warning("outbox spool %s: %d byte(s) of a torn or corrupt tail at offset %d skipped",
                        self._spool.path, len(data) - end, end)  # fmt: skip
            self._spool.truncate(end)
        self._seq = last_seq
        self._spool.dead = end - sum(len(encode_put(m)) for m in live)
        for m in live:
            self._queue.append(m)
            self._bytes += m.size
        self.recovered = len(live)
        if live:
            log.info("outbox spool %s: %d message(s) from before the restart will be sent first",
                     self._spool.path, len(live))  # fmt: skip
        dropped_before = self.dropped
        self._enforce_bound(0)
        if self.dropped > dropped_before:
            self._write_cut()

    def _write_cut(self) -> None:
        if self._spool is None:
            return
        self._since_cut = 0
        if not self._queue:
            self._spool.truncate(0)
            return
        self._spool.append(encode_cut(self._queue[0].seq - 1))
        self._maybe_compact()

    def _maybe_compact(self, extra: Stored | None = None) -> None:
        """Rewrite the spool with the live messages once more than half of it (and 64 KiB) is dead."""
        assert self._spool is not None
        if self._spool.dead > max(1 << 16, self._spool.size // 2):
            self._spool.rewrite(iter([*self._queue, *([extra] if extra is not None else [])]))

    # ------------------------------------------------------------------ queue
    def put(self, topic: str, payload: bytes, *, qos: int = 0, retain: bool = False) -> bool:
        """Keep a message; drop the oldest ones to make room. False (and counted) if it alone exceeds the bound."""
        with self.lock:
            self._seq += 1
            m = Stored(self._seq, topic, bytes(payload), qos, retain)
            self.stored += 1
            if m.size > self.settings.max_bytes or not self.enabled:
                self._count_drop(m, f"it alone exceeds the outbox's max_bytes ({self.settings.max_bytes})")
                return False
            dropped_before = self.dropped
            self._enforce_bound(m.size)
            if self._spool is not None:  # one append, one fsync: the drop (if any) and the message
                cut = encode_cut(m.seq - 1 if not self._queue else self._queue[0].seq - 1)
                self._spool.append((cut if self.dropped > dropped_before else b"") + encode_put(m))
                self._maybe_compact(extra=m)
            self._queue.append(m)
            self._bytes += m.size
            return True

    def _enforce_bound(self, incoming: int) -> None:
        s = self.settings
        extra = 1 if incoming else 0
        while self._queue and (len(self._queue) + extra > s.max_messages or self._bytes + incoming > s.max_bytes):
            old = self._pop()
            self._count_drop(old, f"the outbox is full ({s.max_messages} messages / {s.max_bytes} bytes)")

    def _pop(self) -> Stored:
        m = self._queue.popleft()
        self._bytes -= m.size
        if self._spool is not None:
            self._spool.dead += len(encode_put(m))
        return m

    def _count_drop(self, m: Stored, why: str) -> None:
        self.dropped += 1
        self.dropped_bytes += m.size
        n = self.dropped
        if n < 10_000 and str(n).rstrip("0") == "1" or n % 10_000 == 0:  # 1, 10, 100, 1000, then every 10000th
            log.warning("outbox %s: dropped a message for %s (%s); %d dropped so far", self.name, m.topic, why,
                        self.dropped)  # fmt: skip

    def forward(self, send: Callable[[Stored], None]) -> int:
        """Send queued messages oldest first with ``send`` until empty or the broker is away; return how many.

        ``BrokerUnavailableError`` stops the flush (the message stays first in line); any other
        ``TransportError`` (e.g. a payload too large for this broker) drops that message, counted.
        """
        sent = 0
        with self.lock:
            try:
                while self._queue:
                    m = self._queue[0]
                    try:
                        send(m)
                    except BrokerUnavailableError:
                        break
                    except TransportError as exc:
                        self._pop()
                        self._count_drop(m, f"the broker refused it: {exc}")
                    else:
                        self._pop()
                        self.forwarded += 1
                        sent += 1
                    self._since_cut += 1
                    if self._since_cut >= CUT_EVERY:
                        self._write_cut()
            finally:
                if self._since_cut:
                    self._write_cut()
        if sent:
            log.info("outbox %s: %d stored message(s) sent after reconnect", self.name, sent)
        return sent

    def close(self) -> None:
        """Release the spool (what is queued stays in it); without a spool, what is queued is lost: counted."""
        with self.lock:
            if self._spool is None:
                if self._queue:
                    lost = list(self._queue)
                    log.warning("outbox %s: %d message(s) never reached the broker and are lost at close "
                                "(set [outbox] spool_dir to keep them across a restart)", self.name, len(lost))
                    for m in lost:
                        self._pop()
                        self.dropped += 1
                        self.dropped_bytes += m.size
                return
            if self._queue:
                log.warning("outbox %s: %d message(s) kept in %s for the next start", self.name, len(self._queue),
                            self._spool.path)  # fmt: skip
            self._spool.close()
            self._spool = None


class StoreAndForward:
    """A :class:`~sdk.transport.Transport` that keeps the :data:`KEPT_KINDS` in an :class:`Outbox` while
    the broker is away and sends them, in order, once it is back. Everything else passes straight through."""

    def __init__(self, inner: Transport, outbox: Outbox | None = None,
                 *, keep: Callable[[str], bool] = keeps_topic) -> None:  # fmt: skip
        self.inner = inner
        self.outbox = outbox if outbox is not None else Outbox()
        self._keep = keep
        self.sent_direct = 0  # kept-kind messages published at once (the broker was there and nothing waited)
        inner.on_connection_change(self._on_connection)
        if inner.connected and len(self.outbox):  # read back from the spool: it goes first
            self.flush()

    @property
    def connected(self) -> bool:
        return self.inner.connected

    def publish(self, topic: str, payload: bytes, *, qos: int = 0, retain: bool = False) -> None:
        if not self.outbox.enabled or not self._keep(topic):
            self.inner.publish(topic, payload, qos=qos, retain=retain)
            return
        with self.outbox.lock:
            if len(self.outbox) and self.inner.connected:
                self.flush()
            if not len(self.outbox) and self.inner.connected:
                try:
                    self.inner.publish(topic, payload, qos=qos, retain=retain)
                except BrokerUnavailableError:
                    pass  # lost it just now: keep the message
                else:
                    self.sent_direct += 1
                    return
            self.outbox.put(topic, payload, qos=qos, retain=retain)

    def flush(self) -> int:
        """Send what waits (oldest first) while the broker is there; return how many went out."""
        return self.outbox.forward(lambda m: self.inner.publish(m.topic, m.payload, qos=m.qos, retain=m.retain))

    def _on_connection(self, up: bool) -> None:
        if up and len(self.outbox):
            self.flush()

    def subscribe(self, topic_filter: str, handler: Handler, *, qos: int = 0) -> None:
        self.inner.subscribe(topic_filter, handler, qos=qos)

    def unsubscribe(self, topic_filter: str) -> None:
        self.inner.unsubscribe(topic_filter)

    def on_connection_change(self, callback: ConnectionCallback) -> None:
        self.inner.on_connection_change(callback)

    def close(self) -> None:
        """Flush what can go, close the inner transport, then the outbox (see :meth:`Outbox.close`)."""
        if self.inner.connected and len(self.outbox):
            self.flush()
        try:
            self.inner.close()
        finally:
            self.outbox.close()

    def kill(self) -> None:
        """Vanish like a crash (the inner transport's ``kill``); a spool keeps what is queued."""
        kill = getattr(self.inner, "kill", None)
        (kill or self.inner.close)()
        self.outbox.close()

    def __enter__(self) -> StoreAndForward:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

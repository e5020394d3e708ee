"""Over-the-air bundle updates: receive, reassemble, verify, load, hand over (docs/DEVICE.md).

Both sides use it: a device (``splitedge device --rollout-group``, whose ``prepare`` loads LiteRT heads:
:func:`device_runner.update.litert_prepare`) and a cloud tail worker following a group
(:func:`cloud_tail.rollout.follow_rollouts`, whose ``prepare`` loads tails). It needs only numpy and sdk.

:class:`BundleUpdater` follows one device group (``splitedge device --rollout-group G``). On the group's
retained :class:`~sdk.messages.AnnounceMessage` (``splitedge rollout``, cloud_tail/rollout.py) of a
bundle other than the one running, it fetches that bundle's retained chunks and writes each into
``UPDATE_DIR/<bundle>.part/`` at its offset (any order, duplicates harmless): ``manifest.json`` first,
then only the files this side runs (``needs``: a device's heads and exits; a rollout ``--files all``
also carries the tails, which a device leaves on the broker).

**Pulled, a window at a time.** The chunks come down the connection that carries the cloud's answers,
so the updater subscribes to ``window`` chunk topics at a time (one per chunk) and asks for the next when
one arrives: an answer waits behind at most ``window`` chunks, not behind the whole bundle. Subscribing
to all chunks at once (a wildcard) had the broker push ~3 MB at each device in one go; on the test host
a few frames per device behind it were answered locally as overdue, and on a 10 Mbit/s downlink 3 MB
is 2.4 s of answers stuck behind it. Once every chunk is there,
a thread of its own:

1. checks each file's sha256 against the announce and ``manifest.json``'s against ``manifest_sha256``;
2. writes the announce's signature as ``manifest.sig`` and loads the manifest with the device's
   ``--trust`` key (:func:`sdk.manifest.load_manifest`: the signature over the exact bytes), then checks
   every file sent against the signed manifest (:func:`sdk.manifest.verify_files`), that the device's
   files (heads, exits) are all there, that the manifest is the bundle announced, and that its input is
   the running bundle's (the camera source was opened for that shape);
3. moves the folder to ``UPDATE_DIR/<bundle>/`` and calls ``prepare`` (the CLI's: load every head and
   exit and run it once on a blank frame, build the policy), then hands the result to the runner
   (:meth:`DeviceRunner.offer_bundle`), which swaps at its next frame boundary.

Any failure - a bad chunk, no new chunk for ``stall_s`` while connected (the broker lost them), a plan that does not add up, a signature, a hash, a head that does not load -
keeps the running bundle and reports ``rolled_back`` with the error's one line (telemetry
``rollout_detail``); that bundle is not tried again until the device restarts. The announce is only a
transfer plan: its paths are checked (relative, no ``..``), its total size is capped (``max_bytes``).
After a swap, ``UPDATE_DIR/active`` names the running bundle's folder and the ``--bundle`` it replaced;
``splitedge device`` starts from it next time while ``--bundle`` is still that one (:func:`active_bundle`):
a bundle installed by hand since then wins.

Threads: transport handlers only write chunks and bookkeeping (under a lock); hashing, loading and
running heads happen on the updater's thread, at the lowest CPU priority (nice 19, Linux): on the shared
test host, three devices preparing at full priority made a few frames around the switch answer overdue;
the swap itself happens on the runner's thread (a frame boundary).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from sdk import topics
from sdk.chunks import MAX_CHUNK_BYTES, decode_chunk
from sdk.errors import BundleError, IntegrityError, ManifestError, SplitEdgeError
from sdk.manifest import MANIFEST_NAME, FileRef, Manifest, load_manifest, verify_files
from sdk.messages import AnnounceMessage, RolloutState
from sdk.signing import SIGNATURE_NAME
from sdk.transport import Message, Transport

__all__ = ["ACTIVE_NAME", "BundleUpdater", "Prepare", "StagedBundle", "active_bundle"]

log = logging.getLogger(__name__)

ACTIVE_NAME = "active"  # UPDATE_DIR/active: {"folder": the bundle last switched to, "base": --bundle's bundle_id}
MAX_FILES = 4096


@dataclass(frozen=True, slots=True)
class StagedBundle:
    """A verified, loaded bundle waiting for the runner's next frame boundary.

    ``executor`` runs its cuts (device_runner.heads.CutExecutor); ``policy`` is its CutPolicy (None: the runner
    builds one with the profile's settings); ``head_ms`` the head (+ exit) times ``prepare`` measured, per cut.
    """

    path: Path
    manifest: Manifest
    executor: object
    policy: object | None = None
    head_ms: dict[int, float] = field(default_factory=dict)


#: (verified bundle folder, its manifest) -> StagedBundle; raises (SplitEdgeError, ...) when it cannot load.
Prepare = Callable[[Path, Manifest], StagedBundle]


@dataclass(slots=True)
class _Download:
    announce: AnnounceMessage
    root: Path
    offsets: list[tuple[int, int, int]]  # chunk n -> (file index, chunk index, expected length)
    wanted: list[int] = field(default_factory=list)  # chunk numbers to fetch, in order (manifest.json's first)
    files: set[int] = field(default_factory=set)  # indices (into announce.files) of the files fetched
    received: set[int] = field(default_factory=set)
    requested: set[int] = field(default_factory=set)  # chunk topics subscribed to now (the window)
    next_i: int = 0  # the next index into wanted to ask for
    manifest_phase: bool = True  # only manifest.json is wanted so far
    done: bool = False
    progress_at: float = field(default_factory=time.monotonic)  # the last new chunk (or the start); see stall_s


def active_bundle(update_dir: Path, trust: str | Path | None, base: str) -> tuple[Path, Manifest] | None:
    """The bundle the device last switched to (UPDATE_DIR/active), if it still loads with ``trust`` and the device
    still starts from the ``--bundle`` it replaced (``base``: that bundle's id); a new ``--bundle`` wins."""
    marker = Path(update_dir) / ACTIVE_NAME
    if not marker.is_file():
        return None
    try:
        doc = json.loads(marker.read_text(encoding="utf-8"))
        folder, recorded = str(doc["folder"]), str(doc["base"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log.warning("%s is not a record of the active bundle (%s); starting from --bundle", marker, exc)
        return None
    if recorded != base:
        log.info("--bundle is not the one the last rollout replaced; starting from --bundle")
        return None
    path = Path(update_dir) / folder
    if path.name != folder or folder in ("", ".", ".."):
        return None
    try:
        manifest = load_manifest(path, verify=False, trust=trust)
        verify_files(path, manifest.device_files)
    except (SplitEdgeError, OSError) as exc:
        log.warning("the last active bundle %s does not load (%s); starting from --bundle", path, exc)
        return None
    return path, manifest


def _check_plan(a: AnnounceMessage, max_bytes: int) -> list[tuple[int, int, int]]:
    """Chunk offsets of a sane plan; ManifestError naming what does not add up."""
    where = f"announce of bundle {a.bundle_id[:8]} (version {a.version})"
    if len(a.bundle_id) != 64 or any(c not in "0123456789abcdef" for c in a.bundle_id):
        raise ManifestError(f"{where}: bundle_id {a.bundle_id!r} is not 64 hex digits")
    if not 1 <= a.chunk_size <= MAX_CHUNK_BYTES:
        raise ManifestError(f"{where}: chunk_size {a.chunk_size}; expected 1..{MAX_CHUNK_BYTES}")
    if not a.files or a.files[0][0] != MANIFEST_NAME or a.files[0][1] != a.manifest_sha256:
        raise ManifestError(f"{where}: the first file must be {MANIFEST_NAME} with the announced manifest_sha256")
    if len(a.files) > MAX_FILES:
        raise ManifestError(f"{where}: {len(a.files)} files; at most {MAX_FILES}")
    total = sum(size for _, _, size in a.files)
    if total > max_bytes:
        raise ManifestError(f"{where}: {total} bytes, over this device's limit of {max_bytes} "
                            "(splitedge device --update-max-mb)")
    seen: set[str] = set()
    offsets: list[tuple[int, int, int]] = []
    for i, (path, _sha, size) in enumerate(a.files):
        p = PurePosixPath(path)
        if (not path or p.is_absolute() or "\\" in path or any(part in ("", ".", "..") for part in path.split("/"))
                or path == SIGNATURE_NAME or path in seen):
            raise ManifestError(f"{where}: file path {path!r} is not a plain relative path inside the bundle "
                                "(or is repeated, or is manifest.sig)")
        seen.add(path)
        count = a.chunk_count(i)
        offsets += [(i, j, min(a.chunk_size, size - j * a.chunk_size)) for j in range(count)]
    return offsets


class BundleUpdater:
    """Follow a group's announces; stage, verify and prepare a new bundle; offer it to the runner (module doc).

    ``runner`` needs ``offer_bundle(staged, on_swap)`` and ``set_rollout(state, bundle, detail)``
    (device_runner.runner.DeviceRunner). ``trust`` is required: an unsigned update path would let anyone who
    can publish on the group run code-bearing models on the camera.
    """

    def __init__(self, transport: Transport, group: str, update_dir: str | Path, *, trust: str | Path,
                 current: Manifest, runner: object, prepare: Prepare, max_bytes: int = 1 << 30,
                 window: int = 2, base: Manifest | None = None,
                 needs: Callable[[Manifest], tuple[FileRef, ...]] | None = None, same_input: bool = True,
                 keep_old: bool = False, have: Callable[[str], bool] | None = None, stall_s: float = 120.0) -> None:
        self.transport = transport
        self.group = topics.validate_group(group)
        self.update_dir = Path(update_dir)
        self.trust = trust
        self.runner = runner
        self.prepare = prepare
        self.max_bytes = max_bytes
        self.window = max(1, window)
        self.current_id = current.bundle_id
        self.base_id = (base or current).bundle_id  # the --bundle this device was started with (UPDATE_DIR/active)
        self.current_input = tuple(current.input.shape)
        self.needs = needs or (lambda m: m.device_files)  # the files fetched out of the announce's (module doc)
        self.same_input = same_input
        self.keep_old = keep_old  # a tail worker keeps serving the bundles it had
        self.have = have  # bundle id -> already served here (a tail worker serves several)
        self.stall_s = stall_s  # connected, and no new chunk for this long: the download fails (module doc)
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._download: _Download | None = None
        self._failed: dict[str, str] = {}  # bundle id -> why (not retried until a restart)
        self._offered: str | None = None  # the bundle handed to the runner, waiting for its frame boundary
        self._threads: list[threading.Thread] = []
        self.state: tuple[RolloutState | None, str | None, str | None] = (None, None, None)

    def start(self) -> None:
        self.update_dir.mkdir(parents=True, exist_ok=True)
        self.transport.subscribe(topics.announce_topic(self.group), self._on_announce, qos=1)
        threading.Thread(target=self._watch, name="update-watchdog", daemon=True).start()

    def _watch(self) -> None:
        """Fail a download that makes no progress for ``stall_s`` while connected (its retained chunks are gone)."""
        while not self._stop.wait(min(1.0, max(0.05, self.stall_s / 4))):
            with self._lock:
                d = self._download
                if d is None or d.done:
                    continue
                if not self.transport.connected:
                    d.progress_at = time.monotonic()  # offline time does not count
                    continue
                if time.monotonic() - d.progress_at < self.stall_s:
                    continue
                self._download = None
            self._stop_chunks(d)
            self._fail(d.announce, ManifestError(
                f"no new chunk arrived for {self.stall_s:.0f} s ({len(d.received)} of {len(d.wanted)} so far): the "
                "broker no longer holds its retained chunks (restarted?); roll the bundle out again"), d.root)

    def close(self) -> None:
        self._stop.set()
        try:
            self.transport.unsubscribe(topics.announce_topic(self.group))
        except SplitEdgeError:
            pass
        with self._lock:
            d, self._download = self._download, None
        if d is not None:
            self._stop_chunks(d)

    def wait_idle(self, timeout: float = 30.0) -> bool:
        """Wait for the verification threads started so far (tests, shutdown); True when none is left."""
        for t in list(self._threads):
            t.join(timeout)
        return not any(t.is_alive() for t in self._threads)

    # ---- state --------------------------------------------------------------------------------
    def _set(self, state: RolloutState, bundle: str, detail: str | None = None) -> None:
        self.state = (state, bundle[:8], detail)
        self.runner.set_rollout(state, bundle[:8], detail)  # type: ignore[attr-defined]

    def _fail(self, a: AnnounceMessage, exc: BaseException, root: Path | None = None) -> None:
        why = " ".join(str(exc).split()) if isinstance(exc, SplitEdgeError) else f"{type(exc).__name__}: {exc}"
        detail = f"bundle {a.version} ({a.bundle_id[:8]}) rolled back, the running one kept: {' '.join(why.split())}"
        log.warning("%s", detail)
        self._failed[a.bundle_id] = detail
        if root is not None:
            shutil.rmtree(root, ignore_errors=True)
        self._set(RolloutState.ROLLED_BACK, a.bundle_id, detail[:1000])

    # ---- transport thread ---------------------------------------------------------------------
    def _on_announce(self, msg: Message) -> None:
        if not msg.payload:
            return  # the announce was cleared (splitedge rollout --clear)
        try:
            a = AnnounceMessage.from_bytes(msg.payload)
        except SplitEdgeError as exc:
            log.warning("undecodable announce on %s: %s", msg.topic, exc)
            return
        with self._lock:
            running = a.bundle_id == self.current_id or (self.have is not None and self.have(a.bundle_id))
            if a.group != self.group or running or a.bundle_id in self._failed:
                if running and a.group == self.group and self.state[:2] != (RolloutState.ACTIVE, a.bundle_id[:8]):
                    # restarted from UPDATE_DIR/active, or the group was rolled back to what this side runs
                    self.state = (RolloutState.ACTIVE, a.bundle_id[:8], None)
                    self.runner.set_rollout(RolloutState.ACTIVE, a.bundle_id[:8], None)  # type: ignore[attr-defined]
                return
            d = self._download
            if (d is not None and d.announce.bundle_id == a.bundle_id) or a.bundle_id == self._offered:
                return  # already on it (a re-sent announce after a reconnect)
            if d is not None:
                self._download = None
        if d is not None:  # a newer bundle replaces the one being fetched
            self._stop_chunks(d)
            shutil.rmtree(d.root, ignore_errors=True)
        try:
            offsets = _check_plan(a, self.max_bytes)
            root = self.update_dir / f"{a.bundle_id[:16]}.part"
            shutil.rmtree(root, ignore_errors=True)
            d = _Download(a, root, offsets)
            self._add_files(d, [0])
        except (SplitEdgeError, OSError) as exc:
            self._fail(a, exc)
            return
        with self._lock:
            self._download = d
        self._set(RolloutState.DOWNLOADING, a.bundle_id)
        log.info("bundle %s (%s) announced: %d files, %d chunks", a.bundle_id[:8], a.version, len(a.files),
                 len(offsets))
        self._request(d, self.window)

    def _on_chunk(self, msg: Message) -> None:
        if not msg.payload:
            return  # emptied by a later rollout
        with self._lock:
            d = self._download
        if d is None or d.done:
            return
        a = d.announce
        try:
            n = int(msg.topic.rsplit("/", 1)[1])
            chunk = decode_chunk(msg.payload)
            h = chunk.header
            if h.bundle_id != a.wire_bundle_id:
                return  # another bundle's chunk on a stale subscription
            if n in d.received or h.file_index not in d.files:
                return  # a duplicate (after a reconnect), or a chunk of a file this side does not fetch
            if not 0 <= n < len(d.offsets) or d.offsets[n][:2] != (h.file_index, h.index) \
                    or len(chunk.data) != d.offsets[n][2] or h.count != a.chunk_count(h.file_index):
                raise IntegrityError(f"chunk {n} on {msg.topic} is file {h.file_index} chunk {h.index}/{h.count} "
                                     f"with {len(chunk.data)} bytes; the announce expects "
                                     f"{d.offsets[n] if 0 <= n < len(d.offsets) else 'no such chunk'}")
            with open(d.root / a.files[h.file_index][0], "r+b") as fh:
                fh.seek(h.index * a.chunk_size)
                fh.write(chunk.data)
        except (SplitEdgeError, OSError, ValueError) as exc:
            with self._lock:
                if self._download is not d:
                    return
                self._download = None
            self._stop_chunks(d)
            self._fail(a, exc, d.root)
            return
        with self._lock:
            d.received.add(n)
            d.progress_at = time.monotonic()
            complete = len(d.received) == len(d.wanted) and not d.done
            fresh = n in d.requested
            d.requested.discard(n)
        if fresh:
            self._unsubscribe(topics.chunk_topic(self.group, a.bundle_id, n))
        if complete and d.manifest_phase:
            self._select_files(d)
        elif complete:
            self._complete(d)
        elif fresh:
            self._request(d, 1)

    def _add_files(self, d: _Download, indices: list[int]) -> None:
        """Create the files (their final size) and want their chunks, in the announce's order."""
        for i in indices:
            path, _sha, size = d.announce.files[i]
            f = d.root / path
            f.parent.mkdir(parents=True, exist_ok=True)
            with open(f, "wb") as fh:
                fh.truncate(size)
        d.files.update(indices)
        chosen = set(indices)
        d.wanted += [n for n, (i, _, _) in enumerate(d.offsets) if i in chosen]

    def _select_files(self, d: _Download) -> None:
        """manifest.json is in: fetch the files this side runs (``needs``), not the whole announce (a tail
        worker's ``--files all`` rollout carries the tails too). The manifest is only *read* here; the
        signature over it is checked once everything is in (``_verify``)."""
        a = d.announce
        try:
            raw = (d.root / MANIFEST_NAME).read_bytes()
            if hashlib.sha256(raw).hexdigest() != a.manifest_sha256:
                raise IntegrityError(f"{MANIFEST_NAME} reassembled to another sha256 than the announced manifest_sha256")
            manifest = Manifest.from_dict(json.loads(raw.decode("utf-8")), where=f"announced {MANIFEST_NAME}")
            index = {path: i for i, (path, _, _) in enumerate(a.files)}
            needed = [r.path for r in self.needs(manifest)]
            missing = sorted(p for p in needed if p not in index)
            if missing:
                raise BundleError(f"the rollout did not send {missing}, which this side runs; roll it out again "
                                  "(splitedge rollout sends heads and exits by default, --files all adds the tails)")
            with self._lock:
                d.manifest_phase = False
                self._add_files(d, sorted({index[p] for p in needed} - d.files))
                complete = len(d.received) == len(d.wanted)
        except (SplitEdgeError, OSError, ValueError) as exc:
            with self._lock:
                if self._download is d:
                    self._download = None
            self._stop_chunks(d)
            self._fail(a, exc, d.root)
            return
        if complete:
            self._complete(d)
        else:
            self._request(d, self.window)

    def _request(self, d: _Download, k: int) -> None:
        """Subscribe to the next ``k`` chunk topics: their retained chunks come down, at most ``window`` at once."""
        for _ in range(k):
            with self._lock:
                if d.done or d.next_i >= len(d.wanted) or self._download is not d:
                    return
                n = d.wanted[d.next_i]
                d.next_i += 1
                d.requested.add(n)
            self.transport.subscribe(topics.chunk_topic(self.group, d.announce.bundle_id, n), self._on_chunk, qos=1)

    def _unsubscribe(self, topic_name: str) -> None:
        try:
            self.transport.unsubscribe(topic_name)
        except SplitEdgeError:
            pass

    def _stop_chunks(self, d: _Download) -> None:
        with self._lock:
            pending, d.requested = sorted(d.requested), set()
        for n in pending:
            self._unsubscribe(topics.chunk_topic(self.group, d.announce.bundle_id, n))

    def _complete(self, d: _Download) -> None:
        d.done = True
        self._stop_chunks(d)
        t = threading.Thread(target=self._install, args=(d,), name=f"update-{d.announce.bundle_id[:8]}", daemon=True)
        self._threads = [x for x in self._threads if x.is_alive()] + [t]
        t.start()

    # ---- updater thread -----------------------------------------------------------------------
    def _install(self, d: _Download) -> None:
        a = d.announce
        root = d.root
        try:  # Linux: a thread's own nice value; the frames keep the CPU, hashing and loading take the rest
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)
        except (AttributeError, OSError):
            pass
        try:
            manifest, final = self._verify(d)
            root = final
            staged = self.prepare(final, manifest)
        except Exception as exc:  # noqa: BLE001 - whatever fails, the running bundle stays: that is the point
            with self._lock:
                if self._download is d:
                    self._download = None
            self._fail(a, exc, root)
            return
        with self._lock:
            if self._download is d:
                self._download = None
            self._offered = a.bundle_id
        self.runner.offer_bundle(staged, self._activated)  # type: ignore[attr-defined]

    def _verify(self, d: _Download) -> tuple[Manifest, Path]:
        a, root = d.announce, d.root
        fetched = [a.files[i] for i in sorted(d.files)]
        for path, sha, _size in fetched:
            h = hashlib.sha256()
            with open(root / path, "rb") as fh:
                for block in iter(lambda: fh.read(1 << 20), b""):
                    h.update(block)
            if h.hexdigest() != sha:
                raise IntegrityError(f"{path} reassembled to sha256 {h.hexdigest()[:16]}..., the announce says "
                                     f"{sha[:16]}...: a chunk was mixed up in transit")
        if a.signature is not None:
            (root / SIGNATURE_NAME).write_text(a.signature, encoding="utf-8")
        manifest = load_manifest(root, verify=False, trust=self.trust)  # the signature over the exact bytes
        if manifest.bundle_id != a.bundle_id:
            raise ManifestError(f"the manifest is bundle {manifest.bundle_id[:8]}, the announce said {a.bundle_id[:8]}")
        sent = {path for path, _, _ in fetched}
        missing = sorted(r.path for r in self.needs(manifest) if r.path not in sent)
        if missing:
            raise BundleError(f"the rollout did not send {missing}, which this side runs; roll it out again")
        verify_files(root, tuple(r for r in manifest.files if r.path in sent))
        if self.same_input and tuple(manifest.input.shape) != self.current_input:
            raise BundleError(f"its input is {tuple(manifest.input.shape)}, the running bundle's is "
                              f"{self.current_input}; the camera source was opened for that: restart the device "
                              "with the new bundle instead")
        final = self.update_dir / a.bundle_id[:16]
        shutil.rmtree(final, ignore_errors=True)
        os.replace(root, final)
        return manifest, final

    def _activated(self, staged: StagedBundle) -> None:
        """Called by the runner once it swapped (on its thread): remember it for the next start."""
        with self._lock:
            self.current_id = staged.manifest.bundle_id
        self.state = (RolloutState.ACTIVE, staged.manifest.bundle_id[:8], None)
        try:
            tmp = self.update_dir / (ACTIVE_NAME + ".tmp")
            tmp.write_text(json.dumps({"folder": staged.path.name, "base": self.base_id}) + "\n", encoding="utf-8")
            os.replace(tmp, self.update_dir / ACTIVE_NAME)
        except OSError as exc:
            log.warning("could not record the active bundle in %s: %s", self.update_dir, exc)
            return
        if self.keep_old:
            return
        for old in self.update_dir.iterdir():  # earlier updates: nothing runs them any more
            if old.is_dir() and old.name != staged.path.name and not old.name.endswith(".part"):
                shutil.rmtree(old, ignore_errors=True)

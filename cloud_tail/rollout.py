"""``splitedge rollout``: offer a bundle to a device group over MQTT (docs/CLOUD.md, "Rolling out a bundle").

    splitedge rollout BUNDLE --group G [--broker URL] [--trust PUB.pem] [--version V] [--chunk-kb 256]
                      [--files device|all] [--timeout S]
                      [--ca-file PEM --cert-file PEM --key-file PEM | --username NAME --password-file FILE]
    splitedge rollout --clear --group G [--broker URL] [TLS flags]

What goes out, all retained and QoS 1 (topics in sdk/topics.py):

1. every chunk of the files (``manifest.json`` first, then the files the devices run: heads and exits,
   ``--files all`` adds the tails), ``--chunk-kb`` each, one message per chunk (sdk/chunks.py);
2. empty retained messages on the previous bundle's chunk topics, so the broker drops them;
3. the :class:`~sdk.messages.AnnounceMessage` (bundle id, version, manifest sha256, the text of
   ``manifest.sig``, the file list): last, so a device that reads it finds every chunk already there.

The command returns once its own announce comes back from the broker (it subscribes to it first): the
broker received everything before it, in order. Devices that are offline get the retained bundle when
they connect. ``--clear`` removes the group's announce and chunks.

**Why MQTT, not HTTP.** Every device already holds one authenticated TLS connection to the broker, under
an ACL that ties it to its identity (firmware_configs/mosquitto/acl): the bundle comes down that same
connection, with no second server to run, certify, expose and authenticate devices against, and no
second port through a site's firewall. Retained chunks serve a device that connects days later. The
cost: the broker holds the bundle in memory (a digits bundle's device files are ~1 MB, MobileNetV2's
~15 MB), and each rollout pushes every chunk to every subscribed device at once (no range requests).
Past tens of MB per bundle or hundreds of devices, an HTTP(S) file server with the same announce
would be the better carrier; the announce already carries everything a device needs to check the files.

Tail workers can follow a group too (``splitedge cloud --rollout-group G``, :func:`follow_rollouts`): from a
``--files all`` rollout they fetch the manifest and the tails, and serve the new bundle next to the others
(:class:`TailsFollower`); :func:`restore_staged` serves those again after a restart.

The announce is not what is trusted: the device checks ``manifest.json`` against ``manifest.sig`` with
its own ``--trust`` key, and every file against the manifest (sdk/update.py). ``--trust`` here
checks the signature before anything is sent.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from cloud_tail.tails import BundleTails, TailSet
from sdk import topics
from sdk.chunks import MAX_CHUNK_BYTES, encode_chunk
from sdk.errors import ConfigError, SplitEdgeError, TransportError, WireError
from sdk.manifest import MANIFEST_NAME, Manifest, load_manifest, sha256_file, verify_files
from sdk.messages import AnnounceMessage, RolloutState
from sdk.signing import SIGNATURE_NAME
from sdk.tls import add_broker_arguments, broker_from_args, connect_transport
from sdk.transport import Message, Transport

__all__ = ["FileScope", "RolloutResult", "TailsFollower", "clear_rollout", "follow_rollouts", "iter_chunks", "main",
           "make_announce", "parse_args", "publish_rollout", "read_announce", "restore_staged"]  # fmt: skip


class FileScope(StrEnum):
    """Which bundle files a rollout sends (``--files``)."""

    DEVICE = "device"  # manifest.json + heads and exits: what a device runs
    ALL = "all"  # every file of the manifest (tails too)


@dataclass(frozen=True, slots=True)
class RolloutResult:
    announce: AnnounceMessage
    chunks: int
    bytes: int
    cleared: int  # chunk topics of the previous bundle emptied
    seconds: float


def make_announce(bundle: Path, manifest: Manifest, group: str, *, version: str | None = None,
                  chunk_size: int = 64 * 1024, scope: FileScope = FileScope.DEVICE) -> AnnounceMessage:
    """The transfer plan of ``bundle`` for ``group`` (nothing is sent)."""
    if not 1 <= chunk_size <= MAX_CHUNK_BYTES:
        raise ConfigError(f"--chunk-kb {chunk_size // 1024}: expected 1..{MAX_CHUNK_BYTES // 1024} KiB per chunk")
    root = Path(bundle)
    refs = manifest.files if scope is FileScope.ALL else manifest.device_files
    files = [(MANIFEST_NAME, sha256_file(root / MANIFEST_NAME), (root / MANIFEST_NAME).stat().st_size)]
    files += [(r.path, r.sha256, r.size) for r in refs]
    sig = root / SIGNATURE_NAME
    return AnnounceMessage(
        group=topics.validate_group(group), bundle_id=manifest.bundle_id, version=version or manifest.version,
        manifest_sha256=files[0][1], signature=sig.read_text(encoding="utf-8") if sig.is_file() else None,
        chunk_size=chunk_size, files=tuple(files), ts=time.time(),
    )  # fmt: skip


def iter_chunks(bundle: Path, announce: AnnounceMessage) -> Iterator[tuple[str, bytes]]:
    """(topic, payload) of every chunk, in order, read from ``bundle`` a chunk at a time."""
    n = 0
    for i, (path, _sha, size) in enumerate(announce.files):
        count = announce.chunk_count(i)
        with open(Path(bundle) / path, "rb") as fh:
            for j in range(count):
                data = fh.read(announce.chunk_size)
                yield topics.chunk_topic(announce.group, announce.bundle_id, n), encode_chunk(
                    announce.wire_bundle_id, i, j, count, data)
                n += 1
        if (Path(bundle) / path).stat().st_size != size:
            raise ConfigError(f"bundle {bundle}: {path} changed size while it was sent; run the rollout again")


def read_announce(transport: Transport, group: str, wait_s: float = 1.0) -> AnnounceMessage | None:
    """The group's retained announce, if any arrives within ``wait_s`` (None: none, or cleared)."""
    got: list[AnnounceMessage | None] = []
    event = threading.Event()

    def on(msg: Message) -> None:
        try:
            got.append(AnnounceMessage.from_bytes(msg.payload) if msg.payload else None)
        except WireError:
            got.append(None)
        event.set()

    t = topics.announce_topic(group)
    transport.subscribe(t, on, qos=1)
    event.wait(wait_s)
    transport.unsubscribe(t)
    return got[-1] if got else None


def _clear_chunks(transport: Transport, announce: AnnounceMessage) -> int:
    for n in range(announce.total_chunks):
        transport.publish(topics.chunk_topic(announce.group, announce.bundle_id, n), b"", qos=1, retain=True)
    return announce.total_chunks


def publish_rollout(transport: Transport, bundle: Path, announce: AnnounceMessage, *,
                    previous: AnnounceMessage | None = None, timeout: float = 60.0) -> RolloutResult:
    """Send the chunks, empty the previous bundle's, then the announce; return once the broker echoes it."""
    t0 = time.perf_counter()
    echoed = threading.Event()
    t_announce = topics.announce_topic(announce.group)

    def on(msg: Message) -> None:
        if msg.payload == payload:
            echoed.set()

    payload = announce.to_bytes()
    transport.subscribe(t_announce, on, qos=1)
    try:
        chunks = nbytes = 0
        for topic_name, data in iter_chunks(bundle, announce):
            transport.publish(topic_name, data, qos=1, retain=True)
            chunks += 1
            nbytes += len(data)
        cleared = 0
        if previous is not None and previous.bundle_id[:16] != announce.bundle_id[:16]:
            cleared = _clear_chunks(transport, previous)
        transport.publish(t_announce, payload, qos=1, retain=True)
        if not echoed.wait(timeout):
            raise TransportError(
                f"the broker did not echo the announce of bundle {announce.bundle_id[:8]} within {timeout:.0f} s "
                f"({chunks} chunks, {nbytes} bytes queued): a slow link (raise --timeout) or the ACL refused "
                f"this identity on {t_announce} (firmware_configs/mosquitto/acl: the fleet identity publishes rollouts)"
            )
    finally:
        transport.unsubscribe(t_announce)
    return RolloutResult(announce, chunks, nbytes, cleared, time.perf_counter() - t0)


def clear_rollout(transport: Transport, group: str, previous: AnnounceMessage | None, *, timeout: float = 60.0) -> int:
    """Empty the group's bundle chunks and then its announce; returns once the broker echoes the empty announce
    (everything before it was received); returns the chunk topics emptied."""
    echoed = threading.Event()
    t_announce = topics.announce_topic(group)
    transport.subscribe(t_announce, lambda msg: echoed.set() if not msg.payload else None, qos=1)
    try:
        cleared = _clear_chunks(transport, previous) if previous is not None else 0
        transport.publish(t_announce, b"", qos=1, retain=True)
        if not echoed.wait(timeout):
            raise TransportError(f"the broker did not echo the cleared announce of group {group} within {timeout:.0f} s; "
                                 f"check the ACL (the fleet identity writes {t_announce}) and run --clear again")
    finally:
        transport.unsubscribe(t_announce)
    return cleared


class TailsFollower:
    """Where a tail worker's updater hands verified bundles (``splitedge cloud --rollout-group G``): each one is
    added to the bundles served, none is dropped. ``say`` reports it (the CLI prints to stdout)."""

    def __init__(self, tails: BundleTails, say: Callable[[str], None] = print) -> None:
        self.tails = tails
        self.say = say

    def offer_bundle(self, staged: Any, on_swap: Callable[[Any], None] | None = None) -> None:
        t = self.tails.add(staged.executor)
        self.say(f"serving bundle 0x{t.bundle_id:08x} ({staged.manifest.version}) from {staged.path}")
        if on_swap is not None:
            on_swap(staged)

    def set_rollout(self, state: RolloutState, bundle: str | None, detail: str | None = None) -> None:
        if state is RolloutState.ROLLED_BACK:
            self.say(f"refused bundle {bundle}: {detail}")


def restore_staged(tails: BundleTails, update_dir: Path, trust: str | Path) -> list[Path]:
    """Serve again the bundles an earlier run of this worker fetched (UPDATE_DIR/<bundle>/); returns them."""
    added = []
    if not Path(update_dir).is_dir():
        return added
    for folder in sorted(Path(update_dir).iterdir()):
        if not folder.is_dir() or folder.name.endswith(".part"):
            continue
        try:
            manifest = load_manifest(folder, verify=False, trust=trust)
            verify_files(folder, manifest.tail_files)
            tails.add(TailSet(folder, threads=tails.threads, manifest=manifest))
        except SplitEdgeError as exc:
            print(f"splitedge cloud: not serving {folder} again: {exc}", file=sys.stderr)
            continue
        added.append(folder)
    return added


def follow_rollouts(transport: Transport, tails: BundleTails, group: str, update_dir: Path, *, trust: str | Path,
                    say: Callable[[str], None] = print) -> Any:
    """Start a BundleUpdater (sdk/update.py) that fetches each bundle announced to ``group`` - its
    manifest and tails, from a ``--files all`` rollout - and adds it to ``tails``; returns it (close() it)."""
    from sdk.update import BundleUpdater, StagedBundle

    def prepare(path: Path, manifest: Manifest) -> StagedBundle:
        t = TailSet(path, threads=tails.threads, manifest=manifest)
        t.load_all()  # loaded and warmed up here, on the updater's thread: frames never wait for it
        return StagedBundle(path, manifest, t)

    first = tails.get(tails.bundle_ids[0])
    assert first is not None
    updater = BundleUpdater(transport, group, update_dir, trust=trust, current=first.manifest,
                            runner=TailsFollower(tails, say), prepare=prepare, needs=lambda m: m.tail_files,
                            same_input=False, keep_old=True, have=tails.has_bundle)
    updater.start()
    return updater


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="splitedge rollout", description="Offer a bundle to a device group over MQTT.")
    p.add_argument("bundle", nargs="?", type=Path, help="bundle folder (signed: devices check it with their --trust key)")
    p.add_argument("--group", required=True, help="device group (splitedge device --rollout-group)")
    p.add_argument("--trust", type=Path, metavar="PUB.pem", help="check manifest.sig with this key before sending")
    p.add_argument("--version", help="label shown in telemetry (default: the manifest's extra.version or its id)")
    p.add_argument("--chunk-kb", type=int, default=64, help="chunk size in KiB (default %(default)s)")
    p.add_argument("--files", type=FileScope, choices=list(FileScope), default=FileScope.DEVICE,
                   help="device: manifest, heads and exits (default); all: the tails too")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for the broker (default %(default)s)")
    p.add_argument("--clear", action="store_true", help="remove the group's announce and chunks instead")
    add_broker_arguments(p, default_url="mqtt://127.0.0.1:1883")
    args = p.parse_args(argv)
    try:
        topics.validate_group(args.group)
    except ValueError as exc:
        p.error(f"--group: {exc}")
    if args.clear == (args.bundle is not None):
        p.error("give a BUNDLE folder to roll out, or --clear (not both)")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    broker = broker_from_args(args)
    announce = None
    if args.bundle is not None:
        manifest = load_manifest(args.bundle, trust=args.trust)  # a bundle that loads, and is signed if --trust
        announce = make_announce(args.bundle, manifest, args.group, version=args.version,
                                 chunk_size=args.chunk_kb * 1024, scope=args.files)
        if announce.signature is None:
            print(f"splitedge rollout: warning: {args.bundle} has no {SIGNATURE_NAME}; devices with --trust refuse it "
                  f"(sign it: splitedge sign {args.bundle} --sign-key KEY.pem)", file=sys.stderr)
    transport = connect_transport(broker, client_id=f"splitedge-rollout-{os.getpid()}")
    try:
        previous = read_announce(transport, args.group)
        if announce is None:
            cleared = clear_rollout(transport, args.group, previous, timeout=args.timeout)
            print(json.dumps({"group": args.group, "cleared": previous.bundle_id[:8] if previous else None,
                              "chunks": cleared}))
            return 0
        result = publish_rollout(transport, args.bundle, announce, previous=previous, timeout=args.timeout)
    finally:
        transport.close()
    print(json.dumps({
        "group": args.group, "bundle_id": announce.bundle_id[:8], "version": announce.version,
        "files": len(announce.files), "chunks": result.chunks, "bytes": result.bytes,
        "replaced": previous.bundle_id[:8] if previous else None, "cleared_chunks": result.cleared,
        "seconds": round(result.seconds, 3), "signed": announce.signature is not None,
    }))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())

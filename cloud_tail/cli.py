"""`splitedge cloud`: run one tail worker until Ctrl-C / SIGTERM (exit code 0). See docs/CLOUD.md.

    splitedge cloud --bundle BUNDLE [--bundle BUNDLE2 ...] [--broker URL] [--group NAME] [--worker-id ID]
                    [--max-batch N] [--max-wait-ms MS] [--queue N] [--max-queue-ms MS] [--threads N]
                    [--outbox-dir DIR] [--outbox-max-messages N] [--outbox-max-bytes B]
                    [--metrics-port P [--metrics-addr A]] [--metrics-json FILE] [--metrics-interval S]
                    [--ca-file PEM --cert-file PEM --key-file PEM | --username NAME --password-file FILE]

Start as many as you like with the same ``--group``: the broker splits the frames between them.
Once subscribed it prints one line ``ready <worker_id> ...`` on stdout. Several ``--bundle``: the worker
serves them all, each frame by its header's bundle id (a rollout in progress, docs/CLOUD.md).
"""

from __future__ import annotations

import argparse
import logging
import os
import socket
import sys
from pathlib import Path

from cloud_tail.counters import write_json
from cloud_tail.httpd import port_number
from cloud_tail.tails import BundleTails
from cloud_tail.worker import TailWorker, WorkerConfig
from sdk import topics
from sdk.config import OutboxSettings
from sdk.errors import ConfigError
from sdk.outbox import Outbox, StoreAndForward
from sdk.signals import stop_on_signals
from sdk.tls import add_broker_arguments, broker_from_args, connect_transport

__all__ = ["main", "parse_args"]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="splitedge cloud", description="Run a cloud tail worker.")
    p.add_argument("--bundle", required=True, action="append",
                   help="bundle folder (the same one the devices run); repeat it to serve several bundles at once")
    add_broker_arguments(p, default_url="mqtt://127.0.0.1:1883")
    p.add_argument("--trust", metavar="PUB.pem", help="Ed25519 public key (PEM): refuse a bundle whose manifest.sig is missing or not by this key")
    p.add_argument("--group", default="tails", help="shared-subscription group (default %(default)s)")
    p.add_argument("--worker-id", default=None, help="id in results and reports (default host-pid)")
    p.add_argument(
        "--max-batch", type=int, default=8, help="frames of one cut per tail invoke (1: no batching)"
    )
    p.add_argument("--max-wait-ms", type=float, default=2.0, help="longest wait for a batch to fill")
    p.add_argument(
        "--queue", type=int, default=256, help="queued frames before shedding (answer 'overloaded')"
    )
    p.add_argument(
        "--max-queue-ms",
        type=float,
        default=1000.0,
        help="a frame queued longer than this is answered 'overloaded' instead of run",
    )
    p.add_argument("--threads", type=int, default=1, help="LiteRT threads per tail")
    p.add_argument(
        "--outbox-dir", default=None, metavar="DIR",
        help="also keep the results and reports produced while the broker is away on disk, in DIR/<worker-id>.outbox: "
        "a restarted worker with the same --worker-id sends them (default: in memory only; docs/TRANSPORT.md)",
    )  # fmt: skip
    p.add_argument("--outbox-max-messages", type=int, default=1000, metavar="N",
                   help="at most N replies wait for the broker; beyond, the oldest is dropped and counted (0: keep none)")
    p.add_argument("--outbox-max-bytes", type=int, default=1_000_000, metavar="B",
                   help="at most B bytes (topics + payloads) wait for the broker (default %(default)s)")
    p.add_argument(
        "--metrics-port", type=port_number, default=None, metavar="P",
        help="serve /metrics (Prometheus) and /metrics.json on port P (0: a free one, printed; off unless given)",
    )  # fmt: skip
    p.add_argument(
        "--metrics-addr", "--metrics-host", dest="metrics_addr", default="127.0.0.1", metavar="A",
        help="address for --metrics-port (default %(default)s; 0.0.0.0: every interface)",
    )  # fmt: skip
    p.add_argument("--metrics-json", default=None, help="write the counters' JSON snapshot to this file")
    p.add_argument(
        "--metrics-interval", type=float, default=1.0, help="seconds between --metrics-json writes"
    )
    p.add_argument("-v", "--verbose", action="store_true", help="log every refused frame")
    p.add_argument("--rollout-group", metavar="G",
                   help="also serve each bundle 'splitedge rollout --group G --files all' offers (needs --trust)")
    p.add_argument("--update-dir", type=Path, metavar="DIR",
                   help="where those bundles are kept (default: $SPLITEDGE_CACHE or ~/.cache/splitedge, then "
                   "updates/cloud-WORKER_ID); the ones there are served again on the next start")
    args = p.parse_args(argv)
    if args.rollout_group:
        try:
            topics.validate_group(args.rollout_group)
        except ValueError as exc:
            p.error(f"--rollout-group: {exc}")
    if args.outbox_max_messages < 0 or args.outbox_max_bytes < 1:
        p.error(f"--outbox-max-messages must be >= 0 and --outbox-max-bytes >= 1, got {args.outbox_max_messages} "
                f"and {args.outbox_max_bytes}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )
    broker = broker_from_args(args)  # files checked before the tails load
    worker_id = args.worker_id or f"{socket.gethostname()}-{os.getpid()}"
    config = WorkerConfig(
        worker_id=worker_id,
        group=args.group,
        max_batch=args.max_batch,
        max_wait_ms=args.max_wait_ms,
        queue_size=args.queue,
        max_queue_ms=args.max_queue_ms,
    )
    outbox = Outbox(OutboxSettings(args.outbox_max_messages, args.outbox_max_bytes,
                                   Path(args.outbox_dir).resolve() if args.outbox_dir else None),
                    name=worker_id)  # a spool that cannot be used stops here, before connecting  # fmt: skip
    tails = BundleTails(args.bundle, threads=args.threads, trust=args.trust)
    update_dir = None
    if args.rollout_group:
        from cloud_tail.rollout import restore_staged

        if not args.trust:
            raise ConfigError(f"--rollout-group {args.rollout_group} needs --trust PUB.pem: a worker only serves "
                              "rolled-out bundles signed by the key it trusts")
        update_dir = args.update_dir or Path(os.environ.get("SPLITEDGE_CACHE", Path.home() / ".cache" / "splitedge")) \
            / "updates" / f"cloud-{worker_id}"
        restore_staged(tails, update_dir, args.trust)
    tails.load_all()
    with stop_on_signals() as stop:
        transport = connect_transport(broker, client_id=f"splitedge-cloud-{worker_id}")
        worker = TailWorker(StoreAndForward(transport, outbox), tails, config)
        server = None
        updater = None
        try:
            if args.metrics_port is not None:  # before subscribing: a taken port refuses no frame
                from cloud_tail.metrics import serve_registry, worker_registry

                registry = worker_registry(worker.counters, bundles=lambda: _bundle_infos(tails))
                server = serve_registry(registry, args.metrics_port, host=args.metrics_addr,
                                        json_snapshot=worker.counters.snapshot)  # fmt: skip
            worker.start()
            if update_dir is not None:
                from cloud_tail.rollout import follow_rollouts

                updater = follow_rollouts(transport, tails, args.rollout_group, update_dir, trust=args.trust,
                                          say=lambda line: print(line, flush=True))
            cuts = ",".join(str(c) for c in tails.cut_ids)
            metrics = f" metrics http://{args.metrics_addr}:{server.server_port}/metrics" if server else ""
            print(
                f"ready {worker_id} broker {args.broker} group {args.group} bundle "
                f"{tails.describe()} cuts {cuts}{metrics}",
                flush=True,
            )
            while not stop.wait(args.metrics_interval):
                if args.metrics_json:
                    write_json(worker.counters, args.metrics_json)
        finally:
            if updater is not None:
                updater.close()
            worker.stop()
            worker.transport.close()  # flushes what it can; a spool keeps the rest for the next start
            if server is not None:
                server.shutdown()
                server.server_close()
            if args.metrics_json:
                write_json(worker.counters, args.metrics_json)
    totals = worker.counters.snapshot()["totals"]
    box = outbox.stats()
    print(
        f"stopped {worker_id}: received {totals['received']} answered {totals['answered']} "
        f"shed {totals['shed']} errors {totals['errors']} outbox stored {box.stored} forwarded {box.forwarded} "
        f"dropped {box.dropped} queued {box.queued}",
        flush=True,
    )
    return 0


def _bundle_infos(tails: BundleTails) -> list[dict[str, str]]:
    """The labels of ``splitedge_cloud_bundle_info``: one set per bundle served (read at each scrape)."""
    out = []
    for bundle_id in tails.bundle_ids:
        t = tails.get(bundle_id)
        if t is not None:
            version = t.manifest.extra.get("version", "")
            out.append({"bundle_id": f"0x{bundle_id:08x}", "model": t.manifest.model_name, "version": str(version)})
    return out


if __name__ == "__main__":
    sys.exit(main())

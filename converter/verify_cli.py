"""`splitedge verify BUNDLE --data DATA [--json] [--limit N]`: run every cut's int8 head (LiteRT) and
float tail at every bit width on DATA, and report top-1 agreement with the float model (the raw cut's
float TFLite, i.e. the whole float model) and accuracy when DATA has labels. Needs LiteRT + numpy only.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from sdk.errors import BundleError
from sdk.litert import LiteRTModel
from sdk.manifest import CutKind, Manifest, load_manifest


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="splitedge verify", description=__doc__)
    p.add_argument("bundle")
    p.add_argument("--trust", metavar="PUB.pem",
                   help="Ed25519 public key (PEM): refuse a bundle whose manifest.sig is missing or not by this key")
    p.add_argument("--data", required=True, help=".npz with x (N,H,W,C uint8) and optional y")
    p.add_argument("--limit", type=int, default=500, help="frames to use (default 500)")
    p.add_argument("--json", action="store_true")
    return p.parse_args(argv)


def load_npz(path: str | Path, manifest: Manifest, limit: int) -> tuple[np.ndarray, np.ndarray | None]:
    try:
        with np.load(path, allow_pickle=False) as z:
            x = np.asarray(z["x"])[:limit]
            y = np.asarray(z["y"])[:limit].astype(np.int64) if "y" in z.files else None
    except (OSError, KeyError, ValueError, EOFError) as exc:
        raise BundleError(f"--data {path}: cannot read x (and y) from it ({exc}); expected an .npz with x=frames") from exc
    if x.dtype != np.uint8 or tuple(x.shape[1:]) != manifest.input.shape:
        raise BundleError(f"--data {path}: frames {x.shape} {x.dtype}; the bundle takes (N, "
                          f"{', '.join(map(str, manifest.input.shape))}) uint8")
    return x, y


def verify(bundle: str | Path, x: np.ndarray, y: np.ndarray | None) -> dict[str, object]:
    from converter import measure

    root = Path(bundle)
    m = load_manifest(root)
    raw = m.raw_cut
    if raw is None or raw.tail is None:
        raise BundleError(f"{root}: no raw cut with the float model; re-convert the bundle")
    float_model = LiteRTModel(root / raw.tail.path)
    float_pred = measure.run_tail(float_model, {raw.tensors[0].name: x}).argmax(-1)
    rows = []
    for c in m.cuts:
        if c.kind is CutKind.RAW:
            continue
        head = LiteRTModel(root / c.head.path)
        out = measure.run_head(head, x, c.tensors)
        if c.kind is CutKind.DEVICE:
            preds = {8: next(iter(out.values())).argmax(-1)}
        else:
            tail = LiteRTModel(root / c.tail.path)
            preds = {b: measure.run_tail(tail, {t.name: measure.transmit(out[t.name], t, b) for t in c.tensors}).argmax(-1)
                     for b in m.bits}
        for b, pred in preds.items():
            rows.append({
                "cut": c.index, "name": c.name, "kind": c.kind.value, "bits": b,
                "agreement": round(float((pred == float_pred).mean()), 4),
                "accuracy": None if y is None else round(float((pred == y).mean()), 4),
            })
    return {"bundle": str(root), "bundle_id": m.bundle_id, "frames": int(len(x)),
            "float_accuracy": None if y is None else round(float((float_pred == y).mean()), 4), "cuts": rows}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    manifest = load_manifest(args.bundle, trust=args.trust)
    x, y = load_npz(args.data, manifest, args.limit)
    report = verify(args.bundle, x, y)
    if args.json:
        print(json.dumps(report))
        return 0
    labelled = report["float_accuracy"] is not None
    quality = f"float accuracy {report['float_accuracy']}" if labelled else "no labels: agreement with the float model"
    print(f"bundle {report['bundle_id'][:12]}: {report['frames']} frames, {quality}")
    print(f"{'cut':>4} {'name':<28} {'bits':>4} {'agreement':>9}" + (f" {'accuracy':>8}" if labelled else ""))
    for r in report["cuts"]:
        acc = f" {r['accuracy']:>8.4f}" if labelled else ""
        print(f"{r['cut']:>4} {r['name'][:28]:<28} {r['bits']:>4} {r['agreement']:>9.4f}{acc}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

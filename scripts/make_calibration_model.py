"""Build a host-speed calibration model: MobileNetV2 1.0 224 (or ResNet50 224), full-integer int8, random seeded weights.

    python scripts/make_calibration_model.py                   # -> firmware_configs/calibration/mobilenet_v2_224_int8.tflite
    python scripts/make_calibration_model.py --family resnet   # -> firmware_configs/calibration/resnet50_224_int8.tflite

The board profiles' ``speed_factor`` is ``T_board / T_ref`` for exactly this network (firmware_configs/README.md):
T_board is the published LiteRT latency of MobileNetV2 1.0 224 int8 on the board, T_ref = 10.8 ms its time on one
thread of the reference x86 core (no VNNI). An emulating host times this file on one thread
(``sdk.host_speed``) and scales the factor by T_ref / T_host, so a host with faster int8 kernels (AVX-512 VNNI ran
the reference model ~7x faster) still emulates the board's milliseconds. Only the timing matters: the weights
are random (seeded), not trained, and no weights are downloaded.

The ResNet50 file calibrates the ``resnet`` family (``sdk.host_speed``, "Per-family calibration"): an x86 host
with VNNI/AMX speeds dense convolutions up far more than MobileNetV2's depthwise ones, so its MobileNetV2
scale alone emulates a ResNet head several times too fast.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

CALIBRATION = Path(__file__).resolve().parent.parent / "firmware_configs" / "calibration"
OUT = {"mobilenet": CALIBRATION / "mobilenet_v2_224_int8.tflite", "resnet": CALIBRATION / "resnet50_224_int8.tflite"}


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--family", choices=sorted(OUT), default="mobilenet", help="which calibration network")
    p.add_argument("--out", type=Path, default=None, help="default: firmware_configs/calibration/<the family's file>")
    p.add_argument("--seed", type=int, default=7)
    return p.parse_args(argv)


def main(args: argparse.Namespace) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras
    import numpy as np

    from converter.export import export_int8

    keras.utils.set_random_seed(args.seed)
    if args.family == "resnet":
        model = keras.applications.ResNet50(input_shape=(224, 224, 3), weights=None, classes=1000)
    else:
        model = keras.applications.MobileNetV2(input_shape=(224, 224, 3), alpha=1.0, weights=None, classes=1000)
    out = args.out or OUT[args.family]
    key = model.inputs[0].name  # the signature's input key
    rng = np.random.default_rng(args.seed)

    def representative() -> Iterator[dict[str, np.ndarray]]:
        for _ in range(8):
            yield {key: rng.uniform(-1.0, 1.0, (1, 224, 224, 3)).astype(np.float32)}

    data = export_int8(model, representative, input_type="int8")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(data)
    print(f"wrote {out} ({len(data) / 1e6:.1f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main(parse_args(None)))

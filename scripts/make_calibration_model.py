"""Build the host-speed calibration model: MobileNetV2 1.0 224, full-integer int8 (random, seeded weights).

    python scripts/make_calibration_model.py      # -> firmware_configs/calibration/mobilenet_v2_224_int8.tflite

The board profiles' ``speed_factor`` is ``T_board / T_ref`` for exactly this network (firmware_configs/README.md):
T_board is the published LiteRT latency of MobileNetV2 1.0 224 int8 on the board, T_ref = 10.8 ms its time on one
thread of the reference x86 core (no VNNI). An emulating host times this file on one thread
(``sdk.host_speed``) and scales the factor by T_ref / T_host, so a host with faster int8 kernels (AVX-512 VNNI ran
the reference model ~7x faster) still emulates the board's milliseconds. Only the timing matters: the weights
are random (seeded), not trained, and no weights are downloaded.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

OUT = Path(__file__).resolve().parent.parent / "firmware_configs" / "calibration" / "mobilenet_v2_224_int8.tflite"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=OUT)
    p.add_argument("--seed", type=int, default=7)
    return p.parse_args(argv)


def main(args: argparse.Namespace) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras
    import numpy as np

    from converter.export import export_int8

    keras.utils.set_random_seed(args.seed)
    model = keras.applications.MobileNetV2(input_shape=(224, 224, 3), alpha=1.0, weights=None, classes=1000)
    key = model.inputs[0].name  # the signature's input key
    rng = np.random.default_rng(args.seed)

    def representative() -> Iterator[dict[str, np.ndarray]]:
        for _ in range(8):
            yield {key: rng.uniform(-1.0, 1.0, (1, 224, 224, 3)).astype(np.float32)}

    data = export_int8(model, representative, input_type="int8")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_bytes(data)
    print(f"wrote {args.out} ({len(data) / 1e6:.1f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main(parse_args(None)))

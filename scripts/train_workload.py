"""Train a real-scale workload (converter/workloads.py) and write its committed artifact and metadata.

    python scripts/train_workload.py --arch mobilenetv2      # MobileNetV2-1.0, ends at 224x224
    python scripts/train_workload.py --arch resnet50 --stages 96:3:6000,224:1:2000

The frames are camera-like 224x224 scenes of Fashion-MNIST items on scikit-image photos
(``reference_data.generate(size=..., objects="fashion")``: Fashion-MNIST's own train split for
training, its test split for the test frames, and disjoint photo bands). Training is progressive in
resolution, as EfficientNetV2's authors do: the network is fully convolutional, so it first learns at
low resolution (cheap on 2 CPU cores), then the same weights go on at higher ones and finish at 224,
where the last stage re-learns the batch-norm statistics of full-size frames. Every epoch sees fresh
frames (a fixed pool gets memorised).

Seeded end to end (frames, init, shuffling); TensorFlow on CPU is not bit-exact across machines, so a
re-run lands near the recorded accuracy rather than on it. Writes ``converter/assets/<model>.keras``
and ``converter/assets/<model>.json``.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a plain script from a checkout
    sys.path.insert(0, str(REPO))

from converter import reference_data, workloads  # noqa: E402

DEFAULT_STAGES = {"mobilenetv2": "64:6:8000:0.2,96:2:8000,160:1:5000,224:1:3000",
                  "resnet50": "64:4:6000:0.2,96:2:6000,224:1:2000"}


def parse_stages(text: str) -> list[tuple[int, int, int, float]]:
    """"size:epochs:frames[:p_hard],..." -> [(size, epochs, frames per epoch, p_hard), ...].

    p_hard (default reference_data.P_HARD) is the probability of each hard factor: a curriculum starts lower.
    """
    stages = []
    try:
        for part in (p for p in text.split(",") if p.strip()):
            fields = part.split(":")
            if len(fields) not in (3, 4):
                raise ValueError(part)
            p_hard = float(fields[3]) if len(fields) == 4 else reference_data.P_HARD
            stages.append((int(fields[0]), int(fields[1]), int(fields[2]), p_hard))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--stages {text!r}: expected size:epochs:frames[:p_hard],...") from None
    if not stages or any(min(s[:3]) <= 0 or not 0 <= s[3] <= 1 for s in stages):
        raise argparse.ArgumentTypeError(f"--stages {text!r}: sizes, epochs and frames > 0, p_hard in 0..1")
    return stages


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--arch", choices=sorted(workloads.ARCHES), default="mobilenetv2")
    p.add_argument("--stages", type=parse_stages, help="size:epochs:frames per epoch, comma-separated "
                   f"(default: {DEFAULT_STAGES})")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--learning-rate", type=float, default=2e-3, help="peak Adam rate of the first stage "
                   "(each later stage starts at half the previous one's)")
    p.add_argument("--test-frames", type=int, default=1000)
    p.add_argument("--resume-from", type=Path, help="a .keras of the same arch to start from")
    p.add_argument("--no-train", action="store_true", help="with --resume-from: only evaluate and export it "
                   "(its training log comes from the .json beside it)")
    p.add_argument("--format", choices=["keras", "npz16"], help="artifact: a .keras, or float16 weights for "
                   "workloads.build_model (half the bytes; default npz16 for resnet50, keras otherwise)")
    p.add_argument("--out", type=Path, help="default: converter/assets/<model name>.keras or .weights.npz")
    return p.parse_args(argv)


def frames(n: int, seed: int, split: str, size: int, p_hard: float = reference_data.P_HARD) -> reference_data.Frames:
    return reference_data.generate(n, seed, split, size=size, objects="fashion", p_hard=p_hard)


def train_stage(model: object, *, size: int, epochs: int, n: int, p_hard: float, learning_rate: float,
                batch_size: int, seed: int, label: str) -> tuple[list[float], float]:
    """Fit on fresh frames every epoch (the next epoch's are made in a thread); (train accuracy per epoch, s)."""
    import keras

    steps = int(np.ceil(n / batch_size)) * epochs
    model.compile(  # a new optimizer per stage: Keras 3 optimizers bind to the variables they first saw
        optimizer=keras.optimizers.Adam(keras.optimizers.schedules.CosineDecay(learning_rate, steps, alpha=0.05)),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    history: list[float] = []
    t0 = time.perf_counter()
    with ThreadPoolExecutor(max_workers=1) as pool:
        upcoming = pool.submit(frames, n, seed * 1000 + size * 10, "train", size, p_hard)
        for epoch in range(epochs):
            train = upcoming.result()
            if epoch + 1 < epochs:
                upcoming = pool.submit(frames, n, seed * 1000 + size * 10 + epoch + 1, "train", size, p_hard)
            result = model.fit(train.x, train.y, batch_size=batch_size, epochs=1, shuffle=True, verbose=0)
            history.append(float(result.history["accuracy"][-1]))
            print(f"{label} epoch {epoch + 1}/{epochs}: train accuracy {history[-1]:.4f}, "
                  f"loss {result.history['loss'][-1]:.4f}, {time.perf_counter() - t0:.0f} s", flush=True)
    return history, time.perf_counter() - t0


def accuracy_report(predicted: np.ndarray, test: reference_data.Frames) -> dict[str, float]:
    correct = predicted == test.y
    report = {"overall": float(correct.mean()), "easy": float(correct[~test.hard].mean()),
              "hard": float(correct[test.hard].mean())}
    for level in range(len(reference_data.FACTORS) + 1):
        chosen = test.difficulty == level
        report[f"difficulty_{level}"] = float(correct[chosen].mean()) if chosen.any() else float("nan")
    return report


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import keras
    import tensorflow as tf

    stages = args.stages or parse_stages(DEFAULT_STAGES[args.arch])
    started = time.perf_counter()
    keras.utils.set_random_seed(args.seed)
    final_size = stages[-1][0]
    weights = None
    log = []
    resumed_command = None
    if args.resume_from is not None:
        if args.resume_from.name.endswith(".weights.npz"):
            weights = workloads.load_weights_npz(args.resume_from)
            previous = args.resume_from.with_name(args.resume_from.name.split(".")[0] + ".json")
        else:
            resumed = keras.models.load_model(args.resume_from, compile=False)
            weights = resumed.get_weights()
            previous = args.resume_from.with_suffix(".json")
            if args.no_train:
                final_size = int(resumed.inputs[0].shape[1])
        if previous.is_file():  # the stages that made the starting point stay in the record
            before = json.loads(previous.read_text())
            log, resumed_command = before.get("stages", []), before.get("command")
    if args.no_train:
        if weights is None:
            raise SystemExit("--no-train needs --resume-from MODEL.keras")
        stages = []
    test = frames(args.test_frames, args.seed, "test", final_size)
    train_seconds = 0.0
    model = None
    for i, (size, epochs, n, p_hard) in enumerate(stages):
        model = workloads.build_model(args.arch, size)
        if weights is not None:
            model.set_weights(weights)
        lr = args.learning_rate / (2**i)
        history, seconds = train_stage(model, size=size, epochs=epochs, n=n, p_hard=p_hard, learning_rate=lr,
                                       batch_size=args.batch_size, seed=args.seed, label=f"stage {i + 1} ({size} px)")
        train_seconds += seconds
        weights = model.get_weights()
        log.append({"size": size, "epochs": epochs, "frames_per_epoch": n, "p_hard": p_hard, "learning_rate": lr,
                    "train_accuracy": [round(a, 4) for a in history], "seconds": round(seconds, 1),
                    "images_per_second": round(epochs * n / seconds, 1)})

    train_seconds = sum(stage["seconds"] for stage in log)  # every stage, those resumed from included
    export = workloads.build_model(args.arch, final_size)  # a clean, uncompiled copy: no optimizer state
    export.set_weights(weights)
    fmt = args.format or ("npz16" if args.arch == "resnet50" else "keras")
    out = args.out or workloads.ASSETS / f"{export.name}{'.keras' if fmt == 'keras' else '.weights.npz'}"
    out.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "keras":
        export.save(out)
    else:  # the accuracy stated is that of the float16-rounded weights, as committed
        workloads.save_weights_npz(export, out)
        export.set_weights(workloads.load_weights_npz(out))
    predicted = np.argmax(export.predict(test.x, batch_size=64, verbose=0), axis=1)
    accuracy = accuracy_report(predicted, test)
    print("test accuracy:", json.dumps({k: round(v, 4) for k, v in accuracy.items()}), flush=True)
    metadata = {
        "artifact": out.name,
        "arch": args.arch,
        "input": f"uint8 {final_size}x{final_size}x3, rescaled to 0..1 in the graph",
        "params": int(export.count_params()),
        "test_accuracy": round(accuracy["overall"], 4),
        "test_accuracy_by_difficulty": {k: round(v, 4) for k, v in accuracy.items() if k != "overall"},
        "test_frames": len(test.y),
        "data": f"reference_data.generate(size={final_size}, objects='fashion'): Fashion-MNIST train split for "
                "training, its test split for the test frames",
        "stages": log,
        "resumed_from": None if args.resume_from is None else {"path": str(args.resume_from),
                                                                "command": resumed_command},
        "seed": args.seed,
        "batch_size": args.batch_size,
        "training_seconds": round(train_seconds, 1),
        "total_seconds": round(time.perf_counter() - started, 1),
        "artifact_bytes": out.stat().st_size,
        "command": " ".join(["python scripts/train_workload.py", *(sys.argv[1:] if argv is None else argv)]),
        "host": f"{platform.machine()}, {__import__('os').cpu_count()} cores",
        "versions": {"python": platform.python_version(), "numpy": np.__version__, "tensorflow": tf.__version__,
                     "keras": keras.__version__},
    }
    meta_path = out.with_name(out.name.split(".")[0] + ".json")
    meta_path.write_text(json.dumps(metadata, indent=2) + "\n")
    print(f"wrote {out} ({metadata['artifact_bytes']} B) and {meta_path}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

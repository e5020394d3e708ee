"""Train the reference model and write the committed artifact, its metadata and a sample grid.

    python scripts/train_reference.py     # 30 epochs of 6,000 fresh frames: ~35 min on 2 busy CPU cores

Seeded end to end (frames, weight init, shuffling); TensorFlow on CPU is not bit-exact across
machines, so a re-run lands within a point or so of the recorded accuracy rather than on it.
Writes ``converter/assets/reference.keras``, ``converter/assets/reference_model.json`` and
``docs/img/reference_frames.png``.
"""

from __future__ import annotations

import argparse
import io
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

from converter import reference_data, reference_model  # noqa: E402

DEFAULT_IMAGE = REPO / "docs" / "img" / "reference_frames.png"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0, help="seed for frames, init and shuffling (default 0)")
    parser.add_argument(
        "--frames-per-epoch", type=int, default=6000, help="fresh training frames per epoch (default 6000)"
    )
    parser.add_argument("--test-frames", type=int, default=1000, help="held-out test frames (default 1000)")
    parser.add_argument("--epochs", type=int, default=30, help="epochs (default 30)")
    parser.add_argument("--batch-size", type=int, default=64, help="batch size (default 64)")
    parser.add_argument("--learning-rate", type=float, default=3e-3, help="peak Adam learning rate")
    parser.add_argument(
        "--out", type=Path, default=reference_model.ASSET_PATH, help="where to write the .keras"
    )
    parser.add_argument(
        "--image", type=Path, default=DEFAULT_IMAGE, help="sample-frame grid PNG ('' to skip)"
    )
    parser.add_argument("--no-int8-check", action="store_true", help="skip the int8 TFLite accuracy check")
    return parser.parse_args(argv)


def epoch_seed(seed: int, epoch: int) -> int:
    """The frame seed of one training epoch (the test split uses ``seed`` itself, on other digits)."""
    return seed * 1000 + epoch


def evaluate(model: object, frames: reference_data.Frames) -> dict[str, float]:
    """Top-1 accuracy overall, easy/hard and per difficulty level."""
    logits = model.predict(frames.x, batch_size=256, verbose=0)
    return accuracy_report(np.argmax(logits, axis=1), frames)


def accuracy_report(predicted: np.ndarray, frames: reference_data.Frames) -> dict[str, float]:
    correct = predicted == frames.y
    report = {
        "overall": float(correct.mean()),
        "easy": float(correct[~frames.hard].mean()),
        "hard": float(correct[frames.hard].mean()),
    }
    for level in range(len(reference_data.FACTORS) + 1):
        chosen = frames.difficulty == level
        report[f"difficulty_{level}"] = float(correct[chosen].mean()) if chosen.any() else float("nan")
    return report


def int8_accuracy(model: object, calibration: np.ndarray, frames: reference_data.Frames) -> dict[str, float]:
    """Accuracy of the whole model converted to a full-integer int8 TFLite model (a sanity check)."""
    import tensorflow as tf
    from ai_edge_litert.interpreter import Interpreter

    def representative() -> object:
        for frame in calibration:
            yield [frame[None]]

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = representative
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.uint8
    converter.inference_output_type = tf.int8
    interpreter = Interpreter(model_content=converter.convert())
    interpreter.allocate_tensors()
    inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    predicted = np.empty(len(frames.y), dtype=np.int64)
    for i, frame in enumerate(frames.x):
        interpreter.set_tensor(inp["index"], frame[None])
        interpreter.invoke()
        predicted[i] = int(np.argmax(interpreter.get_tensor(out["index"])[0]))
    float_predicted = np.argmax(model.predict(frames.x, batch_size=256, verbose=0), axis=1)
    report = accuracy_report(predicted, frames)
    report["agreement_with_float"] = float((predicted == float_predicted).mean())
    return report


def save_grid(path: Path, frames: reference_data.Frames, predicted: np.ndarray, per_row: int = 8) -> None:
    """A PNG grid of test frames, one row per difficulty level, titled with label and prediction."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    levels = len(reference_data.FACTORS) + 1
    fig, axes = plt.subplots(levels, per_row, figsize=(per_row * 1.1, levels * 1.25), dpi=80)
    for level in range(levels):
        chosen = np.flatnonzero(frames.difficulty == level)[:per_row]
        for column in range(per_row):
            ax = axes[level, column]
            ax.set_xticks([])
            ax.set_yticks([])
            if column >= len(chosen):
                ax.axis("off")
                continue
            i = chosen[column]
            ax.imshow(frames.x[i])
            ok = predicted[i] == frames.y[i]
            ax.set_title(f"{frames.y[i]} -> {predicted[i]}", fontsize=7, color="black" if ok else "red")
            if column == 0:
                ax.set_ylabel(f"difficulty {level}", fontsize=7)
    fig.suptitle("reference frames (test split): label -> float prediction", fontsize=8)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    from PIL import Image

    # A 256-colour palette keeps the noisy photos under ~200 KB.
    image = Image.open(buffer).convert("RGB").quantize(colors=256)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, optimize=True)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import keras
    import tensorflow as tf

    started = time.perf_counter()
    keras.utils.set_random_seed(args.seed)
    np.random.seed(args.seed)

    t0 = time.perf_counter()
    test = reference_data.generate(args.test_frames, args.seed, "test")
    print(f"generated {len(test.y)} test frames in {time.perf_counter() - t0:.1f} s", flush=True)

    model = reference_model.build()
    steps = args.epochs * int(np.ceil(args.frames_per_epoch / args.batch_size))
    schedule = keras.optimizers.schedules.CosineDecay(args.learning_rate, decay_steps=steps, alpha=0.02)
    model.compile(
        optimizer=keras.optimizers.Adam(schedule),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    # Fresh frames every epoch (a fixed pool gets memorised): the next epoch's frames are
    # generated in a thread while the current epoch trains.
    t0 = time.perf_counter()
    history: list[float] = []
    with ThreadPoolExecutor(max_workers=1) as pool:
        upcoming = pool.submit(
            reference_data.generate, args.frames_per_epoch, epoch_seed(args.seed, 0), "train"
        )
        for epoch in range(args.epochs):
            train = upcoming.result()
            if epoch + 1 < args.epochs:
                seed = epoch_seed(args.seed, epoch + 1)
                upcoming = pool.submit(reference_data.generate, args.frames_per_epoch, seed, "train")
            fit = model.fit(train.x, train.y, batch_size=args.batch_size, epochs=1, shuffle=True, verbose=0)
            history.append(float(fit.history["accuracy"][-1]))
            print(
                f"epoch {epoch + 1}/{args.epochs}: train accuracy {history[-1]:.4f}, "
                f"loss {fit.history['loss'][-1]:.4f}, {time.perf_counter() - t0:.0f} s",
                flush=True,
            )
    train_seconds = time.perf_counter() - t0

    # Export a clean, uncompiled copy: no optimizer state in the artifact.
    export = reference_model.build()
    export.set_weights(model.get_weights())
    accuracy = evaluate(export, test)
    print("test accuracy:", json.dumps({k: round(v, 4) for k, v in accuracy.items()}), flush=True)
    int8 = None
    if not args.no_int8_check:
        int8 = int8_accuracy(export, train.x[:200], test)
        print("int8 accuracy:", json.dumps({k: round(v, 4) for k, v in int8.items()}), flush=True)

    args.out.parent.mkdir(parents=True, exist_ok=True)
    export.save(args.out)
    if str(args.image) not in ("", "."):
        predicted = np.argmax(export.predict(test.x, batch_size=256, verbose=0), axis=1)
        save_grid(args.image, test, predicted)

    metadata = {
        "artifact": args.out.name,
        "test_accuracy": round(accuracy["overall"], 4),
        "test_accuracy_by_difficulty": {k: round(v, 4) for k, v in accuracy.items() if k != "overall"},
        "int8_tflite": None if int8 is None else {k: round(v, 4) for k, v in int8.items()},
        "hard_means": f"difficulty >= {reference_data.HARD_FROM} of factors {list(reference_data.FACTORS)}",
        "seed": args.seed,
        "train_frames_per_epoch": args.frames_per_epoch,
        "train_frames_seen": args.frames_per_epoch * args.epochs,
        "test_frames": len(test.y),
        "train_digits": len(reference_data.digit_indices("train")),
        "test_digits": len(reference_data.digit_indices("test")),
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "learning_rate": args.learning_rate,
        "final_train_accuracy": round(history[-1], 4),
        "params": int(export.count_params()),
        "artifact_bytes": args.out.stat().st_size,
        "training_seconds": round(train_seconds, 1),
        "total_seconds": round(time.perf_counter() - started, 1),
        "command": " ".join(["python scripts/train_reference.py", *(sys.argv[1:] if argv is None else argv)]),
        "versions": {
            "python": platform.python_version(),
            "numpy": np.__version__,
            "tensorflow": tf.__version__,
            "keras": keras.__version__,
        },
    }
    metadata_path = args.out.with_name("reference_model.json")
    metadata_path.write_text(json.dumps(metadata, indent=2) + "\n")
    print(f"wrote {args.out} ({metadata['artifact_bytes']} B), {metadata_path}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Train the reference model and write the committed artifact, its metadata and a sample grid.

    python scripts/train_reference.py     # stage 1 (~35 min) + stage 2 (~20 min) on 2 busy CPU cores
    python scripts/train_reference.py --stage1-from STAGE1.keras    # stage 2 only

Two stages, because the deep model learns nothing for many epochs from a random start on these
cluttered frames: stage 1 trains the light front model (``reference_model.build_stage1``: stem and
blocks 1-7 under a small head, 30 epochs); stage 2 copies its front into the full model
(``reference_model.transfer_stage1``), trains the new wide blocks with the front frozen for
``--freeze-epochs``, then everything together.

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
    parser.add_argument("--stage1-epochs", type=int, default=30, help="stage-1 epochs (default 30)")
    parser.add_argument("--stage1-learning-rate", type=float, default=3e-3, help="stage-1 peak Adam rate")
    parser.add_argument(
        "--stage1-from", type=Path, help="a trained stage-1 .keras (reference_model.build_stage1): skip stage 1"
    )
    parser.add_argument("--epochs", type=int, default=8, help="stage-2 epochs (default 8)")
    parser.add_argument(
        "--freeze-epochs", type=int, default=1, help="stage-2 epochs with the stage-1 front frozen (default 1)"
    )
    parser.add_argument("--batch-size", type=int, default=64, help="batch size (default 64)")
    parser.add_argument("--learning-rate", type=float, default=2e-3, help="stage-2 peak Adam learning rate")
    parser.add_argument(
        "--out", type=Path, default=reference_model.ASSET_PATH, help="where to write the .keras"
    )
    parser.add_argument(
        "--image", type=Path, default=DEFAULT_IMAGE, help="sample-frame grid PNG ('' to skip)"
    )
    parser.add_argument("--no-int8-check", action="store_true", help="skip the int8 TFLite accuracy check")
    return parser.parse_args(argv)


def epoch_seed(seed: int, epoch: int) -> int:
    """The frame seed of one training epoch (the test split uses ``seed`` itself, on other digits).

    Stage 2 counts its epochs from 100, so it sees frames stage 1 never did.
    """
    return seed * 1000 + epoch


def fit(model: object, args: argparse.Namespace, *, epochs: int, learning_rate: float, first_epoch: int,
        label: str, frozen: tuple[str, ...] = (), freeze_epochs: int = 0) -> tuple[list[float], float]:
    """Train on fresh frames every epoch (a fixed pool gets memorised); return (train accuracy per epoch, s).

    The next epoch's frames are generated in a thread while the current epoch trains. Layers named in
    ``frozen`` are not trained for the first ``freeze_epochs`` epochs.
    """
    import keras

    steps_per_epoch = int(np.ceil(args.frames_per_epoch / args.batch_size))

    def compile_with(trainable_front: bool, remaining_epochs: int) -> None:
        # A new optimizer each time: Keras 3 optimizers are bound to the variables they first saw.
        schedule = keras.optimizers.schedules.CosineDecay(
            learning_rate, decay_steps=max(1, remaining_epochs * steps_per_epoch), alpha=0.02
        )
        for name in frozen:
            model.get_layer(name).trainable = trainable_front
        model.compile(
            optimizer=keras.optimizers.Adam(schedule),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            metrics=["accuracy"],
        )

    freezing = bool(frozen) and freeze_epochs > 0
    compile_with(trainable_front=not freezing, remaining_epochs=freeze_epochs if freezing else epochs)
    t0 = time.perf_counter()
    history: list[float] = []
    with ThreadPoolExecutor(max_workers=1) as pool:
        upcoming = pool.submit(
            reference_data.generate, args.frames_per_epoch, epoch_seed(args.seed, first_epoch), "train"
        )
        for epoch in range(epochs):
            train = upcoming.result()
            if epoch + 1 < epochs:
                seed = epoch_seed(args.seed, first_epoch + epoch + 1)
                upcoming = pool.submit(reference_data.generate, args.frames_per_epoch, seed, "train")
            if freezing and epoch == freeze_epochs:
                compile_with(trainable_front=True, remaining_epochs=epochs - freeze_epochs)
            result = model.fit(train.x, train.y, batch_size=args.batch_size, epochs=1, shuffle=True, verbose=0)
            history.append(float(result.history["accuracy"][-1]))
            print(
                f"{label} epoch {epoch + 1}/{epochs}: train accuracy {history[-1]:.4f}, "
                f"loss {result.history['loss'][-1]:.4f}, {time.perf_counter() - t0:.0f} s",
                flush=True,
            )
    return history, time.perf_counter() - t0


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

    stage1_seconds = 0.0
    if args.stage1_from is not None:
        stage1 = reference_model.load(args.stage1_from)
        stage1_source = str(args.stage1_from)
    else:
        stage1 = reference_model.build_stage1()
        _, stage1_seconds = fit(stage1, args, epochs=args.stage1_epochs, learning_rate=args.stage1_learning_rate,
                                first_epoch=0, label="stage 1")
        stage1_source = f"trained here ({args.stage1_epochs} epochs)"
    model = reference_model.build()
    copied = reference_model.transfer_stage1(stage1, model)
    print(f"stage 2: copied {len(copied)} stage-1 layers ({stage1_source})", flush=True)
    history, stage2_seconds = fit(model, args, epochs=args.epochs, learning_rate=args.learning_rate,
                                  first_epoch=100, label="stage 2", frozen=tuple(copied),
                                  freeze_epochs=args.freeze_epochs)
    train_seconds = stage1_seconds + stage2_seconds
    train = reference_data.generate(200, epoch_seed(args.seed, 99), "train")  # int8 calibration frames

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
        "stage1": stage1_source,
        "stage1_epochs": None if args.stage1_from is not None else args.stage1_epochs,
        "stage2_epochs": args.epochs,
        "freeze_epochs": args.freeze_epochs,
        "train_frames_seen_stage2": args.frames_per_epoch * args.epochs,
        "test_frames": len(test.y),
        "train_digits": len(reference_data.digit_indices("train")),
        "test_digits": len(reference_data.digit_indices("test")),
        "batch_size": args.batch_size,
        "learning_rate_stage1": args.stage1_learning_rate,
        "learning_rate_stage2": args.learning_rate,
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

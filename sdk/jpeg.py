"""The raw frame as JPEG (wire codec id 2, docs/WIRE.md §6): encode a uint8 camera image, decode it safely.

Pillow is imported lazily (the ``device`` / ``cloud`` extras carry it), like zstandard in :mod:`sdk.wire`.
A JPEG frame is a uint8 image of shape (1, H, W, 3), (1, H, W, 1), (H, W, 3), (H, W, 1) or (H, W):
3 channels travel as "RGB", 1 channel as "L" (gray). The decoder checks the JPEG's size and mode against
the descriptor's shape *before* decoding any pixel, so a forged JPEG cannot make it allocate more than
the shape allows, and raises only :class:`sdk.errors.WireError` subclasses (plus
``MissingDependencyError`` without Pillow).
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

import numpy as np

from sdk.errors import CorruptPayloadError, MissingDependencyError, ShapeMismatchError

__all__ = ["MAX_SIDE", "QUALITY_RANGE", "SHAPES", "check_quality", "decode_jpeg", "encode_jpeg", "image_dims"]

#: the largest width or height a JPEG can have
MAX_SIDE = 65500
QUALITY_RANGE = (1, 95)
SHAPES = "(1, H, W, 3), (1, H, W, 1), (H, W, 3), (H, W, 1) or (H, W)"


def _image() -> Any:
    try:
        from PIL import Image
    except ImportError as exc:
        raise MissingDependencyError.for_extra("pillow", "device") from exc
    return Image


def image_dims(shape: Sequence[int]) -> tuple[int, int, int] | None:
    """(H, W, C) of a shape a JPEG frame can have (C is 1 or 3; 0 < H, W <= MAX_SIDE), else None."""
    dims = tuple(int(d) for d in shape)
    if len(dims) == 4 and dims[0] == 1:
        dims = dims[1:]
    elif len(dims) == 2:
        dims = (*dims, 1)
    if len(dims) != 3 or dims[2] not in (1, 3) or not (0 < dims[0] <= MAX_SIDE and 0 < dims[1] <= MAX_SIDE):
        return None
    return dims  # type: ignore[return-value]


def check_quality(quality: int) -> int:
    """The JPEG quality as an int; ValueError unless it is an integer in 1..95."""
    lo, hi = QUALITY_RANGE
    if isinstance(quality, bool) or not isinstance(quality, int | np.integer) or not lo <= quality <= hi:
        raise ValueError(f"jpeg_quality={quality!r} is not supported; expected an integer in {lo}..{hi}")
    return int(quality)


def encode_jpeg(image: np.ndarray, quality: int) -> bytes:
    """JPEG bytes of a uint8 frame (see :data:`SHAPES`) at ``quality`` (1..95); misuse -> ValueError."""
    quality = check_quality(quality)
    image = np.asarray(image)
    dims = image_dims(image.shape)
    if image.dtype != np.uint8 or dims is None:
        raise ValueError(
            f"JPEG is for raw uint8 frames of shape {SHAPES} (H, W <= {MAX_SIDE}); "
            f"got {image.dtype}{image.shape}"
        )
    h, w, c = dims
    pixels = np.ascontiguousarray(image.reshape((h, w) if c == 1 else (h, w, 3)))
    buf = io.BytesIO()
    _image().fromarray(pixels).save(buf, "JPEG", quality=quality)  # 2-D -> "L", (h, w, 3) -> "RGB"
    return buf.getvalue()


def decode_jpeg(payload: bytes | memoryview, shape: Sequence[int], where: str) -> np.ndarray:
    """The uint8 pixels of a JPEG payload, of exactly ``shape`` (``where`` prefixes every error)."""
    shape = tuple(shape)
    dims = image_dims(shape)
    if dims is None:
        raise ShapeMismatchError(f"{where}: codec jpeg with shape {shape}; a JPEG frame has shape {SHAPES}")
    h, w, c = dims
    mode = "L" if c == 1 else "RGB"
    Image = _image()
    corrupt = (OSError, ValueError, EOFError, SyntaxError, Image.DecompressionBombError)
    try:
        img = Image.open(io.BytesIO(payload), formats=["JPEG"])  # lazy: reads the header, no pixels
    except corrupt as exc:
        raise CorruptPayloadError(
            f"{where}: JPEG payload is corrupt ({exc}); expected a JPEG of {w}x{h} {mode}"
        ) from None
    with img:
        if img.size != (w, h) or img.mode != mode:
            raise ShapeMismatchError(
                f"{where}: JPEG payload is {img.size[0]}x{img.size[1]} {img.mode}; "
                f"the descriptor's shape {shape} needs {w}x{h} {mode}"
            )
        try:
            img.load()
            pixels = np.asarray(img, dtype=np.uint8)
        except corrupt as exc:
            raise CorruptPayloadError(
                f"{where}: JPEG payload is corrupt ({exc}); expected a JPEG of {w}x{h} {mode}"
            ) from None
    if pixels.size != h * w * c:  # Pillow decodes the size it announced; a last guard all the same
        raise CorruptPayloadError(f"{where}: JPEG decoded to {pixels.shape}; expected {shape}")
    return pixels.reshape(shape)

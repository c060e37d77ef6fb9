"""The one preprocessing function: any image input -> float32 RGB pixels at the model's size.

Training, evaluation, Keras inference and ONNX Runtime inference all call ``load_rgb`` and
``to_model_input``, so a photo is decoded, oriented, converted and resized the same way
everywhere. Normalisation (scaling pixel values) lives inside the network, so the arrays here
stay in [0, 255]. No TensorFlow here: the serving path must not import it.
"""

from __future__ import annotations

import io
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator, Sequence, Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import ImageDecodeError

log = logging.getLogger(__name__)

# The file types the package reads as images: dataset discovery, folders given to the CLI, the app.
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"})

ImageInput = Union[str, os.PathLike, bytes, Image.Image, np.ndarray]

# A photo larger than this is refused before its pixels are decoded (decompression bombs:
# a tiny PNG can claim 50,000 x 50,000 pixels, 7.5 GB once decoded).
MAX_PIXELS = 64_000_000
# Nor may either side exceed this: the strip conversion below cuts along the height, so one row
# must stay small (a 63,999,000 x 1 RGBA PNG of a few KB was under MAX_PIXELS and converted as
# one 1.3 GB strip). Panoramas from phones stay under it.
MAX_SIDE = 32_768
# Images of more than 8 bits per channel (16-bit PNG/TIFF, 32-bit int or float) take 2-4 bytes
# a pixel once decoded: a lower cap, still above any camera that writes them.
MAX_WIDE_PIXELS = 40_000_000
WIDE_MODES = frozenset({"I;16", "I;16B", "I;16L", "I;16N", "I", "F"})
ORIENTATION = 0x0112  # the EXIF tag exif_transpose reads
# Inputs bigger than this on disk are refused before they are read.
MAX_FILE_BYTES = 50 * 1024 * 1024
# The formats PIL may open: the image types we accept. Without this list PIL would also try EPS
# (which hands the file to Ghostscript), PSD, ICNS and a dozen more parsers no photo needs.
PIL_FORMATS = ("JPEG", "PNG", "BMP", "GIF", "WEBP", "TIFF")  # JPEG covers MPO (phone photos)
# Non-RGB images are converted this many pixels at a time, so a 64-megapixel RGBA or 16-bit
# photo never exists as several full-size float or RGBA copies at once.
CONVERT_STRIP_PIXELS = 1 << 20


def _open(source: ImageInput) -> Image.Image:
    if isinstance(source, Image.Image):
        return source
    if isinstance(source, np.ndarray):
        return _from_array(source)
    if isinstance(source, (bytes, bytearray)):
        data = bytes(source)
        name = "<bytes>"
    elif isinstance(source, (str, os.PathLike)):
        data, name = _read_file(Path(source))
    else:
        raise ImageDecodeError(
            f"cannot read an image from {type(source).__name__}; "
            "pass a file path, bytes, a PIL image or a HxWx3 numpy array"
        )
    if not data:
        raise ImageDecodeError(f"{name} is empty (0 bytes)")
    try:
        img = Image.open(io.BytesIO(data), formats=PIL_FORMATS)
    except UnidentifiedImageError:
        raise ImageDecodeError(f"{name} is not a readable image (unknown or corrupt format)") from None
    except Image.DecompressionBombError as exc:
        raise ImageDecodeError(f"{name} refused: {exc}") from None
    except (OSError, ValueError, SyntaxError) as exc:  # a header cut short or malformed
        raise ImageDecodeError(f"{name} could not be decoded: {exc}") from None
    img.info["source_name"] = name
    return img


def _read_file(path: Path) -> tuple[bytes, str]:
    """The file's bytes; every way a path can fail to be a readable file (a directory, a link
    loop, a path through a file, a name too long, no permission) is an ``ImageDecodeError``
    naming it, so one bad path never ends a run over many."""
    name = str(path)
    try:
        if path.is_dir():
            raise ImageDecodeError(f"{name} is a directory, not an image file")
        size = path.stat().st_size
        if size == 0:
            raise ImageDecodeError(f"{name} is empty (0 bytes)")
        if size > MAX_FILE_BYTES:
            raise ImageDecodeError(
                f"{name} is {size / 2**20:.0f} MB; images over {MAX_FILE_BYTES // 2**20} MB are refused"
            )
        return path.read_bytes(), name
    except FileNotFoundError:
        raise ImageDecodeError(f"{name}: no such file") from None
    except OSError as exc:
        raise ImageDecodeError(f"{name} cannot be read: {exc.strerror or exc}") from None


def _from_array(array: np.ndarray) -> Image.Image:
    a = np.asarray(array)
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[:, :, 0]
    if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[2] not in (3, 4)):
        raise ImageDecodeError(f"expected an HxW, HxWx3 or HxWx4 array, got shape {a.shape}")
    if a.size == 0:
        raise ImageDecodeError(f"empty image array of shape {a.shape}")
    if a.dtype != np.uint8:
        if np.issubdtype(a.dtype, np.floating):
            # Floats are taken as [0, 255] pixel values unless they all lie in [0, 1].
            scale = 255.0 if a.size and float(np.nanmax(a)) <= 1.0 else 1.0
            a = np.clip(np.nan_to_num(a) * scale, 0, 255)
        elif np.issubdtype(a.dtype, np.integer) and a.max(initial=0) > 255:
            a = a.astype(np.float32) / np.float32(65535.0 if a.max() > 4095 else 4095.0) * np.float32(255.0)
        a = np.clip(a, 0, 255).astype(np.uint8)
    return Image.fromarray(a)


def load_rgb(source: ImageInput, *, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """Open any supported input as an upright 8-bit RGB PIL image.

    Handles grayscale, 16-bit, palette, RGBA (composited on white), CMYK, animated images
    (first frame) and EXIF orientation. Raises ``ImageDecodeError`` for anything unreadable.

    >>> load_rgb("photo.jpg").mode
    'RGB'
    """
    img = _open(source)
    name = img.info.get("source_name", "image")
    width, height = img.size
    if width < 1 or height < 1:
        raise ImageDecodeError(f"{name} has no pixels ({width}x{height})")
    if width > MAX_SIDE or height > MAX_SIDE:
        raise ImageDecodeError(
            f"{name} is {width}x{height} pixels; images wider or taller than {MAX_SIDE:,} pixels are "
            "refused (possible decompression bomb)"
        )
    if width * height > max_pixels:
        raise ImageDecodeError(
            f"{name} is {width}x{height} pixels; images over {max_pixels:,} pixels are refused "
            "(possible decompression bomb)"
        )
    wide_cap = min(max_pixels, MAX_WIDE_PIXELS)
    if img.mode in WIDE_MODES and width * height > wide_cap:
        raise ImageDecodeError(
            f"{name} is {width}x{height} pixels of {img.mode} (more than 8 bits per channel); such "
            f"images over {wide_cap:,} pixels are refused"
        )
    try:
        if getattr(img, "n_frames", 1) > 1:
            img.seek(0)
        # An image opened here is ours to turn in place (no copy); a caller's PIL image is not.
        # Upright images are left alone: for a caller's image exif_transpose would copy it
        # (192 MB for 64 Mpx), e.g. the app's decoded photo handed on to each model.
        if img.getexif().get(ORIENTATION, 1) not in (None, 1):
            img = ImageOps.exif_transpose(img, in_place=not isinstance(source, Image.Image)) or img
        return _to_rgb(img)
    except ImageDecodeError:
        raise
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        # Truncated or corrupt data only shows up when the pixels are decoded.
        raise ImageDecodeError(f"{name} could not be decoded: {exc}") from None


def _to_rgb(img: Image.Image) -> Image.Image:
    """The image as 8-bit RGB, converted in horizontal strips (``CONVERT_STRIP_PIXELS``): each
    conversion below is per pixel, so strips give exactly the whole image's result, while the
    temporaries (float64 for 16-bit, RGBA and its white background) stay a strip's size."""
    if img.mode == "RGB":
        img.load()
        return img
    img.load()
    width, height = img.size
    top = None
    if img.mode in WIDE_MODES:  # one scale for the whole image: from its extrema, no copy
        top = 65535.0 if max(0, img.getextrema()[1]) > 255 else 255.0
    rows = max(1, CONVERT_STRIP_PIXELS // max(1, width))
    if rows >= height:
        return _strip_to_rgb(img, top)
    out = Image.new("RGB", img.size)
    for y in range(0, height, rows):
        out.paste(_strip_to_rgb(img.crop((0, y, width, min(height, y + rows))), top), (0, y))
    return out


def _strip_to_rgb(img: Image.Image, top: float | None) -> Image.Image:
    mode = img.mode
    if top is not None:
        a = np.asarray(img, dtype=np.float64)
        return Image.fromarray(np.clip(a / top * 255.0, 0, 255).astype(np.uint8)).convert("RGB")
    if mode == "P":
        img = img.convert("RGBA")
        mode = "RGBA"
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")


def _resized(img: Image.Image, size: int) -> np.ndarray:
    """The resized image's own pixels (uint8 for RGB), not yet converted to float32."""
    if img.size != (size, size):
        img = img.resize((size, size), Image.BILINEAR)
    return np.asarray(img)


def to_model_input(img: Image.Image, size: int) -> np.ndarray:
    """Resize an RGB image to ``size`` x ``size`` (bilinear) as float32 HxWx3 in [0, 255]."""
    # uint8 -> float32 is exact, so this equals np.asarray(img, dtype=np.float32).
    return _resized(img, size).astype(np.float32)


def preprocess(source: ImageInput, size: int) -> np.ndarray:
    """``load_rgb`` + ``to_model_input``: the whole path from an input to the network's input."""
    return to_model_input(load_rgb(source), size)


def _preprocess_into(out: np.ndarray, source: ImageInput, size: int) -> None:
    """``preprocess`` written straight into ``out`` (a float32 row of a batch): the same
    pixels, without a float32 temporary per image."""
    out[...] = _resized(load_rgb(source), size)


def preprocess_batch(
    sources: Sequence[ImageInput], size: int, *, workers: int | None = None
) -> np.ndarray:
    """Preprocess several inputs into one ``(N, size, size, 3)`` float32 array.

    PIL releases the GIL while decoding and resizing, so a small thread pool pays off.
    Any unreadable input raises ``ImageDecodeError`` naming it.
    """
    if len(sources) == 0:
        return np.zeros((0, size, size, 3), np.float32)
    out = np.empty((len(sources), size, size, 3), np.float32)

    def work(i: int) -> None:
        _preprocess_into(out[i], sources[i], size)

    if len(sources) == 1:
        work(0)
    else:
        with ThreadPoolExecutor(max_workers=workers or min(4, os.cpu_count() or 1)) as pool:
            list(pool.map(work, range(len(sources))))
    return out


def try_preprocess_many(
    paths: Iterable[ImageInput], size: int
) -> tuple[np.ndarray, list[int], list[tuple[int, str]]]:
    """Like ``preprocess_batch`` but skips bad inputs: returns (array, kept indices, failures)."""
    paths = list(paths)
    results: list[np.ndarray | None] = [None] * len(paths)
    failures: list[tuple[int, str]] = []

    def work(i: int) -> None:
        try:
            results[i] = preprocess(paths[i], size)
        except ImageDecodeError as exc:
            failures.append((i, str(exc)))

    with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
        list(pool.map(work, range(len(paths))))
    kept = [i for i, r in enumerate(results) if r is not None]
    array = np.stack([results[i] for i in kept]) if kept else np.zeros((0, size, size, 3), np.float32)
    return array, kept, sorted(failures)


# ---------------------------------------------------------------------------------------------
# Batches that skip unreadable files: the one decode loop for caching, evaluation and tf.data.

@dataclass
class SkippedImages:
    """Counts unreadable images instead of crashing halfway through an epoch."""

    items: list[tuple[str, str]] = field(default_factory=list)

    def add(self, path: str, reason: str) -> None:
        self.items.append((path, reason))

    def warn(self, what: str) -> None:
        if self.items:
            log.warning(
                "skipped %d unreadable image(s) in %s; first: %s", len(self.items), what, self.items[0][1]
            )

    def __len__(self) -> int:
        return len(self.items)


def iter_batches(
    paths: Sequence[str], image_size: int, batch_size: int, *, skipped: SkippedImages | None = None
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield ``(pixels, indices)``: decoded float32 batches and the positions they hold.

    Unreadable files are left out of the batch and recorded in ``skipped``.
    """
    for start in range(0, len(paths), batch_size):
        chunk = paths[start : start + batch_size]
        pixels, kept, failures = try_preprocess_many(chunk, image_size)
        for i, reason in failures:
            if skipped is not None:
                skipped.add(chunk[i], reason)
        if len(kept):
            yield pixels, np.asarray(kept, dtype=np.int64) + start

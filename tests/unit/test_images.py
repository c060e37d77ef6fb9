import io

import numpy as np
import pytest
from PIL import Image

from sports_classifier.errors import ImageDecodeError
from sports_classifier.images import load_rgb, preprocess, preprocess_batch, try_preprocess_many


def _save(img: Image.Image, path, **kw):
    img.save(path, **kw)
    return path


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "CMYK", "LA", "I;16", "1"])
def test_every_mode_becomes_rgb(tmp_path, mode):
    img = Image.new("RGB", (20, 10), (200, 30, 40)).convert(mode)
    ext = "jpg" if mode in ("L", "CMYK") else ("tif" if mode == "CMYK" else "png")
    path = _save(img, tmp_path / f"x.{ext}")
    out = load_rgb(path)
    assert out.mode == "RGB" and out.size == (20, 10)


def test_sixteen_bit_png_keeps_its_range(tmp_path):
    a = (np.linspace(0, 65535, 64 * 64).reshape(64, 64)).astype(np.uint16)
    path = tmp_path / "deep.png"
    Image.fromarray(a).save(path)
    out = np.asarray(load_rgb(path))
    assert out.min() == 0 and out.max() >= 250  # scaled from 16 bits, not clipped


def test_rgba_is_composited_on_white(tmp_path):
    path = _save(Image.new("RGBA", (4, 4), (0, 0, 0, 0)), tmp_path / "clear.png")
    assert np.asarray(load_rgb(path)).min() == 255


def test_exif_orientation_is_applied(tmp_path):
    img = Image.new("RGB", (40, 20), (10, 20, 30))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise when displayed
    path = _save(img, tmp_path / "rot.jpg", exif=exif.tobytes())
    assert load_rgb(path).size == (20, 40)


def test_animated_gif_uses_first_frame(tmp_path):
    frames = [Image.new("RGB", (8, 8), c) for c in ((255, 0, 0), (0, 0, 255))]
    path = tmp_path / "anim.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:])
    assert np.asarray(load_rgb(path))[0, 0, 0] > 200


def test_inputs_of_every_kind_give_the_same_pixels(tmp_path):
    rng = np.random.default_rng(0)
    a = rng.integers(0, 255, (30, 30, 3), dtype=np.uint8)
    path = _save(Image.fromarray(a), tmp_path / "a.png")
    from_path = preprocess(path, 16)
    for source in (str(path), path.read_bytes(), Image.fromarray(a), a, a.astype(np.float32)):
        np.testing.assert_array_equal(preprocess(source, 16), from_path)
    assert from_path.dtype == np.float32 and from_path.shape == (16, 16, 3)


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda p: p.write_bytes(b""), "empty"),
        (lambda p: p.write_text("not an image at all"), "not a readable image"),
        (lambda p: p.mkdir(), "directory"),
    ],
)
def test_bad_files_raise_image_decode_error(tmp_path, make, message):
    path = tmp_path / "bad.jpg"
    make(path)
    with pytest.raises(ImageDecodeError, match=message):
        load_rgb(path)


def test_missing_file(tmp_path):
    with pytest.raises(ImageDecodeError, match="no such file"):
        load_rgb(tmp_path / "nope.jpg")


def test_truncated_jpeg_is_refused(tmp_path):
    buf = io.BytesIO()
    Image.new("RGB", (64, 64), (1, 2, 3)).save(buf, "JPEG")
    path = tmp_path / "cut.jpg"
    path.write_bytes(buf.getvalue()[:200])
    with pytest.raises(ImageDecodeError):
        load_rgb(path)


def test_decompression_bomb_is_refused_before_decoding(tmp_path):
    # A PNG whose header claims 50,000 x 50,000 pixels; decoding it would need 7.5 GB.
    import struct
    import zlib

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", 50_000, 50_000, 8, 2, 0, 0, 0)
    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 100)) + chunk(b"IEND", b"")
    path = tmp_path / "bomb.png"
    path.write_bytes(png)
    with pytest.raises(ImageDecodeError, match="refused"):
        load_rgb(path)


def test_bad_array_shape():
    with pytest.raises(ImageDecodeError, match="shape"):
        preprocess(np.zeros((4, 4, 5)), 8)


def test_batch_and_skipping(tmp_path):
    good = _save(Image.new("RGB", (5, 5)), tmp_path / "good.png")
    bad = tmp_path / "bad.jpg"
    bad.write_text("x")
    assert preprocess_batch([good, good], 8).shape == (2, 8, 8, 3)
    with pytest.raises(ImageDecodeError, match="bad.jpg"):
        preprocess_batch([good, bad], 8)
    array, kept, failures = try_preprocess_many([good, bad, good], 8)
    assert array.shape == (2, 8, 8, 3) and kept == [0, 2] and failures[0][0] == 1

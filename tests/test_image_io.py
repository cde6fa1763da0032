"""Tests of car_desktop.engine.image_io (and the header size of car_desktop.imagefiles): every kind of
file a user may drop on the app."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image, ImageOps

from car_desktop.engine.errors import ImageLoadError
from car_desktop.engine.image_io import _apply_orientation, content_hash, load_image
from car_desktop.imagefiles import ImageSize, image_size, max_pixels


def _check_rgb8(arr: np.ndarray) -> None:
    assert arr.dtype == np.uint8
    assert arr.ndim == 3 and arr.shape[2] == 3
    assert arr.flags.c_contiguous and arr.flags.writeable


def _png_header_only(path: Path, width: int, height: int) -> None:
    """A PNG whose header claims width x height, with a tiny (bogus) pixel stream."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 16))
        + chunk(b"IEND", b"")
    )


# --- real photos ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["astronaut.jpg", "chelsea.jpg", "coffee.jpg"])
def test_real_photos_load(data_dir: Path, name: str) -> None:
    arr = load_image(data_dir / name)
    _check_rgb8(arr)
    assert max(arr.shape[:2]) == 320
    assert image_size(data_dir / name) == ImageSize(width=arr.shape[1], height=arr.shape[0])
    assert arr.std() > 20  # a real photo, not a blank frame


# --- pixel formats -------------------------------------------------------------------------------


def test_rgb_png_round_trip(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    src = rng.integers(0, 256, (7, 11, 3), dtype=np.uint8)
    Image.fromarray(src).save(tmp_path / "a.png")
    out = load_image(tmp_path / "a.png")
    _check_rgb8(out)
    np.testing.assert_array_equal(out, src)


def test_one_by_one(tmp_path: Path) -> None:
    Image.new("RGB", (1, 1), (10, 20, 30)).save(tmp_path / "px.png")
    out = load_image(tmp_path / "px.png")
    assert out.shape == (1, 1, 3)
    assert out[0, 0].tolist() == [10, 20, 30]
    assert image_size(tmp_path / "px.png") == (1, 1)


def test_greyscale_becomes_rgb(tmp_path: Path) -> None:
    grey = np.arange(12, dtype=np.uint8).reshape(3, 4) * 20
    Image.fromarray(grey, "L").save(tmp_path / "g.png")
    out = load_image(tmp_path / "g.png")
    _check_rgb8(out)
    for c in range(3):
        np.testing.assert_array_equal(out[..., c], grey)


def test_bilevel_becomes_rgb(tmp_path: Path) -> None:
    im = Image.new("1", (4, 2), 0)
    im.putpixel((1, 0), 1)
    im.save(tmp_path / "b.png")
    out = load_image(tmp_path / "b.png")
    assert out[0, 1].tolist() == [255, 255, 255]
    assert out[0, 0].tolist() == [0, 0, 0]


def test_rgba_composited_on_white(tmp_path: Path) -> None:
    rgba = np.zeros((2, 3, 4), np.uint8)
    rgba[0, 0] = (200, 0, 0, 255)   # opaque red
    rgba[0, 1] = (200, 0, 0, 0)     # fully transparent -> white
    rgba[0, 2] = (0, 0, 0, 128)     # half-transparent black -> mid grey
    Image.fromarray(rgba, "RGBA").save(tmp_path / "t.png")
    out = load_image(tmp_path / "t.png")
    _check_rgb8(out)
    assert out[0, 0].tolist() == [200, 0, 0]
    assert out[0, 1].tolist() == [255, 255, 255]
    assert out[0, 2].tolist() == [127, 127, 127]


def test_la_composited_on_white(tmp_path: Path) -> None:
    la = np.zeros((1, 2, 2), np.uint8)
    la[0, 0] = (50, 255)
    la[0, 1] = (50, 0)
    Image.fromarray(la, "LA").save(tmp_path / "la.png")
    out = load_image(tmp_path / "la.png")
    assert out[0, 0].tolist() == [50, 50, 50]
    assert out[0, 1].tolist() == [255, 255, 255]


def test_palette_with_transparency(tmp_path: Path) -> None:
    im = Image.new("P", (2, 1))
    im.putpalette([0, 0, 255, 0, 255, 0] + [0] * 762)
    im.putpixel((0, 0), 0)
    im.putpixel((1, 0), 1)
    im.save(tmp_path / "p.png", transparency=0)
    out = load_image(tmp_path / "p.png")
    assert out[0, 0].tolist() == [255, 255, 255]  # transparent index -> white
    assert out[0, 1].tolist() == [0, 255, 0]


def test_16bit_grey_scaled_not_clipped(tmp_path: Path) -> None:
    values = np.array([[0, 450, 1000, 32768, 65280, 65535]], np.uint16)
    assert cv2.imwrite(str(tmp_path / "g16.png"), values)
    assert Image.open(tmp_path / "g16.png").mode.startswith("I")
    out = load_image(tmp_path / "g16.png")
    expected = np.rint(values.astype(np.float64) * 255 / 65535).astype(np.uint8)
    np.testing.assert_array_equal(out[..., 0], expected)
    np.testing.assert_array_equal(out[..., 1], expected)
    assert out[0, 2, 0] == 4  # clipping would have given 255


def test_16bit_rgb_scaled_with_rounding(tmp_path: Path) -> None:
    # 65280 -> 254 and 450 -> 2 with full-range rounding; PIL's high-byte truncation gives 255 and 1.
    rgb = np.array([[[65535, 32768, 0], [65280, 450, 1000]]], np.uint16)
    assert cv2.imwrite(str(tmp_path / "c16.png"), rgb[..., ::-1])
    out = load_image(tmp_path / "c16.png")
    expected = np.rint(rgb.astype(np.float64) * 255 / 65535).astype(np.uint8)
    np.testing.assert_array_equal(out, expected)


def test_16bit_rgba_composited(tmp_path: Path) -> None:
    rgba = np.array([[[0, 0, 0, 65535], [0, 0, 0, 0]]], np.uint16)
    assert cv2.imwrite(str(tmp_path / "c16a.png"), rgba[..., [2, 1, 0, 3]])
    out = load_image(tmp_path / "c16a.png")
    assert out[0, 0].tolist() == [0, 0, 0]
    assert out[0, 1].tolist() == [255, 255, 255]


def test_cmyk_jpeg_to_rgb(tmp_path: Path) -> None:
    Image.new("RGB", (16, 16), (255, 0, 0)).convert("CMYK").save(tmp_path / "k.jpg", quality=95)
    assert Image.open(tmp_path / "k.jpg").mode == "CMYK"
    out = load_image(tmp_path / "k.jpg")
    _check_rgb8(out)
    r, g, b = out[8, 8].astype(int)
    assert r > 230 and g < 25 and b < 25


def test_multiframe_gif_first_frame(tmp_path: Path) -> None:
    frames = [Image.new("RGB", (8, 8), c) for c in [(255, 0, 0), (0, 0, 255)]]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:], duration=100)
    out = load_image(tmp_path / "anim.gif")
    assert out[4, 4].tolist() == [255, 0, 0]


def test_multipage_tiff_first_page(tmp_path: Path) -> None:
    pages = [Image.new("RGB", (8, 6), c) for c in [(0, 200, 0), (9, 9, 9)]]
    pages[0].save(tmp_path / "pages.tif", save_all=True, append_images=pages[1:])
    out = load_image(tmp_path / "pages.tif")
    assert out.shape == (6, 8, 3)
    assert out[3, 3].tolist() == [0, 200, 0]


# --- orientation ---------------------------------------------------------------------------------


def test_exif_orientation_6_rotates(tmp_path: Path) -> None:
    # Stored 48 wide x 24 tall; a red 8x8 block in the stored top-left corner.
    stored = np.full((24, 48, 3), 255, np.uint8)
    stored[:8, :8] = (255, 0, 0)
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    Image.fromarray(stored).save(tmp_path / "rot.jpg", quality=98, subsampling=0, exif=exif)

    out = load_image(tmp_path / "rot.jpg")
    assert out.shape == (48, 24, 3)
    assert image_size(tmp_path / "rot.jpg") == ImageSize(width=24, height=48)
    # A clockwise quarter turn moves the stored top-left corner to the displayed top-right.
    tr = out[2:6, -6:-2].reshape(-1, 3).mean(axis=0)
    tl = out[2:6, 2:6].reshape(-1, 3).mean(axis=0)
    bl = out[-6:-2, 2:6].reshape(-1, 3).mean(axis=0)
    assert tr[0] > 200 and tr[1] < 60 and tr[2] < 60
    assert tl.min() > 200 and bl.min() > 200
    # Whole-image check (JPEG: compare on average, edges ring a little).
    assert np.abs(out.astype(int) - np.rot90(stored, k=-1).astype(int)).mean() < 3


@pytest.mark.parametrize("orientation", range(1, 9))
def test_numpy_orientation_matches_pil(orientation: int) -> None:
    src = np.arange(3 * 5 * 3, dtype=np.uint8).reshape(3, 5, 3)
    im = Image.fromarray(src)
    exif = im.getexif()
    exif[0x0112] = orientation
    im.info["exif"] = exif.tobytes()
    ref = np.asarray(ImageOps.exif_transpose(im))
    np.testing.assert_array_equal(_apply_orientation(src, orientation), ref)


# --- errors --------------------------------------------------------------------------------------


def _assert_load_error(path: Path, *words: str) -> None:
    with pytest.raises(ImageLoadError) as info:
        load_image(path)
    msg = str(info.value)
    assert path.name in msg
    for w in words:
        assert w in msg.lower()


def test_missing_file(tmp_path: Path) -> None:
    _assert_load_error(tmp_path / "nope.jpg", "no such file")
    with pytest.raises(ImageLoadError):
        image_size(tmp_path / "nope.jpg")


def test_directory(tmp_path: Path) -> None:
    d = tmp_path / "folder.png"
    d.mkdir()
    _assert_load_error(d, "folder")


def test_empty_file(tmp_path: Path) -> None:
    (tmp_path / "empty.png").write_bytes(b"")
    _assert_load_error(tmp_path / "empty.png", "empty")


def test_not_an_image(tmp_path: Path) -> None:
    (tmp_path / "notes.jpg").write_text("shopping list: milk, eggs\n")
    _assert_load_error(tmp_path / "notes.jpg", "not an image")
    with pytest.raises(ImageLoadError):
        image_size(tmp_path / "notes.jpg")


def test_truncated_jpeg(tmp_path: Path, data_dir: Path) -> None:
    data = (data_dir / "chelsea.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 2])
    _assert_load_error(tmp_path / "cut.jpg", "corrupt or truncated")


def test_corrupt_png(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(tmp_path / "ok.png")
    data = bytearray((tmp_path / "ok.png").read_bytes())
    data[60:200] = bytes(140)  # zero out the middle of the compressed pixel stream
    (tmp_path / "bad.png").write_bytes(bytes(data))
    _assert_load_error(tmp_path / "bad.png")


def test_garbage_with_jpeg_magic(tmp_path: Path) -> None:
    (tmp_path / "junk.jpg").write_bytes(b"\xff\xd8\xff\xe0" + bytes(range(256)) * 4)
    _assert_load_error(tmp_path / "junk.jpg")


def test_non_ascii_file_name(tmp_path: Path) -> None:
    p = tmp_path / "ünïcödé 猫 фото.png"
    Image.new("RGB", (5, 4), (1, 2, 3)).save(p)
    out = load_image(p)
    assert out.shape == (4, 5, 3) and out[0, 0].tolist() == [1, 2, 3]
    assert image_size(p) == ImageSize(width=5, height=4)


def test_non_ascii_16bit_colour(tmp_path: Path) -> None:
    p = tmp_path / "tiefe_farbe_ß.png"
    ok, buf = cv2.imencode(".png", np.full((2, 2, 3), 65280, np.uint16))
    assert ok
    p.write_bytes(buf.tobytes())
    assert load_image(p)[0, 0].tolist() == [254, 254, 254]


# PIL warns about the size before we refuse it (the CLI and GUI silence that warning; pytest shows it).
@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_too_many_pixels_refused_before_decoding(tmp_path: Path) -> None:
    p = tmp_path / "huge.png"
    _png_header_only(p, 20000, 15000)  # 300 MP: above our limit, below PIL's own bomb error
    assert max_pixels() < 20000 * 15000
    with pytest.raises(ImageLoadError, match=r"too large.*300 megapixels"):
        load_image(p)


def test_absurd_size_refused_with_our_message(tmp_path: Path) -> None:
    p = tmp_path / "bomb.png"
    _png_header_only(p, 40000, 40000)  # 1.6 GP: PIL's DecompressionBombError territory
    with pytest.raises(ImageLoadError, match="too large"):
        load_image(p)
    with pytest.raises(ImageLoadError, match="too large"):
        image_size(p)


@pytest.mark.slow
def test_80_megapixel_image_loads(tmp_path: Path) -> None:
    # Greyscale JPEG keeps encoding fast; 10000x8000 = 80 MP is above PIL's default warning level.
    im = Image.new("L", (10000, 8000), 90)
    im.save(tmp_path / "big.jpg", quality=50)
    del im
    assert image_size(tmp_path / "big.jpg") == ImageSize(width=10000, height=8000)
    out = load_image(tmp_path / "big.jpg")
    assert out.shape == (8000, 10000, 3)
    assert abs(int(out[4000, 5000, 0]) - 90) <= 2


# --- content hash --------------------------------------------------------------------------------


def test_content_hash() -> None:
    rng = np.random.default_rng(2)
    a = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)
    h = content_hash(a)
    assert isinstance(h, str) and len(h) == 32
    assert content_hash(a.copy()) == h
    assert content_hash(np.asfortranarray(a)) == h  # layout does not matter, pixels do
    b = a.copy()
    b[0, 0, 0] ^= 1
    assert content_hash(b) != h
    assert content_hash(a.reshape(8, 6, 3)) != h  # same bytes, other shape
    assert content_hash(a.astype(np.uint16)) != h

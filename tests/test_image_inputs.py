"""Every common kind of image file reads correctly (open_image), and bad pixel tensors are rejected with a
message (to_pil_list) instead of silently giving wrong images."""
import logging
import struct
import zlib

import numpy as np
import pytest
import torch
from PIL import Image, TiffImagePlugin

from ditfuse_core import image_input
from ditfuse_core.image_input import ImageReadError, open_image, to_pil_list


def _gradient16(h=16, w=16):
    return np.linspace(0, 65535, h * w).round().astype(np.uint16).reshape(h, w)


def _png16(path, arr, color_type):
    """A 16-bit PNG written by hand (Pillow cannot write 16-bit RGB/RGBA): color_type 0 gray, 2 RGB, 6 RGBA."""
    arr = arr if arr.ndim == 3 else arr[..., None]
    h, w = arr.shape[:2]
    raw = b"".join(b"\x00" + arr[y].astype(">u2").tobytes() for y in range(h))

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, color_type, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))
    return path


def _header(path):
    with Image.open(path) as im:
        return im.mode, dict(im.info)


def _rgb(im):
    assert isinstance(im, Image.Image) and im.mode == "RGB"
    return np.asarray(im)


def _gray(im):
    a = _rgb(im)
    assert (a[..., 0] == a[..., 1]).all() and (a[..., 0] == a[..., 2]).all()
    return a[..., 0]


# ---- open_image: bit depths -------------------------------------------------------------------------

def test_16bit_gray_png_is_scaled_not_clipped(tmp_path):
    g = _gradient16()
    g[0, 0], g[0, 1], g[0, 2], g[-1, -1] = 0, 32768, 128, 65535
    p = tmp_path / "g16.png"
    Image.fromarray(g).save(p)
    assert _header(p)[0].startswith("I")
    out = _gray(open_image(p))
    assert out[-1, -1] == 255 and out[0, 0] == 0 and out[0, 1] == 128 and out[0, 2] == 0
    np.testing.assert_array_equal(out, np.rint(g / 257.0).astype(np.uint8))
    assert out.mean() == pytest.approx(127.5, abs=1)            # the old convert("RGB") gave ~255
    _png16(tmp_path / "hand.png", g, 0)                         # a 16-bit gray PNG from another writer
    np.testing.assert_array_equal(_gray(open_image(tmp_path / "hand.png")), out)


def test_16bit_tiff_and_32bit_int_tiff(tmp_path):
    g = _gradient16()
    Image.fromarray(g).save(tmp_path / "g16.tif")
    want = np.rint(g / 257.0).astype(np.uint8)
    np.testing.assert_array_equal(_gray(open_image(tmp_path / "g16.tif")), want)
    # Pillow writes 16-bit data it holds as mode "I" into a 32-bit TIFF: values ≤ 65535 read as 16-bit
    Image.fromarray(g.astype(np.int32)).save(tmp_path / "i32.tif")
    assert _header(tmp_path / "i32.tif")[0] == "I"
    np.testing.assert_array_equal(_gray(open_image(tmp_path / "i32.tif")), want)
    Image.fromarray(np.array([[-5, 100]], np.int32)).save(tmp_path / "neg.tif")
    with pytest.raises(ValueError, match="neg.tif.*negative"):
        open_image(tmp_path / "neg.tif")


def test_16bit_rgb_and_rgba_png_are_scaled(tmp_path):
    g = _gradient16()
    rgb = np.stack([g, g[::-1], np.full_like(g, 65535)], -1)
    out = _rgb(open_image(_png16(tmp_path / "rgb16.png", rgb, 2)))
    assert np.abs(out.astype(int) - rgb / 257.0).max() <= 1      # Pillow keeps the high byte
    assert out[..., 2].min() == 255 and out.mean() > 100
    rgba = np.concatenate([rgb, np.full_like(g, 65535)[..., None]], -1)
    np.testing.assert_array_equal(_rgb(open_image(_png16(tmp_path / "rgba16.png", rgba, 6))), out)


def test_16bit_rgb_tiff(tmp_path):
    tifffile = pytest.importorskip("tifffile")
    g = _gradient16()
    rgb = np.stack([g, g[::-1], np.full_like(g, 32768)], -1)
    tifffile.imwrite(tmp_path / "rgb16.tif", rgb, photometric="rgb")
    out = _rgb(open_image(tmp_path / "rgb16.tif"))
    assert np.abs(out.astype(int) - rgb / 257.0).max() <= 1


def test_float_tiff_in_0_1_is_scaled_and_others_rejected(tmp_path):
    f = np.linspace(0, 1, 256, dtype=np.float32).reshape(16, 16)
    Image.fromarray(f, mode="F").save(tmp_path / "f.tif")
    np.testing.assert_array_equal(_gray(open_image(tmp_path / "f.tif")), np.rint(f * 255).astype(np.uint8))
    Image.fromarray(f * 300, mode="F").save(tmp_path / "kelvin.tif")
    with pytest.raises(ValueError, match=r"kelvin\.tif.*0\.\.1"):
        open_image(tmp_path / "kelvin.tif")
    f[3, 3] = np.nan
    Image.fromarray(f, mode="F").save(tmp_path / "nan.tif")
    with pytest.raises(ValueError, match=r"nan\.tif.*NaN"):
        open_image(tmp_path / "nan.tif")


# ---- open_image: modes ---------------------------------------------------------------------------

def test_8bit_gray_and_rgb_as_stored(tmp_path):
    rng = np.random.default_rng(0)
    g = rng.integers(0, 256, (12, 20), dtype=np.uint8)
    Image.fromarray(g).save(tmp_path / "g.png")
    np.testing.assert_array_equal(_gray(open_image(tmp_path / "g.png")), g)
    c = rng.integers(0, 256, (12, 20, 3), dtype=np.uint8)
    Image.fromarray(c).save(tmp_path / "c.png")
    np.testing.assert_array_equal(_rgb(open_image(str(tmp_path / "c.png"))), c)


def test_rgba_is_composited_over_black(tmp_path, caplog):
    image_input._warned.discard("alpha")
    px = np.zeros((2, 3, 4), np.uint8)
    px[..., :3] = (200, 100, 50)
    px[..., 3] = [[255, 128, 0], [255, 255, 255]]
    Image.fromarray(px, "RGBA").save(tmp_path / "a.png")
    with caplog.at_level(logging.WARNING, logger="ditfuse_core.image_input"):
        out = _rgb(open_image(tmp_path / "a.png")).astype(int)
        open_image(tmp_path / "a.png")
    assert (out[0, 0] == (200, 100, 50)).all() and (out[1] == (200, 100, 50)).all()
    assert np.abs(out[0, 1] - np.array([200, 100, 50]) * 128 / 255).max() <= 1
    assert (out[0, 2] == 0).all()                                # fully transparent = no signal
    warnings = [r for r in caplog.records if "composited over black" in r.getMessage()]
    assert len(warnings) == 1 and "a.png" in warnings[0].getMessage()  # once per process
    # an opaque RGBA or LA image is just its colours, and needs no warning
    caplog.clear()
    px[..., 3] = 255
    Image.fromarray(px, "RGBA").save(tmp_path / "opaque.png")
    Image.fromarray(np.stack([px[..., 0], px[..., 3]], -1), "LA").save(tmp_path / "la.png")
    with caplog.at_level(logging.DEBUG, logger="ditfuse_core.image_input"):
        assert (_rgb(open_image(tmp_path / "opaque.png")) == (200, 100, 50)).all()
        assert (_gray(open_image(tmp_path / "la.png")) == 200).all()
    assert not caplog.records


def test_palette_with_and_without_transparency(tmp_path):
    pal = Image.new("P", (4, 2))
    pal.putpalette([255, 0, 0, 0, 255, 0, 0, 0, 255] + [0] * (256 * 3 - 9))
    pal.putdata([0, 1, 2, 0, 1, 2, 0, 1])
    pal.save(tmp_path / "p.png")
    out = _rgb(open_image(tmp_path / "p.png"))
    assert (out[0, 0] == (255, 0, 0)).all() and (out[0, 1] == (0, 255, 0)).all() and (out[0, 2] == (0, 0, 255)).all()
    pal.save(tmp_path / "pt.png", transparency=1)                 # green is transparent
    assert _header(tmp_path / "pt.png")[1].get("transparency") is not None
    out = _rgb(open_image(tmp_path / "pt.png"))
    assert (out[0, 0] == (255, 0, 0)).all() and (out[0, 1] == 0).all() and (out[1, 0] == 0).all()
    pal.save(tmp_path / "p.gif", transparency=2)
    out = _rgb(open_image(tmp_path / "p.gif"))
    assert (out[0, 0] == (255, 0, 0)).all() and (out[0, 2] == 0).all()


def test_cmyk_jpeg(tmp_path):
    Image.new("CMYK", (16, 16), (0, 255, 255, 0)).save(tmp_path / "cmyk.jpg", quality=95)  # red
    out = _rgb(open_image(tmp_path / "cmyk.jpg")).astype(int)
    assert np.abs(out - (255, 0, 0)).max() <= 8


def test_bilevel(tmp_path):
    b = Image.new("1", (5, 3))
    b.putpixel((1, 1), 1)
    b.save(tmp_path / "b.png")
    out = _gray(open_image(tmp_path / "b.png"))
    assert out[1, 1] == 255 and out.sum() == 255


def test_exif_orientation_is_applied(tmp_path):
    a = np.zeros((20, 40, 3), np.uint8)
    a[:, :20] = (255, 0, 0)                                       # stored: left red, right blue
    a[:, 20:] = (0, 0, 255)
    im = Image.fromarray(a)
    exif = im.getexif()
    exif[0x0112] = 6                                              # display rotated 90° clockwise
    im.save(tmp_path / "phone.jpg", exif=exif, quality=95)
    out = _rgb(open_image(tmp_path / "phone.jpg")).astype(int)
    assert out.shape == (40, 20, 3)                               # upright: tall
    assert np.abs(out[5, 10] - (255, 0, 0)).max() < 30            # the stored left is now the top
    assert np.abs(out[35, 10] - (0, 0, 255)).max() < 30


def test_tiff_orientation_is_applied(tmp_path):
    """Uncompressed TIFFs with orientation 5–8 come out scrambled when Pillow memory-maps them."""
    g = np.zeros((20, 40), np.uint8)
    g[:, :20] = 255                                               # stored: left white, right black
    tags = TiffImagePlugin.ImageFileDirectory_v2()
    tags[0x0112] = 6
    for compression in (None, "tiff_lzw"):
        Image.fromarray(g).save(tmp_path / "r.tif", tiffinfo=tags, compression=compression)
        out = _gray(open_image(tmp_path / "r.tif"))
        np.testing.assert_array_equal(out, np.rot90(g, -1))       # upright: top white, bottom black


# ---- open_image: bad files -----------------------------------------------------------------------

def test_truncated_png_is_rejected_naming_the_file(tmp_path):
    rng = np.random.default_rng(1)
    Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(tmp_path / "full.png")
    data = (tmp_path / "full.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"cannot read image '.*cut\.png': .*truncated"):
        open_image(tmp_path / "cut.png")


def test_text_file_named_png_and_missing_file(tmp_path):
    (tmp_path / "notes.png").write_text("not an image\n")
    with pytest.raises(ImageReadError, match=r"cannot read image '.*notes\.png': not an image"):
        open_image(tmp_path / "notes.png")
    with pytest.raises(ValueError, match=r"cannot read image '.*missing\.png': no such file"):
        open_image(tmp_path / "missing.png")
    with pytest.raises(ValueError, match="directory"):
        open_image(tmp_path)


# ---- to_pil_list ---------------------------------------------------------------------------------

def _old_to_pil_list(t):
    """to_pil_list's conversion of a float tensor before validation was added."""
    t = t.detach().cpu().float()
    return [Image.fromarray((x.clamp(0, 1).numpy() * 255.0).round().astype(np.uint8)).convert("RGB") for x in t]


def test_valid_tensor_is_unchanged():
    t = torch.rand(2, 9, 7, 3, generator=torch.Generator().manual_seed(3))
    t[0, 0, 0] = 0.0
    t[0, 0, 1] = 1.0
    t[1, 0, 0] = 1.0005                                           # rounding noise is clamped, as before
    for got, want in zip(to_pil_list(t), _old_to_pil_list(t)):
        assert got.mode == "RGB" and got.tobytes() == want.tobytes()
    assert to_pil_list(t[0])[0].tobytes() == _old_to_pil_list(t[:1])[0].tobytes()
    arr = t[0].numpy().astype(np.float64)
    assert to_pil_list(arr)[0].tobytes() == _old_to_pil_list(t[:1])[0].tobytes()


def test_resampling_overshoot_is_clamped():
    """ComfyUI's bicubic Image Scale does not clamp; its ringing is clamped here as ComfyUI does on save."""
    x = (torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(0)) > 0.5).float()
    up = torch.nn.functional.interpolate(x, size=(64, 64), mode="bicubic").permute(0, 2, 3, 1)
    assert up.max() > 1.1 and up.min() < -0.1
    assert to_pil_list(up)[0].tobytes() == _old_to_pil_list(up)[0].tobytes()


def test_0_255_float_tensor_is_rejected():
    t = torch.rand(1, 8, 8, 3) * 255
    t[0, 0, 0, 0] = 255.0
    with pytest.raises(ValueError, match=r"ComfyUI IMAGE tensors are float 0\.\.1.*up to 255.*divide by 255"):
        to_pil_list(t)
    with pytest.raises(ValueError, match="divide by 255"):
        to_pil_list(t[0].numpy())
    with pytest.raises(ValueError, match=r"-1\.\.1"):
        to_pil_list(torch.linspace(-1, 1, 48).reshape(1, 4, 4, 3))


def test_nan_and_inf_are_rejected():
    t = torch.rand(2, 4, 4, 3)
    t[1, 2, 2, 1] = float("nan")
    with pytest.raises(ValueError, match="1 NaN/infinite"):
        to_pil_list(t)
    a = np.zeros((4, 4, 3), np.float32)
    a[0, 0, 0] = np.inf
    with pytest.raises(ValueError, match="NaN/infinite"):
        to_pil_list(a)


def test_integer_arrays():
    u16 = np.array([[0, 128, 257, 32768, 65535]], np.uint16)
    assert _gray(to_pil_list(u16)[0]).tolist() == [[0, 0, 1, 128, 255]]
    u8 = np.array([[0, 7, 255]], np.uint8)
    assert _gray(to_pil_list(u8)[0]).tolist() == [[0, 7, 255]]
    assert _gray(to_pil_list(u8.astype(np.int64))[0]).tolist() == [[0, 7, 255]]
    assert _gray(to_pil_list(torch.from_numpy(u8)[..., None].expand(1, 3, 3).contiguous())[0]).tolist() == [[0, 7, 255]]
    with pytest.raises(ValueError, match="0..255"):
        to_pil_list(np.array([[0, 1000]], np.int32))


def test_pil_inputs_follow_the_file_policies():
    g = _gradient16()
    assert _gray(to_pil_list(Image.fromarray(g))[0]).tolist() == np.rint(g / 257.0).astype(np.uint8).tolist()
    rgb = Image.new("RGB", (3, 2), (10, 20, 30))
    assert to_pil_list([rgb, rgb.convert("L")])[0].tobytes() == rgb.tobytes()
    with pytest.raises(ValueError, match="0..1"):
        to_pil_list(Image.fromarray(np.full((2, 2), 7.0, np.float32), mode="F"))

"""The export decodes image bytes in the graph (export/image_decode.py); the package decodes files
with PIL (data/files.py). They must give the same pixels, or a photo sent to the server as bytes
does not find itself in the index it was indexed into."""

import io

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from coophash_keras.data.files import decode_image
from coophash_keras.export.image_decode import decode_like_pil, pil_bilinear_resize


def photo(rng, h, w):
    """A smooth picture with noise: JPEG's chroma subsampling and IDCT have something to do."""
    base = Image.fromarray((rng.random((6, 6, 3)) * 255).astype(np.uint8)).resize((w, h), Image.BICUBIC)
    return np.clip(np.asarray(base) + rng.normal(0, 20, (h, w, 3)), 0, 255).astype(np.uint8)


def encoded(pixels, fmt, **options):
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format=fmt, **options)
    return buf.getvalue()


@pytest.fixture(scope="module")
def resize_fn():
    spec = [tf.TensorSpec([None, None, None], tf.uint8), tf.TensorSpec([], tf.int32), tf.TensorSpec([], tf.int32)]
    return tf.function(pil_bilinear_resize, input_signature=spec)  # dynamic shapes, as in the export


def test_resize_equals_pillow_on_random_sizes(resize_fn):
    rng = np.random.default_rng(0)
    for trial in range(120):
        h, w = (int(v) for v in rng.integers(1, 260, 2))
        th, tw = (int(v) for v in rng.integers(1, 120, 2))
        if trial % 6 == 0:
            th = h  # one pass only
        channels = 1 if trial % 4 == 0 else 3
        pixels = rng.integers(0, 256, (h, w, channels), dtype=np.uint8)
        expected = np.asarray(
            Image.fromarray(pixels.squeeze(-1) if channels == 1 else pixels).resize((tw, th), Image.BILINEAR)
        )
        got = resize_fn(tf.constant(pixels), th, tw).numpy()
        np.testing.assert_array_equal(got.reshape(expected.shape), expected, err_msg=f"{h}x{w} -> {th}x{tw}")


@pytest.mark.parametrize(
    "in_size, out_size",
    [
        ((100, 100), (10, 50)),
        ((100, 100), (10, 51)),
        ((100, 100), (10, 52)),
        ((200, 100), (40, 21)),
        ((80, 90), (100, 20)),
    ],
)
def test_resize_follows_pillows_order_of_passes_at_its_boundary(resize_fn, in_size, out_size):
    # Pillow 13 runs the vertical pass first when h - height > 2 (w - width): either side of that line.
    pixels = np.random.default_rng(1).integers(0, 256, (*in_size, 3), dtype=np.uint8)
    expected = np.asarray(Image.fromarray(pixels).resize(out_size[::-1], Image.BILINEAR))
    np.testing.assert_array_equal(resize_fn(tf.constant(pixels), *out_size).numpy(), expected)


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize(
    "fmt, options",
    [
        ("JPEG", {"quality": 90, "subsampling": 2}),  # 4:2:0, the common case
        ("JPEG", {"quality": 75, "subsampling": 0}),
        ("PNG", {}),
        ("BMP", {}),
        ("GIF", {}),
    ],
)
def test_bytes_decode_to_the_packages_pixels(tmp_path, fmt, options, channels):
    rng = np.random.default_rng(2)
    for h, w in ((32, 40), (57, 23), (180, 200)):  # the model's size, and others to resize from
        data = encoded(photo(rng, h, w), fmt, **options)
        path = tmp_path / f"image.{fmt.lower()}"
        path.write_bytes(data)
        expected = decode_image(str(path), (32, 40), channels)
        got = decode_like_pil(tf.constant(data), 32, 40, channels).numpy()
        np.testing.assert_array_equal(got, expected, err_msg=f"{fmt} {h}x{w}")


def test_greyscale_rgba_and_palette_pngs(tmp_path):
    rng = np.random.default_rng(3)
    rgb = photo(rng, 30, 30)
    images = {
        "grey": Image.fromarray(rgb).convert("L"),
        "rgba": Image.fromarray(np.dstack([rgb, rng.integers(0, 256, (30, 30), dtype=np.uint8)]), "RGBA"),
        "palette": Image.fromarray(rgb).convert("P"),
    }
    for name, image in images.items():
        buf = io.BytesIO()
        image.save(buf, format="PNG")
        path = tmp_path / f"{name}.png"
        path.write_bytes(buf.getvalue())
        for channels in (1, 3):
            expected = decode_image(str(path), (16, 24), channels)
            got = decode_like_pil(tf.constant(buf.getvalue()), 16, 24, channels).numpy()
            np.testing.assert_array_equal(got, expected, err_msg=f"{name}, {channels} channels")


def _exif(orientation, big_endian):
    """An EXIF block (with its "Exif\\0\\0" header) holding a camera make and `orientation`."""
    if not big_endian:
        exif = Image.Exif()
        exif[0x010F] = "Camera"
        exif[0x0112] = orientation
        return exif.tobytes()
    import struct

    entries = struct.pack(">HHI4s", 0x010F, 2, 4, b"Cam\0") + struct.pack(">HHIHH", 0x0112, 3, 1, orientation, 0)
    return b"Exif\0\0" + b"MM\0\x2a" + struct.pack(">IH", 8, 2) + entries + struct.pack(">I", 0)


@pytest.mark.parametrize("big_endian", [False, True])
def test_jpegs_are_turned_upright_by_their_exif_orientation_as_pil_does(tmp_path, big_endian):
    from coophash_keras.export.image_decode import exif_orientation

    pixels = photo(np.random.default_rng(4), 40, 60)  # not square: a turn changes the shape
    for orientation in range(1, 10):  # 9 is not a valid orientation: left as it is, as PIL does
        data = encoded(pixels, "JPEG", quality=90, exif=_exif(orientation, big_endian))
        path = tmp_path / "photo.jpg"
        path.write_bytes(data)
        assert int(exif_orientation(tf.constant(data))) == (orientation if orientation <= 8 else 1)
        expected = decode_image(str(path), (32, 24), 3)
        got = decode_like_pil(tf.constant(data), 32, 24, 3).numpy()
        np.testing.assert_array_equal(got, expected, err_msg=f"orientation {orientation}")
    for data in (encoded(pixels, "JPEG"), b"\xff\xd8", b""):  # no EXIF block, a stub, nothing
        assert int(exif_orientation(tf.constant(data))) == 1


def test_orientations_of_a_mixed_batch_at_once():
    # The export reads the orientations of a whole request in one vectorised pass.
    from coophash_keras.export.image_decode import exif_orientation

    pixels = photo(np.random.default_rng(5), 20, 30)
    batch = [
        encoded(pixels, "JPEG", exif=_exif(6, False)),
        encoded(pixels, "PNG"),
        encoded(pixels, "JPEG"),
        encoded(pixels, "JPEG", exif=_exif(3, True)),
        b"",
    ]
    np.testing.assert_array_equal(exif_orientation(tf.constant(batch)).numpy(), [6, 1, 1, 3, 1])

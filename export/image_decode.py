"""Encoded image bytes -> the pixels the package's own decoder gives, in the graph.

The package decodes files with PIL (coophash_keras/data/files.py: `decode_image`), and an index is
built from those pixels; the export's `hash_image_bytes` / `search_image_bytes` (and so Beam and
every served query sent as bytes) decode in TensorFlow. If the two differ, a photo sent to the
server does not find itself in the index at distance 0. TensorFlow's defaults differ from PIL in
three places, each fixed here to give PIL's (Pillow 13's) pixels bit for bit (tests/test_image_decode.py):

* JPEG: `tf.io.decode_jpeg`'s default IDCT is libjpeg's fast integer one; PIL uses the accurate one
  (`dct_method="INTEGER_ACCURATE"` here).
* Greyscale: TensorFlow's `channels=1` keeps a colour JPEG's luma plane; PIL converts RGB with
  L = (19595 R + 38470 G + 7471 B + 2^15) >> 16 (ITU-R 601-2, in 16-bit fixed point). Images are
  decoded to RGB and converted that way.
* Resizing: `tf.image.resize` samples two pixels per output pixel (no antialiasing; up to 67 grey
  levels away from PIL when a 224x224 photo goes to 32x32). PIL's bilinear filter widens with the
  scale, and computes in 22-bit fixed point, rounding to uint8 after the horizontal pass and again
  after the vertical one (Pillow's src/libImaging/Resample.c). `pil_bilinear_resize` ports it.

* EXIF orientation: PIL turns a JPEG upright by the orientation tag of its EXIF block (phones'
  portrait photos); TensorFlow ignores it. `exif_orientation` reads the tag in the graph and
  `upright` applies it as PIL's `ImageOps.exif_transpose` does.

Not followed: 16-bit PNGs (TensorFlow keeps the high byte, PIL rounds v / 257) and EXIF blocks in
formats other than JPEG; both are rare in photo collections."""

import tensorflow as tf

_PRECISION_BITS = 32 - 8 - 2  # Resample.c: fixed-point coefficients for 8-bit images


def _bilinear_coefficients(in_size, out_size):
    """Pillow's precompute_coeffs + normalize_coeffs_8bpc for the bilinear filter, as a dense
    float64 [out_size, in_size] matrix of integer weights (fixed point, 2^22 = 1)."""
    in_f = tf.cast(in_size, tf.float64)
    scale = in_f / tf.cast(out_size, tf.float64)
    filterscale = tf.maximum(scale, 1.0)
    support = filterscale  # the bilinear filter's support is 1, widened by the scale
    center = (tf.cast(tf.range(out_size), tf.float64) + 0.5) * scale
    # C's (int) cast truncates toward zero; the lower bound is clipped to 0 right after.
    xmin = tf.maximum(tf.floor(center - support + 0.5), 0.0)
    xmax = tf.minimum(tf.floor(center + support + 0.5), in_f)
    x = tf.cast(tf.range(in_size), tf.float64)[None, :]
    inside = (x >= xmin[:, None]) & (x < xmax[:, None])
    ss = 1.0 / filterscale  # Resample.c multiplies by the reciprocal: the same rounding as C
    weights = tf.where(inside, tf.maximum(1.0 - tf.abs((x - center[:, None] + 0.5) * ss), 0.0), 0.0)
    # C sums a window left to right; a cumulative sum keeps that order (zeros add nothing).
    total = tf.math.cumsum(weights, axis=1)[:, -1:]
    weights = tf.where(total != 0.0, weights / tf.where(total != 0.0, total, 1.0), weights)
    return tf.floor(0.5 + weights * float(1 << _PRECISION_BITS))  # weights >= 0: (int)(0.5 + k) is a floor


def _fixed_point_pass(pixels, coefficients):
    """One resampling pass over axis 0 of float64 [in, ..., C] pixels: 2^21 + sum(pixel x weight),
    shifted right by 22 bits and clipped to 0..255, as Resample.c does."""
    # The matrix is sparse (a window of about 2 x scale taps per row): a dense product would cost
    # seconds per phone photo. Sums of integers below 2^53 are exact in any order.
    shape = tf.shape(pixels)
    flat = tf.reshape(pixels, [shape[0], -1])
    total = tf.sparse.sparse_dense_matmul(tf.sparse.from_dense(coefficients), flat)
    total = tf.reshape(total, tf.concat([[tf.shape(coefficients)[0]], shape[1:]], axis=0))
    total += float(1 << (_PRECISION_BITS - 1))
    return tf.clip_by_value(tf.floor(total / float(1 << _PRECISION_BITS)), 0.0, 255.0)


def _horizontal_pass(pixels, width):
    return tf.transpose(_fixed_point_pass(tf.transpose(pixels, [1, 0, 2]), _bilinear_coefficients(tf.shape(pixels)[1], width)), [1, 0, 2])


def _vertical_pass(pixels, height):
    return _fixed_point_pass(pixels, _bilinear_coefficients(tf.shape(pixels)[0], height))


def pil_bilinear_resize(image, height, width):
    """uint8 [h, w, C] -> uint8 [height, width, C], equal to Pillow 13's `Image.resize((width,
    height), Image.BILINEAR)` of the same pixels: two passes, each rounded to uint8, a pass skipped
    where its size already matches.

    The order of the passes matters (the uint8 rounding between them). Pillow 13 runs the vertical
    pass first when it shrinks the height by more than twice what the horizontal pass shrinks the
    width: h - height > 2 (w - width), with height < h; otherwise the horizontal one first (as all
    earlier Pillows did). That rule was read off Pillow 13.0.0's output, not its source (whose
    published copy here predates it), and is checked against the installed Pillow on random sizes
    by tests/test_image_decode.py."""
    in_h, in_w = tf.shape(image)[0], tf.shape(image)[1]

    def resized():
        pixels = tf.cast(image, tf.float64)

        def horizontal_first():
            once = tf.cond(tf.equal(in_w, width), lambda: pixels, lambda: _horizontal_pass(pixels, width))
            return tf.cond(tf.equal(in_h, height), lambda: once, lambda: _vertical_pass(once, height))

        def vertical_first():
            return _horizontal_pass(_vertical_pass(pixels, height), width)

        vertical_first_wins = (height < in_h) & (width != in_w) & (in_h - height > 2 * (in_w - width))
        return tf.cast(tf.cond(vertical_first_wins, vertical_first, horizontal_first), tf.uint8)

    # Images already at the model's size (what a client that resizes sends) skip it all.
    return tf.cond(tf.equal(in_h, height) & tf.equal(in_w, width), lambda: tf.cast(image, tf.uint8), resized)


def pil_grey(rgb):
    """uint8 [h, w, 3] -> uint8 [h, w, 1] as PIL's convert("L")."""
    r, g, b = tf.unstack(tf.cast(rgb, tf.int32), axis=-1)
    return tf.cast(tf.bitwise.right_shift(r * 19595 + g * 38470 + b * 7471 + (1 << 15), 16), tf.uint8)[..., None]


_EXIF_SEARCH_BYTES = 65536  # an APP1 segment is at most 64 KiB and comes first in practice
_ORIENTATION_TAG = 0x0112


def exif_orientation(data):
    """The EXIF orientation (int32, 1 = upright) of JPEG bytes, as PIL's getexif() reads it: the
    first APP1 segment that starts with "Exif\\0\\0", its TIFF header's byte order, IFD0's entry
    0x0112. 1 when there is none or the block is malformed."""
    head = tf.io.decode_raw(tf.strings.substr(data, 0, _EXIF_SEARCH_BYTES), tf.uint8)
    b = tf.concat([tf.cast(head, tf.int32), tf.zeros([16], tf.int32)], 0)  # reads past the end get 0
    n = tf.size(head)
    # FF E1 <length> "Exif" 00 00: the marker, then the EXIF header
    pattern = [0xFF, 0xE1, None, None, 0x45, 0x78, 0x69, 0x66, 0x00, 0x00]
    length = tf.maximum(n - len(pattern) + 1, 0)
    found = tf.ones([length], tf.bool)
    for offset, byte in enumerate(pattern):
        if byte is not None:
            found &= b[offset : offset + length] == byte
    found = tf.concat([found, [False]], 0)  # never empty, for argmax
    tiff = tf.cast(tf.argmax(tf.cast(found, tf.int32)), tf.int32) + len(pattern)
    at = lambda i: tf.gather(b, tf.clip_by_value(i, 0, tf.size(b) - 1))  # noqa: E731
    little = tf.equal(at(tiff), 0x49)  # "II"; "MM" is big-endian

    def u16(i):
        return tf.where(little, at(i) + at(i + 1) * 256, at(i) * 256 + at(i + 1))

    def u32(i):
        return tf.where(little, u16(i) + u16(i + 2) * 65536, u16(i) * 65536 + u16(i + 2))

    ifd = tiff + u32(tiff + 4)
    entries = ifd + 2 + 12 * tf.range(tf.minimum(u16(ifd), 256))
    tags = u16(entries)
    hit = tf.equal(tags, _ORIENTATION_TAG)
    value = tf.where(tf.reduce_any(hit), u16(tf.reduce_sum(tf.where(hit, entries, 0)) + 8), 1)
    valid = tf.reduce_any(found) & (ifd < n) & (value >= 1) & (value <= 8)
    return tf.where(valid, value, 1)


def upright(image, orientation):
    """`image` [h, w, C] turned as PIL's ImageOps.exif_transpose turns it for `orientation`."""
    transpose = lambda x: tf.transpose(x, [1, 0, 2])  # noqa: E731
    branches = [
        lambda: image,  # 1 (and anything unknown)
        lambda: tf.reverse(image, [1]),  # 2: FLIP_LEFT_RIGHT
        lambda: tf.reverse(image, [0, 1]),  # 3: ROTATE_180
        lambda: tf.reverse(image, [0]),  # 4: FLIP_TOP_BOTTOM
        lambda: transpose(image),  # 5: TRANSPOSE
        lambda: tf.reverse(transpose(image), [1]),  # 6: ROTATE_270 (90 degrees clockwise)
        lambda: tf.reverse(transpose(image), [0, 1]),  # 7: TRANSVERSE
        lambda: tf.reverse(transpose(image), [0]),  # 8: ROTATE_90 (counter-clockwise)
    ]
    return tf.switch_case(tf.clip_by_value(orientation - 1, 0, 7), branches)


def decode_like_pil(data, height, width, channels):
    """One encoded image (scalar string: PNG, JPEG, GIF, BMP) -> uint8 [height, width, channels],
    the pixels coophash_keras.data.files.decode_image gives for the same file."""
    rgb = tf.cond(
        tf.io.is_jpeg(data),
        lambda: upright(tf.io.decode_jpeg(data, channels=3, dct_method="INTEGER_ACCURATE"), exif_orientation(data)),
        lambda: tf.ensure_shape(tf.io.decode_image(data, channels=3, expand_animations=False), [None, None, 3]),
    )
    image = pil_grey(rgb) if channels == 1 else rgb
    return pil_bilinear_resize(image, height, width)

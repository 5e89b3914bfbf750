"""Encoded image bytes -> the pixels the package's own decoder gives, in the graph.

The package decodes files with PIL (coophash_keras/data/files.py: `decode_image`), and an index is
built from those pixels; the export's `hash_image_bytes` / `search_image_bytes` (and so Beam and
every served query sent as bytes) decode in TensorFlow. If the two differ, a photo sent to the
server does not find itself in the index at distance 0. TensorFlow's defaults differ from PIL in
four places, each fixed here to give PIL's (Pillow 13's) pixels bit for bit (tests/test_image_decode.py):

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
    return tf.transpose(
        _fixed_point_pass(tf.transpose(pixels, [1, 0, 2]), _bilinear_coefficients(tf.shape(pixels)[1], width)),
        [1, 0, 2],
    )


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


_ORIENTATION_TAG = 0x0112
_MAX_SEGMENTS = 16  # JPEG segments walked before the image data: an EXIF block comes in the first few
_MAX_IFD_ENTRIES = 64


def _bytes_at(data, pos, length):
    """int32 [N, length]: `length` bytes of each string of `data` [N] from its `pos` [N] (zeros
    past its end)."""
    pos = tf.clip_by_value(pos, 0, tf.strings.length(data))  # substr refuses a start past the end
    piece = tf.strings.substr(data, pos, tf.fill(tf.shape(pos), length))
    return tf.cast(tf.io.decode_raw(piece, tf.uint8, fixed_length=length), tf.int32)


def exif_orientation(data):
    """int32 [N] EXIF orientations (1 = upright) of encoded images `data` [N] (a scalar gives a
    scalar), as PIL's getexif() reads a JPEG's: walking the segments after SOI up to the image
    data, the first APP1 segment that starts with "Exif\\0\\0", its TIFF header's byte order, IFD0's
    entry 0x0112. 1 for other formats, JPEGs without it, and malformed blocks. Vectorised over the
    batch (a few dozen ops per batch, not per image: inside a map over images every op counts)."""
    data = tf.convert_to_tensor(data)
    scalar = data.shape.rank == 0
    data = tf.reshape(data, [-1])
    n = tf.shape(data)[0]
    start = _bytes_at(data, tf.zeros([n], tf.int32), 2)
    is_jpeg = tf.equal(start[:, 0], 0xFF) & tf.equal(start[:, 1], 0xD8)
    exif_header = tf.constant([0x45, 0x78, 0x69, 0x66, 0x00, 0x00])  # "Exif\0\0"

    def step(k, pos, tiff, walking):
        seg = _bytes_at(data, pos, 10)  # marker (2), length (2), and the first 6 bytes of the payload
        marker_ok = tf.equal(seg[:, 0], 0xFF)
        is_exif = marker_ok & tf.equal(seg[:, 1], 0xE1) & tf.reduce_all(tf.equal(seg[:, 4:10], exif_header), axis=1)
        tiff = tf.where(walking & is_exif, pos + 10, tiff)
        walking &= marker_ok & tf.not_equal(seg[:, 1], 0xDA) & (tiff < 0)  # stop at the image data (SOS)
        return k + 1, tf.where(walking, pos + 2 + seg[:, 2] * 256 + seg[:, 3], pos), tiff, walking

    # A loop that ends when no image is still walking: no step at all for a batch of PNGs.
    _, _, tiff, _ = tf.while_loop(
        lambda k, pos, tiff, walking: (k < _MAX_SEGMENTS) & tf.reduce_any(walking),
        step,
        (tf.constant(0), tf.fill([n], 2), tf.fill([n], -1), is_jpeg),
    )
    header = _bytes_at(data, tiff, 8)
    little = tf.equal(header[:, 0], 0x49)  # "II"; "MM" is big-endian

    def u16(b, i):
        return tf.where(little, b[:, i] + b[:, i + 1] * 256, b[:, i] * 256 + b[:, i + 1])

    def u32(b, i):
        return tf.where(little, u16(b, i) + u16(b, i + 2) * 65536, u16(b, i) * 65536 + u16(b, i + 2))

    ifd = _bytes_at(data, tiff + u32(header, 4), 2 + 12 * _MAX_IFD_ENTRIES)
    count = tf.minimum(u16(ifd, 0), _MAX_IFD_ENTRIES)
    entries = tf.reshape(ifd[:, 2:], [n, _MAX_IFD_ENTRIES, 12])
    lo, hi = entries[:, :, 0], entries[:, :, 1]
    little_e = little[:, None]
    tags = tf.where(little_e, lo + hi * 256, lo * 256 + hi)
    values = tf.where(little_e, entries[:, :, 8] + entries[:, :, 9] * 256, entries[:, :, 8] * 256 + entries[:, :, 9])
    hit = tf.equal(tags, _ORIENTATION_TAG) & (tf.range(_MAX_IFD_ENTRIES)[None, :] < count[:, None])
    first = tf.argmax(tf.cast(hit, tf.int32), axis=1, output_type=tf.int32)
    value = tf.gather(values, first, batch_dims=1)
    valid = (tiff >= 0) & tf.reduce_any(hit, axis=1) & (value >= 1) & (value <= 8)
    orientation = tf.where(valid, value, 1)
    return orientation[0] if scalar else orientation


def upright(image, orientation):
    """`image` [h, w, C] turned as PIL's ImageOps.exif_transpose turns it for `orientation`:
    5-8 transpose first, then 2, 3, 6, 7 flip left-right and 3, 4, 7, 8 top-bottom (e.g. 6, a
    phone held upright, is ROTATE_270: transposed, then flipped left-right). Few ops, no branch
    per orientation: inside the signature's map over images every op of an untaken branch costs
    time too."""
    o = tf.where((orientation >= 1) & (orientation <= 8), orientation, 1)
    turned = tf.transpose(image, tf.where(o >= 5, [1, 0, 2], [0, 1, 2]))
    flip_rows = (o == 3) | (o == 4) | (o == 7) | (o == 8)
    flip_columns = (o == 2) | (o == 3) | (o == 6) | (o == 7)
    turned = tf.reverse(turned, tf.boolean_mask(tf.constant([0, 1]), tf.stack([flip_rows, flip_columns])))
    return tf.ensure_shape(turned, [None, None, image.shape[-1]])  # a computed perm hides the channels


def decode_like_pil(data, height, width, channels, orientation=None):
    """One encoded image (scalar string: PNG, JPEG, GIF, BMP) -> uint8 [height, width, channels],
    the pixels coophash_keras.data.files.decode_image gives for the same file. `orientation`: its
    `exif_orientation`, when the caller has it for the whole batch already."""
    orientation = exif_orientation(data) if orientation is None else orientation
    rgb = tf.cond(
        tf.io.is_jpeg(data),
        lambda: upright(tf.io.decode_jpeg(data, channels=3, dct_method="INTEGER_ACCURATE"), orientation),
        lambda: tf.ensure_shape(tf.io.decode_image(data, channels=3, expand_animations=False), [None, None, 3]),
    )
    image = pil_grey(rgb) if channels == 1 else rgb
    return pil_bilinear_resize(image, height, width)

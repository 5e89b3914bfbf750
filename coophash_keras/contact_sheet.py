"""Contact sheets of search results: one row per query, the query image first, then its top-k
neighbours, each captioned with its rank, Hamming distance and class (or file name).

Pure numpy + PIL (no matplotlib), so it works wherever the package does. Small images are enlarged
by an integer factor with nearest-neighbour sampling (28x28 -> 84x84: the pixels the model saw, not a
blur of them); large ones are shrunk to fit the thumbnail box. With labels for the queries too, a
neighbour's frame is green when it shares a class with its query and red when not."""

import numpy as np

_BACKGROUND = (255, 255, 255)
_TEXT = (20, 20, 20)
_MUTED = (110, 110, 110)
_RULE = (200, 200, 200)
_SEPARATOR = (60, 60, 60)
_RELEVANT = (46, 125, 50)
_IRRELEVANT = (198, 40, 40)
_NEUTRAL = (170, 170, 170)
_PLACEHOLDER = (235, 235, 235)


def _font(size):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)  # scalable (Pillow >= 10.1 with FreeType)
    except (TypeError, OSError, ImportError):
        return ImageFont.load_default()


def _as_rgb(image):
    """[H, W], [H, W, 1] or [H, W, 3] pixels in [0, 255] -> uint8 [H, W, 3]."""
    arr = np.asarray(image)
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, axis=-1)
    if arr.ndim != 3 or arr.shape[-1] not in (3, 4):
        raise ValueError(f"an image must be [H, W], [H, W, 1] or [H, W, 3], got shape {arr.shape}")
    return np.clip(np.round(arr[..., :3]), 0, 255).astype(np.uint8) if arr.dtype != np.uint8 else arr[..., :3]


def thumbnail(image, box):
    """A PIL RGB image fitting a box x box square: enlarged by the largest integer factor with
    nearest-neighbour sampling, or shrunk (aspect ratio kept) if larger than the box."""
    from PIL import Image

    img = Image.fromarray(_as_rgb(image))
    w, h = img.size
    longest = max(w, h)
    if longest <= box:
        factor = box // longest
        return img.resize((w * factor, h * factor), Image.NEAREST) if factor > 1 else img
    scale = box / longest
    return img.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.LANCZOS)


def _class_text(label, class_names):
    """A class id (-1 = none), or a multi-hot row -> 'Sneaker' / 'cat+dog' / None."""
    if label is None:
        return None
    arr = np.asarray(label)
    ids = np.flatnonzero(arr > 0) if arr.ndim == 1 else ([int(arr)] if int(arr) >= 0 else [])
    if not len(ids):
        return None
    names = [str(class_names[i]) if class_names is not None and i < len(class_names) else f"class {i}" for i in ids]
    return "+".join(names)


def _relevant(query_label, label):
    if query_label is None or label is None:
        return None
    q, n = np.asarray(query_label), np.asarray(label)
    if q.ndim == 0:
        return None if q < 0 or n < 0 else bool(q == n)
    return bool(np.any((q > 0) & (n > 0)))


def _fit(draw, text, font, width):
    """`text`, cut with '…' to fit `width` pixels."""
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "…", font=font) > width:
        text = text[:-1]
    return text + "…"


def _at(seq, i, j=None):
    if seq is None:
        return None
    item = seq[i]
    return item if j is None else item[j]


def render_contact_sheet(
    query_images,
    neighbour_images,
    distances,
    neighbour_labels=None,
    query_labels=None,
    class_names=None,
    query_titles=None,
    neighbour_titles=None,
    thumb_size=84,
    title=None,
):
    """The sheet as uint8 RGB [height, width, 3].

    query_images:     Q images ([H, W], [H, W, 1] or [H, W, 3], pixels in [0, 255]);
    neighbour_images: Q rows of k images; an entry may be None (e.g. a file that has gone: drawn
                      as an empty box);
    distances:        [Q, k] Hamming distances;
    neighbour_labels: [Q, k] class ids (-1 = unknown) or [Q, k, C] multi-hot, optional;
    query_labels:     [Q] / [Q, C], optional: frames neighbours green (shares a class) or red;
    class_names:      names of the class ids (default 'class N');
    query_titles, neighbour_titles: short texts (file names) under the images, optional."""
    from PIL import Image, ImageDraw

    q = len(query_images)
    distances = np.asarray(distances)
    if q == 0 or distances.ndim != 2 or distances.shape[0] != q or len(neighbour_images) != q:
        raise ValueError(
            f"need Q query images, Q rows of neighbour images and distances [Q, k]; got {q} queries, "
            f"{len(neighbour_images)} neighbour rows and distances of shape {distances.shape}"
        )
    k = distances.shape[1]
    font, small = _font(13), _font(11)
    line_h, pad, gap, frame = 16, 8, 6, 3
    # Caption lines: rank and distance (or 'query'), then the class and the title where given.
    query_slots = [True, query_labels is not None, query_titles is not None]
    neighbour_slots = [True, neighbour_labels is not None, neighbour_titles is not None]
    lines = max(sum(query_slots), sum(neighbour_slots))
    tile_w = max(thumb_size + 2 * frame, 96)
    row_h = thumb_size + 2 * frame + lines * line_h + gap
    sep_w = 18  # the space holding the vertical rule between the query and its neighbours
    header_h = line_h + gap + 2
    width = 2 * pad + tile_w + sep_w + k * tile_w + (k - 1) * gap
    height = 2 * pad + header_h + q * row_h + (q - 1) * gap
    sheet = Image.new("RGB", (width, height), _BACKGROUND)
    draw = ImageDraw.Draw(sheet)

    x_query, x_first = pad, pad + tile_w + sep_w
    draw.text((x_query, pad), "query", fill=_TEXT, font=font)
    heading = title or f"top {k} by Hamming distance (d)" + (
        ": green = shares a class with the query, red = does not" if query_labels is not None else ""
    )
    draw.text((x_first, pad), _fit(draw, heading, font, width - x_first - pad), fill=_TEXT, font=font)
    draw.line([(pad, pad + line_h + 2), (width - pad, pad + line_h + 2)], fill=_SEPARATOR, width=1)

    def tile(x, y, image, caption, slots, colour):
        box = (x + (tile_w - thumb_size) // 2 - frame, y)
        draw.rectangle(
            [box, (box[0] + thumb_size + 2 * frame - 1, y + thumb_size + 2 * frame - 1)],
            outline=colour,
            width=frame if colour not in (_NEUTRAL,) else 1,
        )
        if image is None:
            draw.rectangle(
                [(box[0] + frame, y + frame), (box[0] + frame + thumb_size - 1, y + frame + thumb_size - 1)],
                fill=_PLACEHOLDER,
            )
            draw.text((box[0] + frame + 4, y + frame + thumb_size // 2 - 6), "missing", fill=_MUTED, font=small)
        else:
            thumb = thumbnail(image, thumb_size)
            tx = box[0] + frame + (thumb_size - thumb.width) // 2
            ty = y + frame + (thumb_size - thumb.height) // 2
            sheet.paste(thumb, (tx, ty))
        ty = y + thumb_size + 2 * frame + 1
        caption = [c for c, used in zip(caption, slots) if used]
        for i, (text, style) in enumerate(caption):
            if text:
                f, fill = (font, _TEXT) if style == "strong" else (small, _MUTED)
                draw.text((x + 2, ty + i * line_h), _fit(draw, text, f, tile_w - 4), fill=fill, font=f)

    for r in range(q):
        y = pad + header_h + r * (row_h + gap)
        q_label = _at(query_labels, r)
        tile(
            x_query,
            y,
            query_images[r],
            [("query", "strong"), (_class_text(q_label, class_names), "muted"), (_at(query_titles, r), "muted")],
            query_slots,
            _SEPARATOR,
        )
        for j in range(k):
            label = _at(neighbour_labels, r, j)
            relevant = _relevant(q_label, label)
            colour = _NEUTRAL if relevant is None else (_RELEVANT if relevant else _IRRELEVANT)
            caption = [
                (f"#{j + 1}  d={int(distances[r, j])}", "strong"),
                (_class_text(label, class_names), "muted"),
                (_at(neighbour_titles, r, j), "muted"),
            ]
            tile(x_first + j * (tile_w + gap), y, neighbour_images[r][j], caption, neighbour_slots, colour)
        rule_x = x_query + tile_w + sep_w // 2
        draw.line([(rule_x, y), (rule_x, y + row_h - gap)], fill=_SEPARATOR, width=2)
        if r < q - 1:
            y_rule = y + row_h + gap // 2 - 1
            draw.line([(pad, y_rule), (width - pad, y_rule)], fill=_RULE, width=1)
    return np.asarray(sheet)


def save_contact_sheet(path, query_images, neighbour_images, distances, **kwargs):
    """Render (see render_contact_sheet) and write a PNG to `path`; returns the path."""
    from PIL import Image

    from coophash_keras.io import atomic_path

    sheet = render_contact_sheet(query_images, neighbour_images, distances, **kwargs)
    with atomic_path(path, ".png") as tmp:
        Image.fromarray(sheet).save(tmp, format="PNG")
    return path

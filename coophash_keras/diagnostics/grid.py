"""Sample grids: a row per class, a column per z. For CoopHash the raw samples g(z, c) and their
Langevin revisions sit side by side (the same z in the same column of each panel)."""

import numpy as np
import tensorflow as tf

from coophash_keras.preprocessing import denormalize_images


def _tiles(images, factor):
    return np.repeat(np.repeat(np.asarray(images), factor, axis=1), factor, axis=2)


def sample_grid(model, num_classes, columns=8, seed=0, min_tile=48, class_names=None):
    """uint8 RGB [H, W, 3]: a header and a row per class of `columns` samples g(z, c) (and, for a
    model with Langevin revision, a second panel of the revised samples)."""
    from PIL import Image, ImageDraw

    from coophash_keras.contact_sheet import _font
    from coophash_keras.diagnostics.generator import class_samples

    generated, revised, _ = class_samples(model, num_classes, columns, seed)
    panels = [("g(z, c)", generated)] + ([("revised by Langevin", revised)] if revised is not None else [])
    h, w, ch = generated.shape[1:]
    f = max(1, -(-min_tile // min(h, w)))
    th, tw, gap, sep, label_w, header_h = h * f, w * f, 16, 2, 90, 22
    panel_w = columns * tw + (columns - 1) * sep
    width = label_w + len(panels) * panel_w + (len(panels) - 1) * gap
    height = header_h + num_classes * th + (num_classes - 1) * sep
    canvas = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    font = _font(12)
    for p, (title, images) in enumerate(panels):
        left = label_w + p * (panel_w + gap)
        draw.text((left, 4), title, fill=(20, 20, 20), font=font)
        pixels = np.asarray(denormalize_images(tf.convert_to_tensor(images)))
        if ch == 1:
            pixels = np.repeat(pixels, 3, axis=-1)
        tiles = _tiles(pixels, f)
        for i in range(num_classes * columns):
            r, c = divmod(i, columns)
            canvas.paste(Image.fromarray(tiles[i]), (left + c * (tw + sep), header_h + r * (th + sep)))
    for r in range(num_classes):
        name = class_names[r] if class_names is not None else str(r)
        draw.text((4, header_h + r * (th + sep) + th // 2 - 6), str(name)[:12], fill=(20, 20, 20), font=font)
    return np.asarray(canvas)


def save_sample_grid(path, model, num_classes, columns=8, seed=0, class_names=None):
    from PIL import Image

    from coophash_keras.io import atomic_path

    grid = sample_grid(model, num_classes, columns, seed, class_names=class_names)
    with atomic_path(path, ".png") as tmp:
        Image.fromarray(grid).save(tmp, format="PNG")
    return path

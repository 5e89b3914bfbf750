"""Image augmentation from a short spec string, with Keras preprocessing layers.

A spec is a comma-separated list of `name` or `name=value` items, applied in order to raw-pixel
images in [0, 255] (the result is clipped back to that range):

    flip            RandomFlip("horizontal")              translate=F   RandomTranslation(F, F)
    zoom=F          RandomZoom(F)                         rotate=F      RandomRotation(F) (fraction of 2 pi)
    contrast=F      RandomContrast(F)                     brightness=F  RandomBrightness(F, value_range=(0, 255))
    noise=S         Gaussian noise of std S (pixel units)  erase=F       RandomErasing(scale=(0.02, F))
    blur=S          RandomGaussianBlur(sigma up to S)

e.g. "flip,translate=0.1" (weak) or "flip,translate=0.125,contrast=0.4,noise=20,erase=0.25" (strong).
The empty spec is no augmentation. `CoopHashConfig.augmentation` sets it for every model alike;
coophash_keras.runs applies it in the tf.data pipeline of the labelled images.
"""

from __future__ import annotations

# name -> (takes a value, the value's valid range (low, high) inclusive)
_ITEMS = {
    "flip": (False, None),
    "translate": (True, (0.0, 0.5)),
    "zoom": (True, (0.0, 0.9)),
    "rotate": (True, (0.0, 0.5)),
    "contrast": (True, (0.0, 1.0)),
    "brightness": (True, (0.0, 1.0)),
    "noise": (True, (0.0, 255.0)),
    "erase": (True, (0.02, 1.0)),
    "blur": (True, (0.0, 10.0)),
}


def parse_augmentation(spec: str) -> list[tuple[str, float | None]]:
    """'flip,translate=0.1' -> [('flip', None), ('translate', 0.1)]; a ValueError names any bad item."""
    items = []
    for raw in (spec or "").split(","):
        raw = raw.strip()
        if not raw:
            continue
        name, _, value = raw.partition("=")
        name = name.strip()
        if name not in _ITEMS:
            raise ValueError(f"unknown augmentation {name!r} in {spec!r}; choose from {sorted(_ITEMS)}")
        takes_value, limits = _ITEMS[name]
        if takes_value != bool(value):
            raise ValueError(f"augmentation {name!r} {'needs' if takes_value else 'takes no'} a value (in {spec!r})")
        if takes_value:
            try:
                number = float(value)
            except ValueError:
                raise ValueError(f"augmentation {name}={value!r} is not a number (in {spec!r})") from None
            if not limits[0] <= number <= limits[1]:
                raise ValueError(f"augmentation {name}={number} is outside [{limits[0]}, {limits[1]}] (in {spec!r})")
            items.append((name, number))
        else:
            items.append((name, None))
    return items


def augmentation_layers(spec: str, seed: int | None = None):
    """The Keras preprocessing layers (and pixel noise) of a spec (an empty list for "")."""
    from keras import layers

    made = []
    for i, (name, v) in enumerate(parse_augmentation(spec)):
        s = None if seed is None else seed + i
        if name == "flip":
            made.append(layers.RandomFlip("horizontal", seed=s))
        elif name == "translate":
            made.append(layers.RandomTranslation(v, v, fill_mode="constant", seed=s))
        elif name == "zoom":
            made.append(layers.RandomZoom(v, fill_mode="constant", seed=s))
        elif name == "rotate":
            made.append(layers.RandomRotation(v, fill_mode="constant", seed=s))
        elif name == "contrast":
            made.append(layers.RandomContrast(v, value_range=(0, 255), seed=s))
        elif name == "brightness":
            made.append(layers.RandomBrightness(v, value_range=(0, 255), seed=s))
        elif name == "noise":  # (keras.layers.GaussianNoise caps its std at 1; these are pixel units)
            made.append(_PixelNoise(v, s))
        elif name == "erase":
            made.append(layers.RandomErasing(factor=1.0, scale=(0.02, v), value_range=(0, 255), seed=s))
        elif name == "blur":
            made.append(layers.RandomGaussianBlur(factor=1.0, sigma=(0.0, v), value_range=(0, 255), seed=s))
    return made


class _PixelNoise:
    def __init__(self, stddev, seed):
        self.stddev, self.seed = stddev, seed

    def __call__(self, x, training=True):
        import tensorflow as tf

        return x + tf.random.normal(tf.shape(x), stddev=self.stddev, seed=self.seed)


class Augmenter:
    """Callable on a batch of raw-pixel images (uint8 or float, [B, H, W, C]): the spec's layers in
    training mode, clipped to [0, 255], float32. Works in tf.data maps and inside train steps."""

    def __init__(self, spec: str, seed: int | None = None):
        self.spec = spec
        self.layers = augmentation_layers(spec, seed)

    def __bool__(self):
        return bool(self.layers)

    def __call__(self, images):
        import tensorflow as tf

        x = tf.cast(images, tf.float32)
        for layer in self.layers:
            x = layer(x, training=True)
        return tf.clip_by_value(x, 0.0, 255.0)


def augment_dataset(ds, spec: str, seed: int | None = None):
    """Apply a spec to the images (first element) of a batched tf.data pipeline."""
    augmenter = Augmenter(spec, seed)
    if not augmenter:
        return ds
    import tensorflow as tf

    return ds.map(lambda images, *rest: (augmenter(images), *rest), num_parallel_calls=tf.data.AUTOTUNE)

"""Image sets by the names the command line and run.json use (digits, fashion_mnist, npz:PATH,
folder:PATH, ...): which loader reads which name."""

import os

from coophash_keras.data.files import is_file_dataset, load_file_dataset
from coophash_keras.data.loaders import FASHION_MNIST_DIR, load_digits, load_fashion_mnist, load_npz, load_tfds
from coophash_keras.data.mosaics import load_fashion_mosaics


def load_dataset(name, data_dir=None, image_size=None, channels=None):
    """CLI entry: 'digits', 'fashion_mnist', 'fashion_mosaics' (data_dir/fashion_mosaics.npz, built by
    scripts/make_fashion_mosaics.py), 'npz:PATH' (arrays images, labels), 'tfds:NAME', or your own
    image files: 'folder:PATH', 'csv:PATH', 'images:PATH' (coophash_keras.data.files; those take
    image_size (H, W) and channels 1|3, the others have a fixed shape)."""
    if is_file_dataset(name):
        return load_file_dataset(name, image_size=image_size, channels=channels)
    if image_size is not None or channels is not None:
        raise ValueError(
            f"--image-size and --channels apply to folder:, csv: and images: datasets; {name} has a fixed shape"
        )
    if name == "digits":
        return load_digits()
    if name in ("fashion_mnist", "fashion-mnist"):
        return load_fashion_mnist(data_dir or FASHION_MNIST_DIR)
    if name in ("fashion_mosaics", "fashion-mosaics"):
        return load_fashion_mosaics(os.path.join(data_dir or "data", "fashion_mosaics.npz"))
    if name.startswith("npz:"):
        return load_npz(name[4:])
    if name.startswith("tfds:"):
        return load_tfds(name[5:], data_dir=data_dir)
    raise ValueError(
        f"unknown dataset {name!r}: use digits, fashion_mnist, fashion_mosaics, npz:PATH, tfds:NAME, folder:PATH, "
        "csv:PATH or images:PATH"
    )

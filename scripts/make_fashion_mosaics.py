"""Build the multi-label Fashion-MNIST mosaics (coophash_keras/data/mosaics.py) and save them.

python scripts/make_fashion_mosaics.py --out data/fashion_mosaics.npz [--data-dir DIR] [--seed 0]
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from coophash_keras.data import FASHION_MNIST_DIR, load_fashion_mnist  # noqa: E402
from coophash_keras.data.mosaics import fashion_mosaics, save_mosaics  # noqa: E402


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", default="data/fashion_mosaics.npz")
    p.add_argument("--data-dir", default=FASHION_MNIST_DIR)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    mosaics = fashion_mosaics(load_fashion_mnist(a.data_dir, split="all"), a.seed)
    save_mosaics(mosaics, a.out)
    per = mosaics.labels.sum(1)
    print(
        f"{len(mosaics)} mosaics {mosaics.images.shape[1:]} -> {a.out}; labels per mosaic: "
        f"mean {per.mean():.2f}, min {per.min():.0f}, max {per.max():.0f}"
    )


if __name__ == "__main__":
    main()

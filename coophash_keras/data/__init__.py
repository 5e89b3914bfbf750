from coophash_keras.data.datasets import load_dataset
from coophash_keras.data.files import (
    UNLABELED,
    ImageFileError,
    decode_image,
    load_image_csv,
    load_image_files,
    load_image_folder,
)
from coophash_keras.data.image_set import ImageSet, from_arrays, with_unlabeled
from coophash_keras.data.loaders import FASHION_MNIST_DIR, load_digits, load_fashion_mnist, load_tfds
from coophash_keras.data.split import RetrievalSplit, retrieval_split
from coophash_keras.data.validation import validate_fit_data, validate_images, validate_labels

__all__ = [
    "FASHION_MNIST_DIR",
    "ImageFileError",
    "ImageSet",
    "UNLABELED",
    "decode_image",
    "from_arrays",
    "load_dataset",
    "load_digits",
    "load_fashion_mnist",
    "load_image_csv",
    "load_image_files",
    "load_image_folder",
    "load_tfds",
    "RetrievalSplit",
    "retrieval_split",
    "validate_fit_data",
    "validate_images",
    "validate_labels",
    "with_unlabeled",
]

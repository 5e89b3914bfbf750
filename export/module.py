"""The export contract, in the shape of tensorflow/models' official/core/export_base.py: a small
module that holds the hashing network (and optionally a database of packed codes) and builds one
tf.function per serving signature. It imports no training code.

Signatures (inputs -> outputs), the same for every registered model:
  serving_default       images uint8 [N, H, W, C]       -> codes int8 +-1 [N, K], packed uint8 [N, K/8],
                                                           energy float [N], class_probs float [N, C],
                                                           in_distribution bool [N] (when calibrated)
  hash_image_bytes      image_bytes string [N] (PNG/JPEG/GIF/BMP, decoded and resized in the graph
                                                           as the package decodes files: image_decode.py)
                                                        -> the same
  search                images (with a database)        -> ids int64 [N, k], distances int32 [N, k],
                                                           codes, packed (+ energy, in_distribution when
                                                           calibrated)
  search_image_bytes    image_bytes (with a database)   -> the same as search

`in_distribution` is energy >= a threshold chosen at export (export/saved_model.py: the energy that
a stated share of held-out in-distribution images reach); exports without calibration images keep
the four outputs above and no more.
"""

import numpy as np
import tensorflow as tf

from coophash_keras.codes import pack_codes_tf
from coophash_keras.export.image_decode import decode_like_pil, exif_orientation
from coophash_keras.preprocessing import normalize_images

SIGNATURES = ("serving_default", "hash_image_bytes", "search", "search_image_bytes")


def hamming_topk(query_packed, database_packed, k):
    """Top-k database rows by Hamming distance to each packed query, in the graph: xor, popcount,
    top_k. Ties go to the lower database index (top_k is stable), as in coophash_keras.metrics.
    Returns (distances int32 [Q, k], indices int32 [Q, k])."""
    xor = tf.bitwise.bitwise_xor(query_packed[:, None, :], database_packed[None, :, :])
    distances = tf.reduce_sum(tf.cast(tf.raw_ops.PopulationCount(x=xor), tf.int32), axis=-1)
    neg, indices = tf.math.top_k(-distances, k=k)
    return -neg, indices


class HashingExportModule(tf.Module):
    """Serving functions over `network` for images of `image_shape`. With `database_packed`
    (uint8 [M, K/8]) and `database_ids` (int64 [M]) it also answers top-`search_k` retrieval. With
    `ood_threshold` (float) every signature also answers `in_distribution` = energy >= it."""

    def __init__(
        self,
        network,
        image_shape,
        num_bits,
        multi_label=False,
        database_packed=None,
        database_ids=None,
        search_k=10,
        ood_threshold=None,
    ):
        super().__init__(name="hashing_export")
        self.hash_network = network
        self.image_shape = tuple(int(d) for d in image_shape)
        self.num_bits = int(num_bits)
        self.multi_label = bool(multi_label)
        self.database = None
        if database_packed is not None:
            packed = np.asarray(database_packed, np.uint8)
            if packed.ndim != 2 or packed.shape[1] * 8 != self.num_bits:
                raise ValueError(f"database codes must be packed uint8 [N, {self.num_bits // 8}], got {packed.shape}")
            ids = np.arange(len(packed)) if database_ids is None else np.asarray(database_ids, np.int64)
            if ids.shape != (len(packed),):
                raise ValueError(f"{len(ids)} database ids for {len(packed)} codes")
            if int(search_k) < 1:
                raise ValueError(f"search_k must be >= 1, got {search_k}")
            self.search_k = int(min(search_k, len(packed)))
            # Variables, not graph constants: large databases stay out of the 2 GB GraphDef limit.
            self.database = (
                tf.Variable(packed, trainable=False, name="database_packed_codes"),
                tf.Variable(ids.astype(np.int64), trainable=False, name="database_ids"),
            )
        self.ood_threshold = None
        if ood_threshold is not None:
            if not np.isfinite(ood_threshold):
                raise ValueError(f"the OOD threshold must be finite, got {ood_threshold}")
            # A variable, so the SavedModel itself carries it (loaded.ood_threshold[0]).
            self.ood_threshold = tf.Variable(float(ood_threshold), trainable=False, name="ood_threshold")

    # ------------------------------------------------------------------ the computations
    def serve(self, images):
        """uint8 images -> codes, packed, energy, class_probs (normalised exactly as in training)."""
        out = self.hash_network.serving_outputs(normalize_images(images))
        codes = tf.where(out["relaxed_codes"] >= 0, tf.constant(1, tf.int8), tf.constant(-1, tf.int8))
        logits = out["class_logits"]
        outputs = {
            "codes": codes,
            "packed": pack_codes_tf(codes),
            "energy": out["energy"],
            "class_probs": tf.sigmoid(logits) if self.multi_label else tf.nn.softmax(logits),
        }
        if self.ood_threshold is not None:
            outputs["in_distribution"] = out["energy"] >= self.ood_threshold
        return outputs

    def decode(self, image_bytes):
        """Encoded images (PNG, JPEG, GIF, BMP) -> uint8 [N, H, W, C] at the model's size: the
        pixels the package's own decoder gives for the same files (export/image_decode.py), so a
        photo sent as bytes gets the codes it was indexed with."""
        h, w, c = self.image_shape
        return tf.map_fn(
            lambda item: decode_like_pil(item[0], h, w, c, orientation=item[1]),
            (image_bytes, exif_orientation(image_bytes)),
            fn_output_signature=tf.TensorSpec([h, w, c], tf.uint8),
        )

    def search(self, images):
        out = self.serve(images)
        codes_var, ids_var = self.database
        distances, rows = hamming_topk(out["packed"], codes_var, self.search_k)
        result = {
            "ids": tf.gather(ids_var, rows),
            "distances": distances,
            "codes": out["codes"],
            "packed": out["packed"],
        }
        if self.ood_threshold is not None:  # flags the queries unlike the training images
            result.update(energy=out["energy"], in_distribution=out["in_distribution"])
        return result

    # ------------------------------------------------------------------ the signatures
    def signatures(self):
        """{signature name: tf.function with its input signature}."""
        image_spec = tf.TensorSpec([None, *self.image_shape], tf.uint8, name="images")
        bytes_spec = tf.TensorSpec([None], tf.string, name="image_bytes")
        functions = {
            "serving_default": tf.function(self.serve, input_signature=[image_spec]),
            "hash_image_bytes": tf.function(
                lambda image_bytes: self.serve(self.decode(image_bytes)), input_signature=[bytes_spec]
            ),
        }
        if self.database is not None:
            functions["search"] = tf.function(self.search, input_signature=[image_spec])
            functions["search_image_bytes"] = tf.function(
                lambda image_bytes: self.search(self.decode(image_bytes)), input_signature=[bytes_spec]
            )
        return functions

    def archive(self):
        """A keras.export.ExportArchive with the network's variables, the database and every
        signature, ready for `write_out`."""
        import keras

        archive = keras.export.ExportArchive()
        archive.track(self.hash_network)
        if self.database is not None:
            archive.add_variable_collection("database", list(self.database))
        if self.ood_threshold is not None:
            archive.add_variable_collection("ood_threshold", [self.ood_threshold])
        for name, fn in self.signatures().items():
            archive.add_endpoint(name, fn)
        return archive

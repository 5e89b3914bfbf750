"""Build the TF-Serving SavedModel of a trained CoopHash: signatures over the descriptor only.

Layout written: <base>/<name>/<version>/{saved_model.pb, variables/, assets/, assets.extra/
tf_serving_warmup_requests, fingerprint.pb}, the layout `tensorflow_model_server
--model_base_path=<base>/<name>` loads. Only inference code is imported here (layers, the
descriptor, preprocessing, codes): no train_step, losses, Langevin or optimizers."""

import json
import os
import re
import shutil
import tempfile
import zipfile

import keras
import numpy as np
import tensorflow as tf

from coophash_keras.codes import pack_codes_tf
from coophash_keras.models.descriptor import MultipurposeDescriptor
from coophash_keras.preprocessing import normalize_images

SIGNATURES = ("serving_default", "hash_image_bytes", "search")
# Models whose weights live under `descriptor/` in a MultipurposeDescriptor (DSH-GAN keeps its
# streams there too, so both export the same way).
_EXPORTABLE = ("coophash>CoopHash", "coophash>DSHGAN")


class _WeightsHolder(keras.Model):
    """Same attribute path as CoopHash (`descriptor/...`), so the descriptor's weights load from a
    CoopHash `.keras` file while the generator, optimizers and training code stay out."""

    def __init__(self, descriptor):
        super().__init__()
        self.descriptor = descriptor

    def build(self, input_shape=None):
        self.built = True


def load_descriptor(model_path):
    """(descriptor, CoopHashConfig dict) from a CoopHash `.keras` file."""
    if not os.path.exists(model_path):
        raise FileNotFoundError(f"no model file at {model_path}")
    try:
        with zipfile.ZipFile(model_path) as zf:
            config = json.loads(zf.read("config.json"))
            tmp = tempfile.mkdtemp()
            zf.extract("model.weights.h5", tmp)
    except (zipfile.BadZipFile, KeyError, json.JSONDecodeError) as exc:
        raise ValueError(f"{model_path} is not a CoopHash .keras file: {exc}") from None
    try:
        if config.get("registered_name") not in _EXPORTABLE:
            raise ValueError(f"{model_path} holds a {config.get('class_name')!r}, not a CoopHash (or DSH-GAN) model")
        cfg = config["config"]["config"]
        descriptor = MultipurposeDescriptor(
            cfg["image_shape"],
            cfg["num_classes"],
            cfg["num_bits"],
            cfg["latent_dim"],
            cfg["base_filters"],
            cfg["feature_dim"],
            name="descriptor",
        )
        descriptor.build()
        holder = _WeightsHolder(descriptor)
        holder.build()
        holder.load_weights(os.path.join(tmp, "model.weights.h5"))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return descriptor, cfg


def hamming_topk(query_packed, database_packed, k):
    """Top-k database rows by Hamming distance to each packed query, in the graph: xor, popcount,
    top_k. Ties go to the lower database index (top_k is stable), as in coophash_keras.metrics.
    Returns (distances int32 [Q, k], indices int32 [Q, k])."""
    xor = tf.bitwise.bitwise_xor(query_packed[:, None, :], database_packed[None, :, :])
    distances = tf.reduce_sum(tf.cast(tf.raw_ops.PopulationCount(x=xor), tf.int32), axis=-1)
    neg, indices = tf.math.top_k(-distances, k=k)
    return -neg, indices


def next_version(base, name):
    """1 + the largest integer version directory under <base>/<name> (1 if none)."""
    root = os.path.join(base, name)
    versions = [int(d) for d in os.listdir(root) if d.isdigit()] if os.path.isdir(root) else []
    return max(versions, default=0) + 1


def _outputs(descriptor, images_uint8, multi_label):
    features = descriptor.features(normalize_images(images_uint8))
    relaxed = descriptor.hash_head(features)
    codes = tf.where(relaxed >= 0, tf.constant(1, tf.int8), tf.constant(-1, tf.int8))
    logits = descriptor.classifier_head(features)
    return {
        "codes": codes,
        "packed": pack_codes_tf(codes),
        # OOD score: log sum_c exp(f_E(x, c)). Higher = more like the training data.
        "energy": tf.reduce_logsumexp(descriptor.energy_head(features), axis=-1),
        "class_probs": tf.sigmoid(logits) if multi_label else tf.nn.softmax(logits),
    }


def build_archive(descriptor, cfg, database_packed=None, database_ids=None, search_k=10):
    h, w, c = cfg["image_shape"]
    multi_label = bool(cfg.get("multi_label", False))
    archive = keras.export.ExportArchive()
    archive.track(descriptor)
    image_spec = tf.TensorSpec([None, h, w, c], tf.uint8, name="images")

    @tf.function(input_signature=[image_spec])
    def serving_default(images):
        return _outputs(descriptor, images, multi_label)

    def decode(data):
        img = tf.io.decode_image(data, channels=c, expand_animations=False)
        img = tf.image.resize(tf.cast(img, tf.float32), [h, w])
        return tf.cast(tf.clip_by_value(tf.round(img), 0, 255), tf.uint8)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="image_bytes")])
    def hash_image_bytes(image_bytes):
        images = tf.map_fn(decode, image_bytes, fn_output_signature=tf.TensorSpec([h, w, c], tf.uint8))
        return _outputs(descriptor, images, multi_label)

    archive.add_endpoint("serving_default", serving_default)
    archive.add_endpoint("hash_image_bytes", hash_image_bytes)

    if database_packed is not None:
        database_packed = np.asarray(database_packed, np.uint8)
        if database_packed.ndim != 2 or database_packed.shape[1] * 8 != cfg["num_bits"]:
            raise ValueError(
                f"database codes must be packed uint8 [N, {cfg['num_bits'] // 8}], got {database_packed.shape}"
            )
        ids = np.arange(len(database_packed)) if database_ids is None else np.asarray(database_ids, np.int64)
        if len(ids) != len(database_packed):
            raise ValueError(f"{len(ids)} database ids for {len(database_packed)} codes")
        k = int(min(search_k, len(database_packed)))
        if k < 1:
            raise ValueError(f"search_k must be >= 1, got {search_k}")
        # Variables, not graph constants: large databases stay out of the 2 GB GraphDef limit.
        db_var = tf.Variable(database_packed, trainable=False, name="database_packed_codes")
        ids_var = tf.Variable(ids.astype(np.int64), trainable=False, name="database_ids")
        archive.add_variable_collection("database", [db_var, ids_var])

        @tf.function(input_signature=[image_spec])
        def search(images):
            out = _outputs(descriptor, images, multi_label)
            distances, rows = hamming_topk(out["packed"], db_var, k)
            return {
                "ids": tf.gather(ids_var, rows),
                "distances": distances,
                "codes": out["codes"],
                "packed": out["packed"],
            }

        archive.add_endpoint("search", search)
    return archive


def _write_warmup(export_dir, name, cfg, signatures):
    """assets.extra/tf_serving_warmup_requests: a PredictionLog per signature, replayed by
    TF-Serving (and our server) at load time so the first user request is not slow."""
    from tensorflow_serving.apis import model_pb2, predict_pb2, prediction_log_pb2

    h, w, c = cfg["image_shape"]
    os.makedirs(os.path.join(export_dir, "assets.extra"), exist_ok=True)
    png = tf.io.encode_png(tf.zeros([h, w, c], tf.uint8)).numpy()
    path = os.path.join(export_dir, "assets.extra", "tf_serving_warmup_requests")
    with tf.io.TFRecordWriter(path) as writer:
        for sig in signatures:
            req = predict_pb2.PredictRequest(model_spec=model_pb2.ModelSpec(name=name, signature_name=sig))
            if sig == "hash_image_bytes":
                req.inputs["image_bytes"].CopyFrom(tf.make_tensor_proto([png], dtype=tf.string))
            else:
                req.inputs["images"].CopyFrom(tf.make_tensor_proto(np.zeros((1, h, w, c), np.uint8)))
            log = prediction_log_pb2.PredictionLog(predict_log=prediction_log_pb2.PredictLog(request=req))
            writer.write(log.SerializeToString())


def write_models_config(base):
    """<base>/models.config listing every model directory under base (for --model_config_file)."""
    entries = []
    for name in sorted(os.listdir(base)):
        if os.path.isdir(os.path.join(base, name)) and any(d.isdigit() for d in os.listdir(os.path.join(base, name))):
            entries.append(
                f"  config {{\n    name: '{name}'\n    base_path: '/models/{name}'\n    model_platform: 'tensorflow'\n  }}"
            )
    path = os.path.join(base, "models.config")
    with open(path, "w") as fh:
        fh.write("model_config_list {\n" + "\n".join(entries) + "\n}\n")
    return path


def export_saved_model(
    model_path, base, name="coophash", version=None, database_images=None, database_ids=None, search_k=10, warmup=True
):
    """Write <base>/<name>/<version>/ and return its path. With `database_images` (uint8), their
    packed codes and ids are embedded and a `search` signature answers top-k retrieval."""
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
        raise ValueError(f"model name must be letters, digits, '_', '.' or '-', got {name!r}")
    descriptor, cfg = load_descriptor(model_path)
    version = next_version(base, name) if version is None else int(version)
    if version < 1:
        raise ValueError(f"version must be a positive integer, got {version}")
    export_dir = os.path.join(base, name, str(version))
    if os.path.exists(export_dir):
        raise ValueError(f"{export_dir} already exists; pick another --version (next free: {next_version(base, name)})")
    database_packed = None
    if database_images is not None:
        from coophash_keras.data.validation import validate_images

        images = validate_images(database_images, tuple(cfg["image_shape"]), "database images")
        database_packed = np.concatenate(
            [
                _outputs(descriptor, tf.constant(images[i : i + 1024], tf.uint8), False)["packed"].numpy()
                for i in range(0, len(images), 1024)
            ]
        )
    archive = build_archive(descriptor, cfg, database_packed, database_ids, search_k)
    # Write next to the final directory, then rename: TF-Serving polls <base>/<name> and must never
    # see a half-written version.
    os.makedirs(os.path.join(base, name), exist_ok=True)
    tmp_dir = tempfile.mkdtemp(prefix=f".tmp-{version}-", dir=os.path.join(base, name))
    os.chmod(tmp_dir, 0o755)  # mkdtemp makes it owner-only; a serving container may run as another user
    try:
        archive.write_out(tmp_dir, verbose=False)
        signatures = ["serving_default", "hash_image_bytes"] + (["search"] if database_packed is not None else [])
        if warmup:
            _write_warmup(tmp_dir, name, cfg, signatures)
        os.makedirs(os.path.join(tmp_dir, "assets.extra"), exist_ok=True)
        with open(os.path.join(tmp_dir, "assets.extra", "coophash.json"), "w") as fh:
            from coophash_keras.io import model_fingerprint

            json.dump(
                {
                    "config": cfg,
                    "source_model": os.path.abspath(model_path),
                    "signatures": signatures,
                    "model_fingerprint": model_fingerprint(model_path),
                    "search_k": search_k if database_packed is not None else None,
                    "database_size": None if database_packed is None else int(len(database_packed)),
                },
                fh,
                indent=2,
            )
        os.replace(tmp_dir, export_dir)
    finally:
        if os.path.exists(tmp_dir):
            shutil.rmtree(tmp_dir, ignore_errors=True)
    write_models_config(base)
    return export_dir

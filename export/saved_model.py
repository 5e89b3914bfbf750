"""Write the TF-Serving SavedModel of a trained hashing model (any registered model).

Layout written: <base>/<name>/<version>/{saved_model.pb, variables/, assets/, assets.extra/
{tf_serving_warmup_requests, coophash.json}, fingerprint.pb}, the layout `tensorflow_model_server
--model_base_path=<base>/<name>` loads. Only inference code is imported (the network's layers,
preprocessing, codes): no train_step, losses, Langevin or optimizers. The signatures are
export/module.py's."""

import json
import os
import re
import shutil
import tempfile

import numpy as np
import tensorflow as tf

from coophash_keras.export.module import HashingExportModule
from coophash_keras.export.weights import load_hashing_network


def next_version(base, name):
    """1 + the largest integer version directory under <base>/<name> (1 if none)."""
    root = os.path.join(base, name)
    versions = [int(d) for d in os.listdir(root) if d.isdigit()] if os.path.isdir(root) else []
    return max(versions, default=0) + 1


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
            if sig.endswith("image_bytes"):
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


def _serve_batched(module, images, output, what, batch=1024):
    """One serving output of `images` (uint8, validated against the model's shape), in batches."""
    from coophash_keras.data.validation import validate_images

    images = validate_images(images, module.image_shape, what)
    return np.concatenate(
        [
            module.serve(tf.constant(images[i : i + batch], tf.uint8))[output].numpy()
            for i in range(0, len(images), batch)
        ]
    )


def min_calibration_images(tpr):
    """The fewest held-out images that can tell a threshold at `tpr` (one may fall below it)."""
    if not 0.0 < tpr < 1.0:
        raise ValueError(f"--ood-tpr must be strictly between 0 and 1, got {tpr}")
    return int(np.ceil(1.0 / (1.0 - tpr) - 1e-9))


def served_energy_meaning(network):
    """What the export's `energy` output is for `network`, in words (the export's metadata).

    Args:
        network: a hashing network as `load_hashing_network` returns it.

    Returns:
        A string naming the score: CoopHash's energy head or its class logits' free energy
        (config.served_energy; for a multi-label model the free energy over label sets), DSH-GAN's adversary logit, a pointwise model's free energy, or a
        label-free model's feature distance.
    """
    from coophash_keras.models.networks import ProjectionHashNetwork

    served = getattr(network, "served_energy", None)
    if served == "min_z":
        free = "JointEnergy, sum_c softplus" if getattr(network, "multi_label", False) else "log sum_c exp"
        return (
            f"min_z: the smaller of the energy head's and the class logits' free energy's ({free}) z-scores "
            "(each by its mean and std on the training images)"
        )
    if served == "energy_head":
        return "energy_head: log sum_c exp f_E(x, c) of the descriptor's energy head (DSH-GAN: its adversary logit)"
    if isinstance(network, ProjectionHashNetwork):
        return "feature_distance: minus the squared distance of the features to their mean (label-free model)"
    if getattr(network, "multi_label", False):
        return (
            "class_free_energy: sum_c softplus of the class logits, the free energy of independent "
            "sigmoids over label sets (JointEnergy, Wang et al. 2021)"
        )
    return "class_free_energy: log sum_c exp of the class logits (free energy, Liu et al. 2020)"


def calibrate_ood_threshold(module, images, tpr):
    """The energy threshold that keeps `tpr` of `images` (held-out in-distribution images, never
    trained on) as in distribution, and the share of them it keeps (>= tpr; more with ties)."""
    from coophash_keras.metrics.ood import threshold_at_tpr

    needed = min_calibration_images(tpr)
    if len(images) < needed:
        raise ValueError(f"a threshold at TPR {tpr} needs at least {needed} held-out images, got {len(images)}")
    energies = _serve_batched(module, images, "energy", "OOD calibration images")
    threshold = threshold_at_tpr(energies, tpr)
    return threshold, float(np.mean(energies >= threshold))


def export_saved_model(
    model_path,
    base,
    name="coophash",
    version=None,
    database_images=None,
    database_ids=None,
    search_k=10,
    warmup=True,
    ood_images=None,
    ood_tpr=0.95,
    database_batches=None,
):
    """Write <base>/<name>/<version>/ and return its path. With `database_images` (uint8), their
    packed codes and ids are embedded and the `search` signatures answer top-k retrieval; or, for
    a database too large to decode at once, `database_batches`: an iterable of (uint8 images,
    int64 ids) pairs, encoded one at a time (only the codes are held). With `ood_images` (uint8
    held-out in-distribution images), every signature also answers `in_distribution` = energy >=
    the threshold that keeps `ood_tpr` of them."""
    if database_batches is not None and database_images is not None:
        raise ValueError("pass database_images or database_batches, not both")
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
        raise ValueError(f"model name must be letters, digits, '_', '.' or '-', got {name!r}")
    network, cfg = load_hashing_network(model_path)
    version = next_version(base, name) if version is None else int(version)
    if version < 1:
        raise ValueError(f"version must be a positive integer, got {version}")
    export_dir = os.path.join(base, name, str(version))
    if os.path.exists(export_dir):
        raise ValueError(f"{export_dir} already exists; pick another --version (next free: {next_version(base, name)})")
    multi_label = cfg.get("multi_label", False)
    plain = HashingExportModule(network, cfg["image_shape"], cfg["num_bits"], multi_label)
    ood = None
    if ood_images is not None:
        threshold, kept = calibrate_ood_threshold(plain, ood_images, ood_tpr)
        ood = {"score": "energy", "energy": served_energy_meaning(network), "threshold": threshold}
        ood["tpr"] = float(ood_tpr)
        ood.update(calibration_images=len(ood_images), calibration_tpr=kept)
    database_packed = None
    if database_images is not None:
        database_packed = _serve_batched(plain, database_images, "packed", "database images")
    elif database_batches is not None:
        packed, ids = [], []
        for images, batch_ids in database_batches:
            packed.append(_serve_batched(plain, images, "packed", "database images"))
            ids.append(np.asarray(batch_ids, np.int64))
        if not packed or sum(len(p) for p in packed) == 0:
            raise ValueError("the database is empty: no image could be encoded")
        database_packed, database_ids = np.concatenate(packed), np.concatenate(ids)
    module = HashingExportModule(
        network,
        cfg["image_shape"],
        cfg["num_bits"],
        multi_label,
        database_packed,
        database_ids,
        search_k,
        ood_threshold=None if ood is None else ood["threshold"],
    )
    signatures = list(module.signatures())
    # Write next to the final directory, then rename: TF-Serving polls <base>/<name> and must never
    # see a half-written version.
    os.makedirs(os.path.join(base, name), exist_ok=True)
    tmp_dir = tempfile.mkdtemp(prefix=f".tmp-{version}-", dir=os.path.join(base, name))
    os.chmod(tmp_dir, 0o755)  # mkdtemp makes it owner-only; a serving container may run as another user
    try:
        module.archive().write_out(tmp_dir, verbose=False)
        if warmup:
            _write_warmup(tmp_dir, name, cfg, signatures)
        os.makedirs(os.path.join(tmp_dir, "assets.extra"), exist_ok=True)
        from coophash_keras.io import model_fingerprint

        info = {
            "config": cfg,
            "source_model": os.path.abspath(model_path),
            "signatures": signatures,
            "model_fingerprint": model_fingerprint(model_path),
            "search_k": module.search_k if module.database is not None else None,
            "database_size": None if module.database is None else int(module.database[0].shape[0]),
            "energy": served_energy_meaning(network),  # what the `energy` output is (docs/SERVING.md)
            "ood": ood,  # None: exported without held-out images, so no in_distribution output
        }
        with open(os.path.join(tmp_dir, "assets.extra", "coophash.json"), "w") as fh:
            json.dump(info, fh, indent=2)
        os.replace(tmp_dir, export_dir)
    finally:
        if os.path.exists(tmp_dir):
            shutil.rmtree(tmp_dir, ignore_errors=True)
    write_models_config(base)
    return export_dir

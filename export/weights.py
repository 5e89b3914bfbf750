"""Read the hashing network of any registered model out of a `.keras` file, without its training
code: the file's config names the network (a serialised inference layer, see
coophash_keras/models/networks.py) and its weights live under `hash_network/` in model.weights.h5."""

import json
import os
import shutil
import tempfile
import zipfile

import keras

import coophash_keras.layers  # noqa: F401  (registers the inference layers with Keras)
import coophash_keras.models.descriptor  # noqa: F401
import coophash_keras.models.networks  # noqa: F401


class _NetworkHolder(keras.Model):
    """Same attribute path as every hashing model (`hash_network/...`), so the network's weights load
    from the model's weights file while the generator, optimizers and training code stay out."""

    def __init__(self, network):
        super().__init__()
        self.hash_network = network

    def build(self, input_shape=None):
        self.built = True


def load_hashing_network(model_path):
    """(network, model config dict) from a `.keras` file of any model in coophash_keras.registry."""
    if not os.path.exists(model_path):
        raise FileNotFoundError(f"no model file at {model_path}")
    tmp = tempfile.mkdtemp()
    try:
        try:
            with zipfile.ZipFile(model_path) as zf:
                saved = json.loads(zf.read("config.json"))
                zf.extract("model.weights.h5", tmp)
        except (zipfile.BadZipFile, KeyError, json.JSONDecodeError) as exc:
            raise ValueError(f"{model_path} is not a .keras model file: {exc}") from None
        inner = saved.get("config") or {}
        if "network" not in inner or "config" not in inner:
            raise ValueError(
                f"{model_path} holds a {saved.get('class_name')!r}, not a coophash-keras hashing model "
                "(no 'network' in its config)"
            )
        network = keras.saving.deserialize_keras_object(inner["network"])
        # Which free energy it serves follows the model's label model; a network saved before it
        # said so (no `multi_label` in its config) takes it from the model's config.
        network.multi_label = bool(inner.get("config", {}).get("multi_label", False))
        if not network.built:  # Keras builds it from the saved build_config
            network.build()
        holder = _NetworkHolder(network)
        holder.build()
        holder.load_weights(os.path.join(tmp, "model.weights.h5"))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return network, inner["config"]

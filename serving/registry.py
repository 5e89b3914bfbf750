"""Models under a base path, as TF-Serving serves them: <base>/<name>/<int version>/saved_model.pb,
the latest version of each model loaded, new versions picked up by a poller without a restart."""

import json
import logging
import os
import threading

import numpy as np
import tensorflow as tf
from tensorflow.core.protobuf import saved_model_pb2

from serving.errors import ServingError, invalid, not_found

log = logging.getLogger("coophash.serving")


def _op_error_message(exc):
    """The informative line of a TF op error ("Graph execution error:" and node traces dropped)."""
    lines = [ln.strip() for ln in exc.message.splitlines() if ln.strip()]
    useful = [
        ln
        for ln in lines
        if not ln.startswith(("Graph execution error", "Detected at node", "<stack traces", "[[", "File "))
    ]
    return (useful[0] if useful else lines[0]).split(" [[")[0] if lines else "TensorFlow op error"


class Signature:
    """One SignatureDef: its concrete function and the dtype/shape of every input and output."""

    def __init__(self, name, fn, signature_def):
        self.name = name
        self.fn = fn
        self.signature_def = signature_def
        self.inputs = {
            k: (tf.dtypes.as_dtype(v.dtype), [d.size for d in v.tensor_shape.dim])
            for k, v in signature_def.inputs.items()
        }
        self.outputs = {
            k: (tf.dtypes.as_dtype(v.dtype), [d.size for d in v.tensor_shape.dim])
            for k, v in signature_def.outputs.items()
        }

    def check_and_convert(self, inputs):
        """numpy arrays keyed by input name -> tensors, with errors that name the problem."""
        sent, wanted = set(inputs), set(self.inputs)
        if sent != wanted:
            raise invalid(
                f"input size does not match signature: {len(sent)}!={len(wanted)} len({sorted(wanted)}). "
                f"Sent extra: {sorted(sent - wanted)}. Missing but required: {sorted(wanted - sent)}."
            )
        tensors = {}
        for key, value in inputs.items():
            dtype, shape = self.inputs[key]
            arr = np.asarray(value)
            if len(shape) != arr.ndim or any(s != -1 and s != a for s, a in zip(shape, arr.shape)):
                want = "[" + ", ".join("-1" if s == -1 else str(s) for s in shape) + "]"
                raise invalid(f"input '{key}' of signature '{self.name}' must have shape {want}, got {list(arr.shape)}")
            if dtype == tf.string:
                if arr.dtype.kind not in "OSU":
                    raise invalid(f"input '{key}' must be DT_STRING (b64 objects or strings), got {arr.dtype}")
                tensors[key] = tf.constant(arr.astype(object), tf.string)
                continue
            np_dtype = dtype.as_numpy_dtype
            if dtype.is_integer:
                if arr.dtype.kind not in "iu":
                    raise invalid(f"input '{key}' must be {dtype.name} integers, got values of type {arr.dtype}")
                info = np.iinfo(np_dtype)
                if arr.size and (arr.min() < info.min or arr.max() > info.max):
                    raise invalid(
                        f"input '{key}' values must fit {dtype.name} [{info.min}, {info.max}], "
                        f"got range [{arr.min()}, {arr.max()}]"
                    )
            elif dtype.is_floating and arr.dtype.kind not in "iuf":
                raise invalid(f"input '{key}' must be {dtype.name} numbers, got values of type {arr.dtype}")
            tensors[key] = tf.constant(arr.astype(np_dtype), dtype)
        return tensors

    def run(self, inputs, output_filter=None):
        tensors = self.check_and_convert(inputs)
        if output_filter:
            unknown = [o for o in output_filter if o not in self.outputs]
            if unknown:
                raise invalid(
                    f"output tensor alias not found in signature: {unknown[0]} Outputs expected to be "
                    f"in the set {{{', '.join(sorted(self.outputs))}}}."
                )
        try:
            out = self.fn(**tensors)
        except (tf.errors.InvalidArgumentError, tf.errors.OutOfRangeError) as exc:
            raise invalid(_op_error_message(exc)) from None
        except tf.errors.OpError as exc:
            raise ServingError("INTERNAL", _op_error_message(exc)) from None
        names = output_filter or sorted(out)
        return {k: out[k].numpy() for k in names}


class Servable:
    def __init__(self, name, version, path):
        self.name, self.version, self.path = name, version, path
        self.loaded = tf.saved_model.load(path)
        meta = saved_model_pb2.SavedModel()
        with open(os.path.join(path, "saved_model.pb"), "rb") as fh:
            meta.ParseFromString(fh.read())
        graph = meta.meta_graphs[0]
        self.signature_defs = dict(graph.signature_def)
        self.signatures = {
            k: Signature(k, self.loaded.signatures[k], self.signature_defs[k]) for k in self.loaded.signatures
        }
        info_path = os.path.join(path, "assets.extra", "coophash.json")
        self.info = {}
        if os.path.exists(info_path):
            with open(info_path) as fh:
                self.info = json.load(fh)
        self._warm_up()

    def _warm_up(self):
        """Replay assets.extra/tf_serving_warmup_requests, as TF-Serving does at load time."""
        path = os.path.join(self.path, "assets.extra", "tf_serving_warmup_requests")
        if not os.path.exists(path):
            return
        from tensorflow_serving.apis import prediction_log_pb2

        for record in tf.data.TFRecordDataset(path):
            entry = prediction_log_pb2.PredictionLog.FromString(record.numpy())
            req = entry.predict_log.request
            sig = self.signature(req.model_spec.signature_name or "serving_default")
            sig.run({k: tf.make_ndarray(v) for k, v in req.inputs.items()})

    def signature_def_map(self):
        """The SignatureDefMap that metadata requests return (REST and gRPC alike)."""
        from tensorflow_serving.apis import get_model_metadata_pb2

        sigmap = get_model_metadata_pb2.SignatureDefMap()
        for k, v in self.signature_defs.items():
            sigmap.signature_def[k].CopyFrom(v)
        return sigmap

    def signature(self, name):
        if name not in self.signatures:
            raise invalid(f'Serving signature name: "{name}" not found in signature def')
        return self.signatures[name]


def _versions(model_dir):
    out = []
    for entry in os.listdir(model_dir):
        full = os.path.join(model_dir, entry)
        if entry.isdigit() and os.path.exists(os.path.join(full, "saved_model.pb")):
            out.append((int(entry), full))
    return sorted(out)


class ModelRegistry:
    """Serves the latest version of every model under `base_path`; `poll()` loads new versions."""

    def __init__(self, base_path, poll_interval=1.0):
        if not os.path.isdir(base_path):
            raise FileNotFoundError(f"model base path {base_path} does not exist")
        self.base_path = base_path
        self.poll_interval = poll_interval
        self._models = {}
        self._failed = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = None
        self.poll()

    def poll(self):
        for name in sorted(os.listdir(self.base_path)):
            model_dir = os.path.join(self.base_path, name)
            if not os.path.isdir(model_dir):
                continue
            versions = _versions(model_dir)
            if not versions:
                continue
            version, path = versions[-1]
            current = self._models.get(name)
            if (current is not None and current.version == version) or (name, version) in self._failed:
                continue
            try:
                servable = Servable(name, version, path)
            except Exception as exc:  # a broken export must not take the server down
                log.error("could not load %s version %s from %s: %s", name, version, path, exc)
                self._failed.add((name, version))
                continue
            with self._lock:
                self._models[name] = servable
            log.info("serving %s version %d from %s", name, version, path)

    def start_polling(self):
        def loop():
            while not self._stop.wait(self.poll_interval):
                try:
                    self.poll()
                except Exception as exc:  # keep polling whatever happens on disk
                    log.error("poll failed: %s", exc)

        self._thread = threading.Thread(target=loop, name="model-poller", daemon=True)
        self._thread.start()

    def stop(self):
        self._stop.set()

    def get(self, name, version=None):
        with self._lock:
            servable = self._models.get(name)
        if servable is None or (version is not None and version != servable.version):
            spec = f"Latest({name})" if version is None else f"Specific({name}, {version})"
            raise not_found(f"Servable not found for request: {spec}")
        return servable

    def status(self, name, version=None):
        with self._lock:
            servable = self._models.get(name)
        if servable is None:
            raise not_found(f"Could not find any versions of model {name}")
        if version is not None and version != servable.version:
            raise not_found(f"Could not find version {version} of model {name}")
        return [(servable.version, "AVAILABLE")]

    def names(self):
        with self._lock:
            return sorted(self._models)

"""Models under a base path, as TF-Serving serves them: <base>/<name>/<int version>/saved_model.pb,
the latest version of each model loaded, new versions picked up by a poller without a restart."""

import json
import logging
import os
import threading
import time
from dataclasses import dataclass

import numpy as np
import tensorflow as tf
from tensorflow.core.protobuf import saved_model_pb2

from coophash_keras.serving.errors import ServingError, invalid, not_found
from coophash_keras.serving.status import load_error_code

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


def _direct(fn):
    """A loaded signature as a plain concrete function with the same inputs, outputs and graph.

    A SavedModel's signatures load as `_WrapperFunction`s, which on every call look at each
    captured variable (214 for MobileNetV3Small) to see whether it is a distributed one: about
    0.7 ms of Python per call, holding the GIL, that the model's own threads and the REST threads
    wait for (measured: at batch 8, 1.35 -> 0.65 ms of the calling thread's CPU; the outputs are
    identical). Tracing it once into a tf.function with the signature's input spec (None batch
    axis, so no retracing for new batch sizes) resolves the captures once, at load time."""
    args, kwargs = fn.structured_input_signature
    if args:  # signatures take keyword inputs only; anything else is left as it is
        return fn
    try:
        return tf.function(lambda **inputs: fn(**inputs)).get_concrete_function(**kwargs)
    except Exception as exc:  # never worse than the loaded function
        log.warning("signature left as loaded (%s: %s)", type(exc).__name__, exc)
        return fn


class Signature:
    """One SignatureDef: its concrete function and the dtype/shape of every input and output."""

    def __init__(self, name, fn, signature_def):
        self.name = name
        self.fn = _direct(fn)
        self.signature_def = signature_def
        self.inputs = {
            k: (tf.dtypes.as_dtype(v.dtype), [d.size for d in v.tensor_shape.dim])
            for k, v in signature_def.inputs.items()
        }
        self.outputs = {
            k: (tf.dtypes.as_dtype(v.dtype), [d.size for d in v.tensor_shape.dim])
            for k, v in signature_def.outputs.items()
        }

    def check(self, inputs):
        """numpy-convertible values keyed by input name -> numpy arrays of the inputs' dtypes
        (object arrays of bytes for strings), with errors that name the problem."""
        sent, wanted = set(inputs), set(self.inputs)
        if sent != wanted:
            raise invalid(
                f"input size does not match signature: {len(sent)}!={len(wanted)} len({sorted(wanted)}). "
                f"Sent extra: {sorted(sent - wanted)}. Missing but required: {sorted(wanted - sent)}."
            )
        arrays = {}
        for key, value in inputs.items():
            dtype, shape = self.inputs[key]
            arr = np.asarray(value)
            if len(shape) != arr.ndim or any(s != -1 and s != a for s, a in zip(shape, arr.shape)):
                want = "[" + ", ".join("-1" if s == -1 else str(s) for s in shape) + "]"
                raise invalid(f"input '{key}' of signature '{self.name}' must have shape {want}, got {list(arr.shape)}")
            if dtype == tf.string:
                if arr.dtype.kind not in "OSU":
                    raise invalid(f"input '{key}' must be DT_STRING (b64 objects or strings), got {arr.dtype}")
                arrays[key] = arr.astype(object)
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
            arrays[key] = arr.astype(np_dtype, copy=False)
        return arrays

    def check_output_filter(self, output_filter):
        unknown = [o for o in output_filter or () if o not in self.outputs]
        if unknown:
            raise invalid(
                f"output tensor alias not found in signature: {unknown[0]} Outputs expected to be "
                f"in the set {{{', '.join(sorted(self.outputs))}}}."
            )

    def call(self, arrays, output_filter=None):
        """Run on inputs that passed check() -> {output name: ndarray}."""
        tensors = {k: tf.constant(v, self.inputs[k][0]) for k, v in arrays.items()}
        try:
            out = self.fn(**tensors)
        except (tf.errors.InvalidArgumentError, tf.errors.OutOfRangeError) as exc:
            raise invalid(_op_error_message(exc)) from None
        except tf.errors.OpError as exc:
            raise ServingError("INTERNAL", _op_error_message(exc)) from None
        names = output_filter or sorted(out)
        return {k: out[k].numpy() for k in names}

    def run(self, inputs, output_filter=None):
        """check() then call(): one request on its own (serving/batcher.py merges several)."""
        arrays = self.check(inputs)
        self.check_output_filter(output_filter)
        return self.call(arrays, output_filter)


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

    def index_mismatch(self, index):
        """Why `index` cannot answer for this version (its codes come from another model), or None.
        Indexes and exports both carry coophash_keras.io.model_fingerprint of their model."""
        fingerprint = self.info.get("model_fingerprint")
        if fingerprint and index.model_version and fingerprint != index.model_version:
            return (
                f"the index was built by model {index.model_version}, but {self.name} "
                f"version {self.version} is model {fingerprint}: rebuild the index"
            )
        return None

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


def _files_signature(path):
    """What "the version directory changed" means: a file or directory added, removed, resized or
    touched anywhere under it. Unreadable (mid-copy) counts as changed."""
    try:
        entries = []
        for root, dirs, files in os.walk(path):
            for name in dirs + files:
                st = os.stat(os.path.join(root, name))
                entries.append((os.path.relpath(os.path.join(root, name), path), st.st_mtime_ns, st.st_size))
        return tuple(sorted(entries))
    except OSError:
        return None


def _first_line(exc):
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


@dataclass
class _FailedLoad:
    attempts: int  # failed loads so far (the first try included)
    next_try: float  # time.monotonic() of the next retry
    signature: tuple  # _files_signature when it last failed
    error: tuple = ("UNKNOWN", "")  # (tensorflow.error.Code name, message) of the last failure


class ModelRegistry:
    """Serves the latest version of every model under `base_path`; `poll()` loads new versions.

    A version that fails to load is retried as TF-Serving does (--max_num_load_retries,
    --load_retry_interval_micros): up to `max_num_load_retries` more times, `load_retry_interval`
    seconds apart, while the version before it keeps serving. After that it stays skipped until a
    file under its directory changes (TF-Serving would skip it until it disappears and comes back);
    then it gets a fresh round of retries. So a version copied in two steps is served once it is
    complete, and a broken one is not reloaded every poll."""

    def __init__(self, base_path, poll_interval=1.0, max_num_load_retries=5, load_retry_interval=60.0):
        if not os.path.isdir(base_path):
            raise FileNotFoundError(f"model base path {base_path} does not exist")
        self.base_path = base_path
        self.poll_interval = poll_interval
        self.max_num_load_retries = max_num_load_retries
        self.load_retry_interval = load_retry_interval
        self._models = {}
        self._failed = {}  # (name, version) -> _FailedLoad
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
            if current is None or current.version != version:
                self._load(name, version, path)

    def _load(self, name, version, path):
        """Try to load, unless a failed version waits for its retry time or was given up on."""
        key = (name, version)
        while True:  # loops only when the retry interval is <= 0 (TF-Serving: "it doesn't wait")
            failed = self._failed.get(key)
            if failed is not None and failed.attempts > self.max_num_load_retries:
                if _files_signature(path) == failed.signature:
                    return
                log.info("files of %s version %d changed: trying it again", name, version)
                failed = None
            elif failed is not None and time.monotonic() < failed.next_try:
                return
            signature = _files_signature(path)  # before loading: a change during the load is a change
            try:
                servable = Servable(name, version, path)
            except Exception as exc:  # a broken or half-copied export must not take the server down
                self._record_failure(key, path, 1 if failed is None else failed.attempts + 1, signature, exc)
                continue
            with self._lock:
                self._models[name] = servable
                self._failed.pop(key, None)
            log.info("serving %s version %d from %s", name, version, path)
            return

    def _record_failure(self, key, path, attempts, signature, exc):
        error = (load_error_code(exc), _first_line(exc))
        with self._lock:
            self._failed[key] = _FailedLoad(attempts, time.monotonic() + self.load_retry_interval, signature, error)
        name, version = key
        if attempts <= self.max_num_load_retries:
            log.warning(
                "could not load %s version %d from %s: %s; retry %d of %d in %.3g s",
                *(name, version, path, _first_line(exc)),
                *(attempts, self.max_num_load_retries, max(self.load_retry_interval, 0)),
            )
        else:
            log.error(
                "could not load %s version %d from %s (%d attempts): %s; the previous version keeps "
                "serving, and this one is tried again when its files change",
                *(name, version, path, attempts, _first_line(exc)),
            )

    def failed_loads(self):
        """{(name, version): failed attempts so far} for versions not (yet) loaded."""
        with self._lock:
            return {key: f.attempts for key, f in self._failed.items()}

    def gave_up(self, name, version):
        """True once `version` failed 1 + max_num_load_retries times and its files have not changed."""
        with self._lock:
            failed = self._failed.get((name, version))
        return failed is not None and failed.attempts > self.max_num_load_retries

    def _next_wait(self):
        """Seconds to the next poll: the poll interval, or sooner if a retry falls due."""
        now = time.monotonic()
        with self._lock:
            due = [f.next_try - now for f in self._failed.values() if f.attempts <= self.max_num_load_retries]
        return max(0.0, min([self.poll_interval, *due]))

    def start_polling(self):
        def loop():
            while not self._stop.wait(self._next_wait()):
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
        """[(version, state, error code, error message)], newest first as TF-Serving lists them:
        the served version AVAILABLE; a version that failed to load LOADING while it has retries
        left, then END with the error of its last attempt (TF-Serving's ServableState health)."""
        with self._lock:
            servable = self._models.get(name)
            failed = {v: f for (n, v), f in self._failed.items() if n == name}
        states = {} if servable is None else {servable.version: ("AVAILABLE", "OK", "")}
        for v, f in failed.items():
            if v not in states:
                states[v] = ("END", *f.error) if f.attempts > self.max_num_load_retries else ("LOADING", "OK", "")
        if not states:
            raise not_found(f"Could not find any versions of model {name}")
        if version is not None and version not in states:
            raise not_found(f"Could not find version {version} of model {name}")
        return [(v, *states[v]) for v in sorted(states, reverse=True) if version is None or v == version]

    def names(self):
        with self._lock:
            return sorted(self._models)

"""The skeleton every hashing model of the package extends (CoopHash and every baseline).

A model keeps only its networks, its losses and its `train_step`; this base holds the rest, once:
the config and its (de)serialisation, one optimizer per named group (learning-rate schedule, loss
scaling under mixed precision, eager builds for distribution strategies), the per-replica step
seed, the guarded update that never applies a non-finite step, the metric trackers, label
handling, `encode`, the divergence policy (stop, or halve the step sizes and go on), and saves
that refuse non-finite weights and never leave half a file.

Subclasses set:
  optimizer_groups   {group: config field of its learning rate}; the optimizer is the attribute
                     `<group>_optimizer` and `optimizer_variables(group)` lists what it updates;
  tracker_names      the metrics `fit` shows;
  tunable_fields     the config fields keras-tuner may sample (coophash_keras.tuning);
  default_beta_1     Adam's beta_1 when config.adam_beta_1 is None;
and build `self.hash_network`, the inference part (a layer with `serving_outputs` and
`relaxed_codes`, see coophash_keras.models.networks) that export and serving read.
"""

from __future__ import annotations

import math
import os
import sys
from typing import NamedTuple

import keras
import numpy as np
import tensorflow as tf

from coophash_keras.codes import pack_codes, sign_codes
from coophash_keras.config import CoopHashConfig
from coophash_keras.data.augment import Augmenter
from coophash_keras.data.validation import validate_fit_data, validate_images
from coophash_keras.io import atomic_path
from coophash_keras.layers import restoring_base
from coophash_keras.losses import classification_loss, orthohash_loss, pseudo_label_loss
from coophash_keras.models.optimizers import FineTuneAdam, attach_backbone
from coophash_keras.preprocessing import normalize_images, to_pixels

try:  # the Keras function that opens a .keras file for writing (see HashingModel.built)
    from keras.src.saving.saving_lib import save_model as _keras_save_model

    _KERAS_SAVE_CODE = _keras_save_model.__code__
except (ImportError, AttributeError):  # another Keras layout: the check in get_config still refuses
    _KERAS_SAVE_CODE = None


class TrainingDivergedError(RuntimeError):
    """A step went non-finite and training stopped; the model holds the last finite state."""


class Batch(NamedTuple):
    """One training batch as the models see it."""

    images: tf.Tensor  # normalised to [-1, 1]
    labels: tf.Tensor  # multi-hot float32 [B, C] (one-hot for single-label data)
    unlabeled: tf.Tensor | None  # normalised images of the unlabelled pool, or None


def as_config(config) -> CoopHashConfig:
    """CoopHashConfig from None (defaults), a dict, or a CoopHashConfig; validated."""
    if config is None:
        config = CoopHashConfig()
    elif isinstance(config, dict):
        config = CoopHashConfig.from_dict(config)
    return config.validate()


def sample_negative_labels(labels_multi_hot, seed, num_classes, same_size=False):
    """c- sharing no class with c+: one uniformly drawn class absent from the anchor's label set, or
    with `same_size` a uniformly drawn set of min(|c+|, #absent) absent classes (so a multi-label
    anchor's c- is a label set too). Any one class if the anchor has them all. `seed` is a
    stateless seed; a one-hot c+ gives the same c- either way."""
    labels = tf.cast(labels_multi_hot, tf.float32)
    # absent classes score in (0, 1), present ones in (-2, -1): the top k are k random absent classes
    scores = tf.random.stateless_uniform(tf.shape(labels), seed) - 2.0 * labels
    if not same_size:
        return tf.one_hot(tf.argmax(scores, axis=-1), num_classes)
    present = tf.reduce_sum(labels, axis=-1)
    k = tf.cast(tf.maximum(tf.minimum(present, num_classes - present), 1.0), tf.int32)
    kth_best = tf.gather(tf.sort(scores, axis=-1, direction="DESCENDING"), k - 1, axis=-1, batch_dims=1)
    return tf.cast(scores >= kth_best[:, None], tf.float32)


def bit_balance(relaxed_codes):
    """1 - mean |mean bit| over the batch: 1 = every bit split evenly, 0 = constant bits."""
    bits = tf.cast(sign_codes(relaxed_codes), tf.float32)
    return 1.0 - tf.reduce_mean(tf.abs(tf.reduce_mean(bits, axis=0)))


def correct_predictions(logits, labels_multi_hot, multi_label):
    """Per-example 0/1: argmax hit (single-label) or every class right (multi-label)."""
    if multi_label:
        correct = tf.reduce_all(tf.equal(logits > 0, labels_multi_hot > 0.5), axis=-1)
    else:
        correct = tf.equal(tf.argmax(logits, -1), tf.argmax(labels_multi_hot, -1))
    return tf.cast(correct, tf.float32)


def all_finite(values) -> tf.Tensor:
    return tf.reduce_all([tf.reduce_all(tf.math.is_finite(v)) for v in values if v is not None])


def apply_if(optimizer, finite, grads, variables):
    """optimizer.apply(grads, variables) only where `finite` is True (the same on every replica).

    Under a strategy that synchronises through merge_call (MultiWorkerMirroredStrategy), a cond
    around apply() in the replica context is not allowed, so the cond runs in the cross-replica
    context, as keras.optimizers.LossScaleOptimizer does for its own skip."""

    def step():
        optimizer.apply(grads, variables)
        return tf.constant(True)

    if tf.__internal__.distribute.strategy_supports_no_merge_call() or not tf.distribute.has_strategy():
        tf.cond(finite, step, lambda: tf.constant(False))
        return

    def cross_replica(distribution, finite, grads):
        finite = distribution.experimental_local_results(finite)[0]

        def apply_everywhere():
            distribution.extended.call_for_each_replica(lambda g: optimizer.apply(g, variables), args=(grads,))
            return tf.constant(True)

        tf.cond(finite, apply_everywhere, lambda: tf.constant(False))

    tf.distribute.get_replica_context().merge_call(cross_replica, args=(finite, grads))


@keras.saving.register_keras_serializable(package="coophash")
class ScaledSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """A learning-rate schedule times a constant factor: how the "shrink" divergence policy halves
    a learning rate that is a schedule (a schedule has no variable to assign)."""

    def __init__(self, schedule, factor=1.0):
        self.schedule = schedule
        self.factor = float(factor)

    def __call__(self, step):
        return self.schedule(step) * self.factor

    def get_config(self):
        return {"schedule": keras.optimizers.schedules.serialize(self.schedule), "factor": self.factor}

    @classmethod
    def from_config(cls, config):
        return cls(keras.optimizers.schedules.deserialize(config["schedule"]), config["factor"])


def _base_optimizer(optimizer):
    return optimizer.inner_optimizer if isinstance(optimizer, keras.optimizers.LossScaleOptimizer) else optimizer


def scale_learning_rate(optimizer, factor=None, absolute=None) -> bool:
    """Multiply an optimizer's learning rate by `factor` (or, for a schedule, set its factor to
    `absolute`); a LossScaleOptimizer's inner optimizer is the one changed. A float learning rate
    is a variable, assigned in place (saved with the optimizer's variables); a schedule is wrapped
    in ScaledSchedule. Returns True if the train step must be traced again (a schedule's factor is
    a constant in it)."""
    inner = _base_optimizer(optimizer)
    lr = inner._learning_rate  # the variable or schedule itself; `learning_rate` gives its current value
    if isinstance(lr, keras.optimizers.schedules.LearningRateSchedule):
        base, old = (lr.schedule, lr.factor) if isinstance(lr, ScaledSchedule) else (lr, 1.0)
        new = absolute if absolute is not None else old * factor
        if new == old:
            return False
        inner.learning_rate = ScaledSchedule(base, new)
        return True
    if absolute is not None:
        return False  # a variable learning rate was restored with the optimizer's own variables
    if not isinstance(lr, keras.Variable):
        raise TypeError(f"cannot scale the learning rate of {optimizer.name}: it is a {type(lr).__name__}")
    lr.assign(lr * factor)
    return False


class StepScale(keras.layers.Layer):
    """One non-trainable scalar, 1.0 until the "shrink" divergence policy halves it: the factor the
    model's learning rates and (CoopHash) Langevin step size stand at. A layer of its own, so it
    is saved with the weights (backups, .keras files), and files saved before it existed load (1.0)."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.value = self.add_weight(shape=(), initializer="ones", trainable=False, name="value")

    def load_own_variables(self, store):
        if len(store.keys()):
            super().load_own_variables(store)


class DivergenceGuard(keras.callbacks.Callback):
    """Acts on every batch whose step went non-finite (the guarded update skipped it, so the model
    holds its last finite weights and optimizer state), as config.divergence_policy says:
      "stop"    `fit` stops with TrainingDivergedError;
      "shrink"  every optimizer's learning rate and the Langevin step size are halved and training
                goes on; after config.divergence_max_shrinks halvings in all, it stops as "stop".
    HashingModel.fit adds it."""

    def __init__(self):
        super().__init__()
        self._epoch, self._seen = 0, 0.0

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch, self._seen = epoch, 0.0  # fit resets the trackers at every epoch

    def on_train_batch_end(self, batch, logs=None):
        # logs["diverged"] is the epoch's running mean; the tracker's total tells a new divergence
        # from one an earlier batch of this epoch already had.
        if not logs or float(np.asarray(logs.get("diverged", 0.0)).mean()) <= 0:
            return
        tracker = self.model.trackers.get("diverged")
        total = float(np.asarray(tracker.total)) if tracker is not None else self._seen + 1
        if total <= self._seen:
            return
        self._seen = total
        model, c = self.model, self.model.config
        where = f"batch {batch} (epoch {self._epoch + 1})"
        if c.divergence_policy == "shrink" and model.shrinks < c.divergence_max_shrinks:
            model.shrink_step_sizes(0.5)
            print(
                f"diverged at {where}: step skipped, learning rates and Langevin step size halved "
                f"(shrink {model.shrinks} of at most {c.divergence_max_shrinks})",
                flush=True,
            )
            return
        after = f" after {model.shrinks} halvings of the step sizes" if c.divergence_policy == "shrink" else ""
        raise TrainingDivergedError(
            f"training diverged at {where}{after}: a loss or gradient became non-finite, so that step was "
            "skipped and the model keeps its last finite weights and optimizer state. Lower the learning "
            "rates or langevin_step_size, set langevin_clip_update"
            + (
                ", or raise divergence_max_shrinks"
                if after
                else ", or set divergence_policy=shrink to halve the step sizes and go on"
            )
        )


class HashingModel(keras.Model):
    optimizer_groups: dict = {"network": "descriptor_learning_rate"}
    tracker_names: tuple = ("loss", "bit_balance", "diverged")
    tunable_fields: tuple = ("descriptor_learning_rate", "quantization_weight")
    default_beta_1: float = 0.9

    @staticmethod
    def uses_unlabeled(config) -> bool:
        """Whether `fit` should get (images, labels, unlabeled) batches (coophash_keras.runs)."""
        return False

    def __init__(self, config=None, **kwargs):
        super().__init__(**kwargs)
        self.config = as_config(config)
        self.seed_generator = keras.random.SeedGenerator(self.config.seed, name="seed_generator")
        self.trackers = {n: keras.metrics.Mean(name=n) for n in self.tracker_names}
        self.step_scale = StepScale(name="step_scale")
        for group in self.optimizer_groups:
            setattr(self, f"{group}_optimizer", None)
        # Views of unlabeled images for pseudo-labels (plain objects: nothing here is saved).
        self._weak_view = Augmenter(self.config.weak_augmentation, self.config.seed)
        self._strong_view = Augmenter(self.config.strong_augmentation, self.config.seed + 100)

    # --------------------------------------------------------------------------- subclass API
    def optimizer_variables(self, group):
        raise NotImplementedError

    def build(self, input_shape=None):
        self.hash_network.build()
        self.built = True

    def call(self, images, training=False):
        """Relaxed codes of raw-pixel images; codes are their signs."""
        return self.hash_network.relaxed_codes(normalize_images(images), training=training)

    # --------------------------------------------------------------------------- optimizers
    def make_optimizer(self, group):
        c = self.config
        learning_rate = getattr(c, self.optimizer_groups[group])
        if c.lr_decay_rate != 1.0:
            learning_rate = keras.optimizers.schedules.ExponentialDecay(
                learning_rate, decay_steps=c.lr_decay_steps, decay_rate=c.lr_decay_rate
            )
        beta_1 = self.default_beta_1 if c.adam_beta_1 is None else c.adam_beta_1
        if c.backbone != "none":  # the same Adam, with the backbone's freeze / fine-tune schedule
            optimizer = FineTuneAdam(
                learning_rate,
                beta_1=beta_1,
                freeze_steps=c.backbone_freeze_steps,
                backbone_scale=c.backbone_learning_rate_scale,
                name=f"{group}_optimizer",
            )
        else:
            optimizer = keras.optimizers.Adam(learning_rate, beta_1=beta_1, name=f"{group}_optimizer")
        if keras.mixed_precision.global_policy().name == "mixed_float16":
            # float16 gradients underflow without loss scaling; the wrapper unscales in apply().
            optimizer = keras.optimizers.LossScaleOptimizer(optimizer, name=f"{group}_loss_scale")
        return optimizer

    @property
    def optimizers(self) -> dict:
        """{group: optimizer}; callbacks read iterations and learning rates from here."""
        return {group: getattr(self, f"{group}_optimizer") for group in self.optimizer_groups}

    @property
    def shrinks(self) -> int:
        """How many times the "shrink" divergence policy has halved the step sizes."""
        return int(round(-math.log2(float(np.asarray(self.step_scale.value)))))

    def shrink_step_sizes(self, factor=0.5):
        """Multiply every optimizer's learning rate, and the step scale the Langevin revision reads,
        by `factor` (the "shrink" divergence policy; callable between steps of `fit`)."""
        retrace = False
        for optimizer in self.optimizers.values():
            retrace |= scale_learning_rate(optimizer, factor)
        self.step_scale.value.assign(self.step_scale.value * factor)
        if retrace and self.train_function is not None:
            self.make_train_function(force=True)

    def load_weights(self, filepath, *args, **kwargs):
        super().load_weights(filepath, *args, **kwargs)
        # A weights file (a backup) restores the step scale and every variable learning rate, not a
        # schedule's factor (that lives in the compile config): set it from the step scale.
        scale = float(np.asarray(self.step_scale.value))
        retrace = [scale_learning_rate(o, absolute=scale) for o in self.optimizers.values() if o is not None]
        if any(retrace):
            self.train_function = None

    def compile(self, **optimizers):
        """One optimizer per group (`<group>_optimizer=` to pass your own; default Adam with the
        config's learning rate). Call it inside `strategy.scope()` when distributing: every
        optimizer is built here, eagerly."""
        unknown = set(optimizers) - {f"{g}_optimizer" for g in self.optimizer_groups}
        metrics_args = {k: optimizers.pop(k) for k in list(unknown) if k in ("metrics", "run_eagerly", "jit_compile")}
        if set(optimizers) - {f"{g}_optimizer" for g in self.optimizer_groups}:
            raise TypeError(
                f"{type(self).__name__}.compile takes {sorted(f'{g}_optimizer' for g in self.optimizer_groups)}, "
                f"got {sorted(optimizers)}"
            )
        super().compile(optimizer=None, **metrics_args)  # the default would be an unused RMSprop
        if not self.built:
            self.build()
        for group in self.optimizer_groups:
            optimizer = optimizers.get(f"{group}_optimizer") or self.make_optimizer(group)
            setattr(self, f"{group}_optimizer", optimizer)
            attach_backbone(optimizer, self.backbone_variables())
            # Explicit builds: lazy ones break MirroredStrategy and silently drop state on restore.
            optimizer.build(self.optimizer_variables(group))

    def backbone_variables(self):
        """The pretrained backbone's trainable variables (none with the conv base): what the
        config's freeze / fine-tune schedule applies to (models/optimizers.py)."""
        return list(getattr(self.hash_network.base, "backbone_variables", []))

    def _maybe_symbolic_build(self, *args, **kwargs):
        # compile() already built every layer, optimizer and tracker. Keras' symbolic build under a
        # strategy would also MEAN-reduce a data batch across workers, which fails under
        # MultiWorkerMirroredStrategy (keras 3.15: "Attempt to convert a value (PerReplica...)").
        if self.built and all(o is not None and o.built for o in self.optimizers.values()):
            return None
        return super()._maybe_symbolic_build(*args, **kwargs)

    def get_compile_config(self):
        if any(o is None for o in self.optimizers.values()):
            return None
        return {f"{g}_optimizer": keras.optimizers.serialize(o) for g, o in self.optimizers.items()}

    def compile_from_config(self, config):
        self.compile(**{k: keras.optimizers.deserialize(v) for k, v in config.items()})

    # --------------------------------------------------------------------------- step machinery
    def step_seed(self):
        """A fresh stateless seed for this step, different on every replica (SeedGenerator state
        is mirrored, so without the replica id all replicas would draw the same noise)."""
        seed = tf.cast(self.seed_generator.next(), tf.int32)
        ctx = tf.distribute.get_replica_context()
        replica_id = ctx.replica_id_in_sync_group if ctx is not None else 0
        return tf.random.experimental.stateless_fold_in(seed, replica_id)

    def unpack(self, data) -> Batch:
        images, labels = data[0], data[1]
        unlabeled = data[2] if len(data) > 2 and data[2] is not None else None
        return Batch(
            normalize_images(images),
            self.labels_to_multi_hot(labels),
            None if unlabeled is None else normalize_images(unlabeled),
        )

    def labelled_classification_loss(self, logits, labels_multi_hot):
        """Per-example classification of images whose labels are given (real, or the labels a pair
        was generated for). With the 'codebook' read-out (logits = s * cos), OrthoHash's own loss,
        margin and multi-label form included, so the read-out means the same in every model."""
        c = self.config
        if c.classifier_input == "codebook":
            cosine = logits / c.orthohash_scale
            return orthohash_loss(cosine, labels_multi_hot, c.orthohash_scale, c.orthohash_margin, c.multi_label)["total"]
        return classification_loss(logits, labels_multi_hot, c.multi_label)

    def pseudo_label_terms(self, unlabeled, class_logits):
        """FixMatch on normalised unlabeled images: `class_logits(x, training)` on a weak view gives
        the targets, on a strong view the predictions. Per image: (loss, 0/1 kept)."""
        raw = to_pixels(unlabeled)
        weak = class_logits(normalize_images(self._weak_view(raw)), False)
        strong = class_logits(normalize_images(self._strong_view(raw)), True)
        c = self.config
        return pseudo_label_loss(strong, tf.stop_gradient(weak), c.pseudo_label_threshold, c.multi_label)

    def labels_to_multi_hot(self, labels):
        if self.config.multi_label:
            return tf.cast(labels, tf.float32)
        return tf.one_hot(tf.cast(tf.reshape(labels, [-1]), tf.int32), self.config.num_classes)

    def guarded_update(self, group, loss_fn, finite=True):
        """One optimizer step of `group` on `loss_fn()` (a dict whose "total" holds per-example
        losses; the step uses this replica's share of the global-batch mean), unless the loss or a
        gradient's square is non-finite or `finite` is False: then nothing changes, neither the weights nor
        the optimizer's moments and iteration count. Returns (loss_fn's dict, whether it stepped)."""
        optimizer = getattr(self, f"{group}_optimizer")
        variables = self.optimizer_variables(group)
        with tf.GradientTape() as tape:
            terms = loss_fn()
            loss = tf.nn.compute_average_loss(terms["total"])  # share of the GLOBAL batch mean
            scaled = optimizer.scale_loss(loss)  # identity unless mixed precision
        grads = tape.gradient(scaled, variables)
        finite = tf.logical_and(tf.convert_to_tensor(finite), tf.math.is_finite(loss))
        if not isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
            # (the loss-scale wrapper checks gradients itself and lowers its scale on overflow.)
            # Squares, not the gradients: Adam keeps g^2, so a finite gradient above ~1.8e19 would
            # still put inf into its second moment, and every later update of that weight to 0.
            finite = tf.logical_and(finite, all_finite([tf.square(g) for g in grads if g is not None]))
        finite = self._all_replicas(finite)
        apply_if(optimizer, finite, grads, variables)
        return terms, finite

    @staticmethod
    def _all_replicas(flag):
        """A flag that is True only if it is True on every replica (they must agree to step)."""
        ctx = tf.distribute.get_replica_context()
        if ctx is None or ctx.num_replicas_in_sync == 1:
            return flag
        failures = ctx.all_reduce(tf.distribute.ReduceOp.SUM, 1.0 - tf.cast(flag, tf.float32))
        return failures < 0.5

    def record(self, values: dict):
        """Update the trackers named in `values` (scalars or per-example tensors) and return the
        logs `fit` shows."""
        for name, value in values.items():
            if name in self.trackers and value is not None:
                self.trackers[name].update_state(value)
        results = {m.name: m.result() for m in self.metrics}
        if isinstance(tf.distribute.get_strategy(), tf.distribute.MultiWorkerMirroredStrategy):
            # keras 3.15 reduces per-batch logs across workers with reduce("MEAN", axis=0), which
            # fails on scalars; epoch logs are read from the trackers and stay scalars.
            results = {k: tf.reshape(v, [1]) for k, v in results.items()}
        return results

    @property
    def metrics(self):
        return list(self.trackers.values())

    # --------------------------------------------------------------------------- user API
    def fit(self, x=None, y=None, *args, callbacks=None, **kwargs):
        """`keras.Model.fit` after checking the data (shape, dtype, label range, emptiness), with a
        DivergenceGuard that stops training clearly (or halves the step sizes, see
        config.divergence_policy) if a step goes non-finite."""
        if any(o is None for o in self.optimizers.values()):
            raise ValueError(f"{type(self).__name__}.fit called before compile(); call model.compile() first.")
        x, y = validate_fit_data(x, y, self.config)  # arrays come back checked, [N, H, W] with its channel
        if isinstance(x, tf.data.Dataset):
            kwargs.setdefault("shuffle", False)  # a dataset shuffles itself; Keras warns on the default True
        callbacks = list(callbacks or [])
        if not any(isinstance(cb, DivergenceGuard) for cb in callbacks):
            callbacks.append(DivergenceGuard())
        return super().fit(x, y, *args, callbacks=callbacks, **kwargs)

    def relaxed_codes(self, images, batch_size=256, verbose=0):
        images = validate_images(images, self.config.image_shape)
        return self.predict(images, batch_size=batch_size, verbose=verbose)

    def encode(self, images, packed=False, batch_size=256, verbose=0):
        """Binary codes of raw-pixel images [N, H, W, C]: int8 {-1,+1} [N, K], or with
        packed=True uint8 [N, K/8] (MSB first, bit 1 = +1)."""
        codes = sign_codes(self.relaxed_codes(images, batch_size, verbose))
        return pack_codes(codes) if packed else codes

    def class_probabilities(self, images, batch_size=256):
        """p(c|x) from the network's class read-out: softmax, or sigmoid for multi-label data."""
        images = validate_images(images, self.config.image_shape)
        out = []
        for i in range(0, len(images), batch_size):
            logits = self.hash_network.serving_outputs(normalize_images(images[i : i + batch_size]))["class_logits"]
            out.append(tf.sigmoid(logits) if self.config.multi_label else tf.nn.softmax(logits))
        return np.concatenate([np.asarray(o) for o in out])

    def all_weights_finite(self) -> bool:
        return all(
            np.all(np.isfinite(np.asarray(v))) for v in self.weights if np.issubdtype(np.asarray(v).dtype, np.floating)
        )

    def _refuse_non_finite(self, what):
        if not self.all_weights_finite():
            raise ValueError(f"refusing to {what}: the model holds non-finite (NaN/inf) weights")

    saves_atomically = True  # coophash_keras.io.save_model relies on it

    def save(self, filepath, overwrite=True, **kwargs):
        """`keras.Model.save`, refused for non-finite weights, and written to a temporary file renamed
        over `filepath` when complete: a refused or killed save leaves the old file as it was
        (keras.callbacks.ModelCheckpoint and coophash_keras.io.save_model come through here)."""
        self._refuse_non_finite(f"save {filepath}")
        path = os.fspath(filepath) if isinstance(filepath, (str, os.PathLike)) else None
        if path is None or not path.endswith(".keras") or (os.path.exists(path) and not overwrite):
            return super().save(filepath, overwrite=overwrite, **kwargs)  # file objects, directories, prompts
        with atomic_path(path, ".keras") as tmp:
            return super().save(tmp, **kwargs)

    def save_weights(self, filepath, overwrite=True, **kwargs):
        """`keras.Model.save_weights`, refused for non-finite weights, through a temporary file."""
        self._refuse_non_finite(f"save weights to {filepath}")
        path = os.fspath(filepath) if isinstance(filepath, (str, os.PathLike)) else None
        if path is None or not path.endswith(".weights.h5") or (os.path.exists(path) and not overwrite):
            return super().save_weights(filepath, overwrite=overwrite, **kwargs)
        with atomic_path(path, ".weights.h5") as tmp:
            return super().save_weights(tmp, **kwargs)

    @property
    def built(self):
        # keras.saving.save_model(model, path) (Keras 3.15) opens `path` for writing, truncating a
        # good file, before it reads anything of the model but `built`; refusing here, when read by
        # that function (one code-object comparison otherwise), keeps the old file intact.
        built = getattr(self, "_hashing_built", False)
        if built and _KERAS_SAVE_CODE is not None and sys._getframe(1).f_code is _KERAS_SAVE_CODE:
            self._refuse_non_finite("save the model")
        return built

    @built.setter
    def built(self, value):
        self._hashing_built = value

    def get_config(self):
        # Every other way of serialising the model (export, keras.saving.serialize_keras_object).
        self._refuse_non_finite("serialise the model")
        base = super().get_config()
        base["config"] = self.config.to_dict()
        # The inference network's own config, so export rebuilds it without this class (export/weights.py).
        base["network"] = keras.saving.serialize_keras_object(self.hash_network)
        return base

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        network = config.pop("network", None) or {}
        # The networks are rebuilt from the CoopHashConfig, their base from the saved network's own
        # description: a backbone's architecture without its pretrained weights, which come from
        # the file (so loading never downloads; layers/bases.py).
        with restoring_base(network.get("config", {}).get("base_kwargs")):
            return cls(config=CoopHashConfig.from_dict(config.pop("config")), **config)

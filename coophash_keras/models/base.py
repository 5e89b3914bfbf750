"""The skeleton every hashing model of the package extends (CoopHash and every baseline).

A model keeps only its networks, its losses and its `train_step`; this base holds the rest, once:
the config and its (de)serialisation, one optimizer per named group (learning-rate schedule, loss
scaling under mixed precision, eager builds for distribution strategies), the per-replica step
seed, the guarded update that never applies a non-finite step, the metric trackers, label
handling, `encode`, and refusing to save non-finite weights.

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

from typing import NamedTuple

import keras
import numpy as np
import tensorflow as tf

from coophash_keras.codes import pack_codes, sign_codes
from coophash_keras.config import CoopHashConfig
from coophash_keras.data.augment import Augmenter
from coophash_keras.data.validation import validate_fit_data, validate_images
from coophash_keras.layers import restoring_base
from coophash_keras.losses import pseudo_label_loss
from coophash_keras.models.optimizers import FineTuneAdam, attach_backbone
from coophash_keras.preprocessing import normalize_images, to_pixels


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


def sample_negative_labels(labels_multi_hot, seed, num_classes):
    """c- sharing no class with c+: a uniformly drawn class absent from the anchor's label set
    (any class if the anchor has them all). `seed` is a stateless seed."""
    u = tf.random.stateless_uniform(tf.shape(labels_multi_hot), seed)
    return tf.one_hot(tf.argmax(u - 2.0 * labels_multi_hot, axis=-1), num_classes)


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


class DivergenceGuard(keras.callbacks.Callback):
    """Stops `fit` with a clear error at the first batch whose step went non-finite (the guarded
    update skipped it, so the model keeps its last finite weights). HashingModel.fit adds it."""

    def on_train_batch_end(self, batch, logs=None):
        if logs and float(logs.get("diverged", 0.0)) > 0:
            raise TrainingDivergedError(
                f"training diverged at batch {batch}: a loss or gradient became non-finite, so that step was "
                "skipped and the model keeps its last finite weights and optimizer state. Lower the learning "
                "rates or langevin_step_size, or set langevin_clip_update."
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
        gradient is non-finite or `finite` is False: then nothing changes, neither the weights nor
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
            # (the loss-scale wrapper checks gradients itself and lowers its scale on overflow)
            finite = tf.logical_and(finite, all_finite(grads))
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
        DivergenceGuard that stops training clearly if a step goes non-finite."""
        if any(o is None for o in self.optimizers.values()):
            raise ValueError(f"{type(self).__name__}.fit called before compile(); call model.compile() first.")
        validate_fit_data(x, y, self.config)
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

    def save(self, filepath, *args, **kwargs):
        self._refuse_non_finite(f"save {filepath}")
        return super().save(filepath, *args, **kwargs)

    def save_weights(self, filepath, *args, **kwargs):
        self._refuse_non_finite(f"save weights to {filepath}")
        return super().save_weights(filepath, *args, **kwargs)

    def get_config(self):
        # keras.saving.save_model(model, path) serialises the config before it opens the file:
        # refusing here keeps a good file from being replaced by non-finite weights.
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

"""The skeleton every hashing model of the package extends (CoopHash and every baseline).

A model keeps only its networks, its losses and its `train_step`; this base holds the rest, once:
the config and its (de)serialisation, one optimizer per named group, the per-replica step seed,
the guarded update (models/safe_update.py), the metric trackers, label handling and `encode`.
Divergence handling is in models/divergence.py, the saves that refuse non-finite weights in
models/saving.py.

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
from typing import NamedTuple

import keras
import numpy as np
import tensorflow as tf

from coophash_keras.codes import pack_codes, sign_codes
from coophash_keras.config import CoopHashConfig
from coophash_keras.data.augment import Augmenter
from coophash_keras.data.validation import validate_fit_data, validate_images
from coophash_keras.layers import restoring_base
from coophash_keras.losses import classification_loss, orthohash_loss, pseudo_label_loss
from coophash_keras.models import safe_update
from coophash_keras.models.divergence import DivergenceGuard, StepScale, scale_learning_rate
from coophash_keras.models.optimizers import attach_backbone, make_optimizer
from coophash_keras.models.saving import FiniteAtomicSaves
from coophash_keras.preprocessing import normalize_images, to_pixels


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


class HashingModel(FiniteAtomicSaves, keras.Model):
    optimizer_groups: dict = {"network": "descriptor_learning_rate"}
    tracker_names: tuple = ("loss", "bit_balance", "diverged")
    tunable_fields: tuple = ("descriptor_learning_rate", "quantization_weight")
    default_beta_1: float = 0.9
    needs_labels: bool = True  # False: a label-free model (baselines/label_free.py), fitted on images alone
    fitted_in_closed_form: bool = False  # True: `fit` computes the weights in one pass, no gradient steps

    @staticmethod
    def uses_unlabeled(config) -> bool:
        """Whether `fit` should get (images, labels, unlabeled) batches (coophash_keras.runs)."""
        return False

    def __init__(self, config=None, **kwargs):
        super().__init__(**kwargs)
        self.config = as_config(config)
        if self.needs_labels and self.config.num_classes < 2:
            raise ValueError(
                f"num_classes: {type(self).__name__} learns from labels and needs at least 2 classes, got "
                f"{self.config.num_classes} (unlabelled data: a label-free model, itq or lsh)"
            )
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
        beta_1 = self.default_beta_1 if c.adam_beta_1 is None else c.adam_beta_1
        return make_optimizer(c, getattr(c, self.optimizer_groups[group]), beta_1, group)

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
        """One step of `group`'s optimizer on `loss_fn()`, skipped whole where it would not be finite
        (safe_update.guarded_update). Returns (loss_fn's dict, whether it stepped)."""
        optimizer = getattr(self, f"{group}_optimizer")
        variables = self.optimizer_variables(group)
        if not variables:  # every part of the group is switched off: its terms are only logged
            terms = loss_fn()
            terms.pop("restricted", None)
            return terms, tf.convert_to_tensor(finite)
        return safe_update.guarded_update(optimizer, variables, loss_fn, finite)

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

    def get_config(self):
        base = super().get_config()  # refuses non-finite weights (models/saving.py)
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
            saved = dict(config.pop("config"))
            # A model saved before served_energy existed served its energy head (and its saved
            # network, which export rebuilds, still does): it keeps doing so when loaded.
            saved.setdefault("served_energy", "energy_head")
            return cls(config=CoopHashConfig.from_dict(saved), **config)

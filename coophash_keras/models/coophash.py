"""CoopHash: a multipurpose descriptor and a contrastive pair generator trained together by
variational MCMC teaching (Doan et al., arXiv 2210.04288), as a Keras 3 model for `model.fit`."""

import keras
import numpy as np
import tensorflow as tf

from coophash_keras import losses
from coophash_keras.data.validation import validate_fit_data, validate_images, validate_labels
from coophash_keras.layers import EnergyHead, PairGenerator
from coophash_keras.models.descriptor import MultipurposeDescriptor
from coophash_keras.models.hashing import (HashingModelMixin, as_config, bit_balance, correct_predictions,
                                           sample_negative_labels)
from coophash_keras.models.langevin import revise_with_langevin
from coophash_keras.preprocessing import denormalize_images, normalize_images

# Sub-streams of a step's random seed (z, negative labels, Langevin noise, reparameterisation).
_LATENT, _NEGATIVES, _LANGEVIN, _REPARAM = 0, 1, 2, 3


class TrainingDivergedError(RuntimeError):
    """Langevin revision or a loss became non-finite; the step's updates were not applied."""


class DivergenceGuard(keras.callbacks.Callback):
    """Stops `fit` with a clear error at the first batch whose Langevin revision diverged.
    `CoopHash.fit` adds it automatically."""

    def on_train_batch_end(self, batch, logs=None):
        if logs and float(logs.get("diverged", 0.0)) > 0:
            raise TrainingDivergedError(
                f"Training stopped at batch {batch}: Langevin revision produced non-finite energies or "
                "images, so that step's updates were skipped and no non-finite weight was kept. Lower "
                "langevin_step_size, set langevin_clip_update, or raise energy_l2_weight.")


@keras.saving.register_keras_serializable(package="coophash")
class CoopHash(HashingModelMixin, keras.Model):
    """`compile()` then `fit(ds)` with ds yielding (images, labels): images raw pixels [0, 255]
    of shape config.image_shape, labels class ids [B] (or multi-hot [B, C] if multi_label).
    `encode(images)` gives int8 {-1,+1} codes (or packed uint8 bytes)."""

    tunable_fields = (
        "langevin_steps", "langevin_step_size", "langevin_noise_scale", "triplet_weight", "triplet_margin",
        "nll_weight", "classification_weight", "kl_weight", "descriptor_learning_rate", "generator_learning_rate",
        "base_filters", "feature_dim",
    )

    @staticmethod
    def uses_unlabeled(config):
        return bool(config.unlabeled_nll_weight)

    def __init__(self, config=None, **kwargs):
        super().__init__(**kwargs)
        self.config = as_config(config)
        c = self.config
        self.descriptor = MultipurposeDescriptor(
            c.image_shape, c.num_classes, c.num_bits, c.latent_dim, c.base_filters, c.feature_dim,
            name="descriptor")
        self.generator = PairGenerator(c.image_shape, c.latent_dim, c.num_classes, c.generator_filters,
                                       name="generator")
        self.seed_generator = keras.random.SeedGenerator(c.seed, name="seed_generator")
        names = ["loss", "nll_loss", "classification_loss", "triplet_loss", "quantization_loss",
                 "generator_loss", "reconstruction_loss", "kl_loss", "energy_real", "energy_revised",
                 "langevin_grad_norm", "bit_balance", "class_accuracy", "diverged", "unlabeled_nll_loss"]
        self.trackers = {n: keras.metrics.Mean(name=n) for n in names}
        self.descriptor_optimizer = None
        self.generator_optimizer = None

    # ----------------------------------------------------------------------------- building
    def build(self, input_shape=None):
        self.descriptor.build()
        self.generator.build()
        self.built = True

    def call(self, images, training=False):
        """Relaxed hash outputs (tanh) of raw-pixel images; codes are their signs."""
        return self.descriptor.hash_head(self.descriptor.features(normalize_images(images)))

    def _optimizer(self, learning_rate, name):
        c = self.config
        if c.lr_decay_rate != 1.0:
            learning_rate = keras.optimizers.schedules.ExponentialDecay(
                learning_rate, decay_steps=c.lr_decay_steps, decay_rate=c.lr_decay_rate)
        optimizer = keras.optimizers.Adam(learning_rate, beta_1=c.adam_beta_1, name=name)
        if keras.mixed_precision.global_policy().name == "mixed_float16":
            # float16 gradients underflow without loss scaling; the wrapper unscales in apply().
            optimizer = keras.optimizers.LossScaleOptimizer(optimizer, name=f"{name}_loss_scale")
        return optimizer

    def compile(self, descriptor_optimizer=None, generator_optimizer=None, **kwargs):
        """One optimizer for the descriptor (base + energy, class and hash heads), one for the
        generator + inference head. Defaults: Adam with the config's learning rates. Call it
        inside `strategy.scope()` when distributing: both optimizers are built here, eagerly."""
        super().compile(optimizer=None, **kwargs)  # the default would be an unused RMSprop
        self.descriptor_optimizer = descriptor_optimizer or self._optimizer(
            self.config.descriptor_learning_rate, "descriptor_optimizer")
        self.generator_optimizer = generator_optimizer or self._optimizer(
            self.config.generator_learning_rate, "generator_optimizer")
        if not self.built:
            self.build()
        # Explicit builds: lazy ones break MirroredStrategy and silently drop state on restore.
        self.descriptor_optimizer.build(self.descriptor.descriptor_variables)
        self.generator_optimizer.build(self.generator_variables)

    def _maybe_symbolic_build(self, *args, **kwargs):
        # compile() already built every layer, both optimizers and the metric trackers. Keras'
        # symbolic build under a strategy would also MEAN-reduce a data batch across workers, which
        # fails under MultiWorkerMirroredStrategy (keras 3.15: "Attempt to convert a value
        # (PerReplica...)"), so it is skipped when there is nothing left to build.
        if self.built and self.descriptor_optimizer is not None and self.descriptor_optimizer.built:
            return None
        return super()._maybe_symbolic_build(*args, **kwargs)

    def get_compile_config(self):
        if self.descriptor_optimizer is None:
            return None
        return {"descriptor_optimizer": keras.optimizers.serialize(self.descriptor_optimizer),
                "generator_optimizer": keras.optimizers.serialize(self.generator_optimizer)}

    def compile_from_config(self, config):
        self.compile(descriptor_optimizer=keras.optimizers.deserialize(config["descriptor_optimizer"]),
                     generator_optimizer=keras.optimizers.deserialize(config["generator_optimizer"]))

    @property
    def generator_variables(self):
        v = list(self.generator.trainable_variables)
        if self.config.generator_latent == "inferred":  # with the prior z nothing trains the head
            v += self.descriptor.inference_head.trainable_variables
        if self.config.vae_updates_base:
            v += self.descriptor.base.trainable_variables
        return v

    @property
    def metrics(self):
        return list(self.trackers.values())

    # ----------------------------------------------------------------------------- pieces
    def step_seed(self):
        """A fresh stateless seed for this step, different on every replica (SeedGenerator state
        is mirrored, so without the replica id all replicas would draw the same noise)."""
        seed = tf.cast(self.seed_generator.next(), tf.int32)
        ctx = tf.distribute.get_replica_context()
        replica_id = ctx.replica_id_in_sync_group if ctx is not None else 0
        return tf.random.experimental.stateless_fold_in(seed, replica_id)

    def sample_latent(self, batch_size, seed):
        return tf.random.stateless_normal([batch_size, self.config.latent_dim],
                                          tf.random.experimental.stateless_fold_in(seed, _LATENT))

    def sample_reparameterization_noise(self, shape, seed):
        return tf.random.stateless_normal(shape, tf.random.experimental.stateless_fold_in(seed, _REPARAM))

    def sample_negative_labels(self, labels_multi_hot, seed):
        """c- sharing no class with c+ (see hashing.sample_negative_labels)."""
        return sample_negative_labels(labels_multi_hot, tf.random.experimental.stateless_fold_in(seed, _NEGATIVES),
                                      self.config.num_classes)

    def generate_contrastive_pairs(self, labels_multi_hot, seed):
        """Eq. 1: one z, two labels -> (x+ = g(z, c+), x- = g(z, c-), c-, z)."""
        z = self.sample_latent(tf.shape(labels_multi_hot)[0], seed)
        negative_labels = self.sample_negative_labels(labels_multi_hot, seed)
        x_pos = self.generator(z, labels_multi_hot)
        x_neg = self.generator(z, negative_labels)
        return x_pos, x_neg, negative_labels, z

    def langevin_revise(self, images, labels_multi_hot, seed=None, steps=None):
        """Eq. 6 on f_E(., c) with the config's steps (unless given), step size, noise, reference
        Gaussian and clips."""
        c = self.config
        return revise_with_langevin(
            self.descriptor.energy, images, labels_multi_hot, steps=c.langevin_steps if steps is None else steps,
            step_size=c.langevin_step_size, noise_scale=c.langevin_noise_scale,
            seed=None if seed is None else tf.random.experimental.stateless_fold_in(seed, _LANGEVIN),
            ref_sigma=c.langevin_ref_sigma, clip_update=c.langevin_clip_update,
            value_range=(-1.0, 1.0) if c.langevin_clip_images else None)

    def descriptor_losses(self, images, labels, revised_pos, revised_neg, negative_labels, unlabeled=None):
        """Per-example descriptor terms on normalised real images (labels c+) and the revised
        pair (x~+ under c+, x~- under c-); with `unlabeled` images (same batch size) and
        unlabeled_nll_weight > 0, also the marginal-energy likelihood on them (ours)."""
        c = self.config
        d = self.descriptor
        real = d(images)
        # The revised pair is scored once as a single batch (x+ then x-).
        revised = d(tf.concat([revised_pos, revised_neg], axis=0))
        n = tf.shape(images)[0]
        energy_real = EnergyHead.select(real["class_energies"], labels)
        energy_rev = EnergyHead.select(revised["class_energies"], tf.concat([labels, negative_labels], 0))
        energy_rev = 0.5 * (energy_rev[:n] + energy_rev[n:])
        terms = {
            "nll_loss": losses.maximum_likelihood_loss(energy_real, energy_rev),
            "classification_loss": losses.classification_loss(real["logits"], labels, c.multi_label),
            "triplet_loss": losses.triplet_loss(real["hash"], revised["hash"][:n], revised["hash"][n:],
                                                c.triplet_margin),
            "quantization_loss": losses.quantization_loss(real["hash"]),
        }
        total = (c.nll_weight * terms["nll_loss"] + c.classification_weight * terms["classification_loss"]
                 + c.triplet_weight * terms["triplet_loss"] + c.quantization_weight * terms["quantization_loss"]
                 + c.energy_l2_weight * (tf.square(energy_real) + tf.square(energy_rev)))
        if c.real_triplet_weight:
            total += c.real_triplet_weight * losses.in_batch_triplet_loss(real["hash"], labels, c.triplet_margin)
        if c.synthetic_classification_weight:
            synthetic = losses.classification_loss(revised["logits"], tf.concat([labels, negative_labels], 0),
                                                   c.multi_label)
            total += c.synthetic_classification_weight * 0.5 * (synthetic[:n] + synthetic[n:])
        if unlabeled is not None and c.unlabeled_nll_weight:
            # Unlabeled images have no c: raise their marginal log-density logsumexp_c f_E(u, c)
            # against the revised samples' (JEM-style), which trains the shared base f0 on them.
            marginal_u = tf.reduce_logsumexp(d.class_energies(unlabeled), axis=-1)
            marginal_rev = tf.reduce_logsumexp(revised["class_energies"], axis=-1)
            marginal_rev = 0.5 * (marginal_rev[:n] + marginal_rev[n:])
            terms["unlabeled_nll_loss"] = losses.maximum_likelihood_loss(marginal_u, marginal_rev)
            total += c.unlabeled_nll_weight * (terms["unlabeled_nll_loss"]
                                               + c.energy_l2_weight * (tf.square(marginal_u) + tf.square(marginal_rev)))
        terms.update(total=total, energy_real=energy_real, energy_revised=energy_rev,
                     logits=real["logits"], hash=real["hash"])
        return terms

    def generator_losses(self, revised, labels, seed, prior_latent=None):
        """Eq. 2 + KL: reconstruct revised images from z~ = mu(x~) + sigma(x~) * eps. With
        generator_latent='prior' (ablation) from `prior_latent`, the z that made them, and no KL."""
        c = self.config
        if c.generator_latent == "prior":
            recon = losses.reconstruction_loss(revised, self.generator(prior_latent, labels),
                                               c.reconstruction_reduction)
            return {"reconstruction_loss": recon, "kl_loss": tf.zeros_like(recon), "total": recon}
        features = self.descriptor.features(revised)
        if not c.vae_updates_base:
            features = tf.stop_gradient(features)
        z_mean, z_log_var = self.descriptor.inference_head(features)
        z = z_mean + tf.exp(0.5 * z_log_var) * self.sample_reparameterization_noise(tf.shape(z_mean), seed)
        recon = losses.reconstruction_loss(revised, self.generator(z, labels), c.reconstruction_reduction)
        kl = losses.kl_divergence(z_mean, z_log_var)
        return {"reconstruction_loss": recon, "kl_loss": kl, "total": recon + c.kl_weight * kl}

    def _synthesize(self, labels):
        seed = self.step_seed()
        x_pos, x_neg, negative_labels, z = self.generate_contrastive_pairs(labels, seed)
        revised, grad_norm = self.langevin_revise(tf.concat([x_pos, x_neg], 0),
                                                  tf.concat([labels, negative_labels], 0), seed)
        return seed, negative_labels, revised, grad_norm, tf.concat([z, z], 0)

    @staticmethod
    def _guarded(grads, finite):
        """Zero every gradient of a step that went non-finite, so weights always stay finite."""
        return [tf.where(finite, g, tf.zeros_like(g)) for g in grads]

    def update_descriptor(self, images, labels, revised_pos, revised_neg, negative_labels, finite, unlabeled=None):
        variables = self.descriptor.descriptor_variables
        with tf.GradientTape() as tape:
            terms = self.descriptor_losses(images, labels, revised_pos, revised_neg, negative_labels, unlabeled)
            loss = tf.nn.compute_average_loss(terms["total"])  # share of the GLOBAL batch mean
            scaled = self.descriptor_optimizer.scale_loss(loss)  # identity unless mixed precision
        finite = tf.logical_and(finite, tf.math.is_finite(loss))
        self.descriptor_optimizer.apply(self._guarded(tape.gradient(scaled, variables), finite), variables)
        return terms, finite

    def update_generator(self, revised, labels, seed, finite, prior_latent=None):
        variables = self.generator_variables
        with tf.GradientTape() as tape:
            terms = self.generator_losses(revised, labels, seed, prior_latent)
            loss = tf.nn.compute_average_loss(terms["total"])
            scaled = self.generator_optimizer.scale_loss(loss)
        finite = tf.logical_and(finite, tf.math.is_finite(loss))
        self.generator_optimizer.apply(self._guarded(tape.gradient(scaled, variables), finite), variables)
        return terms, finite

    def _update_trackers(self, d_terms, g_terms, grad_norm, labels, finite):
        t = self.trackers
        t["loss"].update_state(d_terms["total"])
        for name in ("nll_loss", "classification_loss", "triplet_loss", "quantization_loss",
                     "energy_real", "energy_revised"):
            t[name].update_state(d_terms[name])
        if "unlabeled_nll_loss" in d_terms:
            t["unlabeled_nll_loss"].update_state(d_terms["unlabeled_nll_loss"])
        t["generator_loss"].update_state(g_terms["total"])
        t["reconstruction_loss"].update_state(g_terms["reconstruction_loss"])
        t["kl_loss"].update_state(g_terms["kl_loss"])
        t["langevin_grad_norm"].update_state(grad_norm)
        t["bit_balance"].update_state(bit_balance(d_terms["hash"]))
        t["class_accuracy"].update_state(correct_predictions(d_terms["logits"], labels, self.config.multi_label))
        t["diverged"].update_state(1.0 - tf.cast(finite, tf.float32))
        results = {m.name: m.result() for m in self.metrics}
        if isinstance(tf.distribute.get_strategy(), tf.distribute.MultiWorkerMirroredStrategy):
            # keras 3.15 reduces per-batch logs across workers with reduce("MEAN", axis=0), which
            # fails on scalars; epoch logs are read from the trackers and stay scalars.
            results = {k: tf.reshape(v, [1]) for k, v in results.items()}
        return results

    # ----------------------------------------------------------------------------- steps
    def train_step(self, data):
        images, labels = data[0], data[1]
        unlabeled = (normalize_images(data[2]) if len(data) > 2 and data[2] is not None
                     and self.config.unlabeled_nll_weight else None)
        x = normalize_images(images)
        c_pos = self.labels_to_multi_hot(labels)
        # 1-2. contrastive pair from one z, revised by Langevin on f_E (a constant below).
        seed, c_neg, revised, grad_norm, z = self._synthesize(c_pos)
        finite = tf.reduce_all(tf.math.is_finite(revised))
        revised_pos, revised_neg = tf.split(revised, 2, axis=0)
        # 3. descriptor: maximum likelihood + classification + triplet (+ quantization).
        d_terms, finite = self.update_descriptor(x, c_pos, revised_pos, revised_neg, c_neg, finite, unlabeled)
        # 4. generator + inference head: reconstruct the revised images from inferred z.
        g_terms, finite = self.update_generator(revised, tf.concat([c_pos, c_neg], 0), seed, finite, z)
        return self._update_trackers(d_terms, g_terms, grad_norm, c_pos, finite)

    def test_step(self, data):
        images, labels = data[0], data[1]
        x = normalize_images(images)
        c_pos = self.labels_to_multi_hot(labels)
        seed, c_neg, revised, grad_norm, z = self._synthesize(c_pos)
        revised_pos, revised_neg = tf.split(revised, 2, axis=0)
        d_terms = self.descriptor_losses(x, c_pos, revised_pos, revised_neg, c_neg)
        g_terms = self.generator_losses(revised, tf.concat([c_pos, c_neg], 0), seed, z)
        finite = tf.reduce_all(tf.math.is_finite(revised))
        return self._update_trackers(d_terms, g_terms, grad_norm, c_pos, finite)

    # ----------------------------------------------------------------------------- user API
    def fit(self, x=None, y=None, *args, callbacks=None, **kwargs):
        """`keras.Model.fit` after checking the data (shape, dtype, label range, emptiness) and
        with a DivergenceGuard that stops training clearly if Langevin diverges."""
        if self.descriptor_optimizer is None:
            raise ValueError("CoopHash.fit called before compile(); call model.compile() first.")
        validate_fit_data(x, y, self.config)
        callbacks = list(callbacks or [])
        if not any(isinstance(cb, DivergenceGuard) for cb in callbacks):
            callbacks.append(DivergenceGuard())
        return super().fit(x, y, *args, callbacks=callbacks, **kwargs)

    def class_probabilities(self, images, batch_size=256):
        images = validate_images(images, self.config.image_shape)
        out = []
        for i in range(0, len(images), batch_size):
            logits = self.descriptor.classifier_head(self.descriptor.features(normalize_images(images[i:i + batch_size])))
            out.append(tf.sigmoid(logits) if self.config.multi_label else tf.nn.softmax(logits))
        return np.concatenate([np.asarray(o) for o in out]) if out else np.zeros((0, self.config.num_classes))

    def generate(self, labels, z=None, seed=0):
        """Generator samples g(z, c) as uint8 images, for a list of class ids (or multi-hot rows)."""
        c = self.labels_to_multi_hot(tf.convert_to_tensor(labels))
        if z is None:
            z = tf.random.stateless_normal([tf.shape(c)[0], self.config.latent_dim], [seed, 0])
        return np.asarray(denormalize_images(self.generator(z, c)))

    def recover(self, images, labels=None, langevin_steps=None, seed=0, batch_size=256):
        """Clean corrupted query images with the model's own generative path: infer z = mu(x) with
        the inference head, generate g(z, c) for the class c the classifier head predicts (or the
        given `labels`), and revise it by `langevin_steps` (default config.langevin_steps) Langevin
        steps on f_E(., c). Returns uint8 images of the input's shape, to encode as queries."""
        images = validate_images(images, self.config.image_shape)
        steps = self.config.langevin_steps if langevin_steps is None else int(langevin_steps)
        if steps < 0:
            raise ValueError(f"langevin_steps must be >= 0, got {steps}")
        if labels is not None:
            labels = self.labels_to_multi_hot(tf.convert_to_tensor(
                validate_labels(labels, self.config.num_classes, self.config.multi_label, len(images))))
        out = []
        for i in range(0, len(images), batch_size):
            x = normalize_images(images[i:i + batch_size])
            features = self.descriptor.features(x)
            z_mean, _ = self.descriptor.inference_head(features)
            if labels is None:
                logits = self.descriptor.classifier_head(features)
                c = (tf.cast(logits > 0, tf.float32) if self.config.multi_label
                     else tf.one_hot(tf.argmax(logits, -1), self.config.num_classes))
            else:
                c = labels[i:i + batch_size]
            revised, _ = self.langevin_revise(self.generator(z_mean, c), c, tf.constant([seed, i], tf.int32),
                                              steps=steps)
            out.append(np.asarray(denormalize_images(revised)))
        return np.concatenate(out).astype(np.uint8).reshape(images.shape)

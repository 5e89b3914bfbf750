"""CoopHash: a multipurpose descriptor and a contrastive pair generator trained together by
variational MCMC teaching (Doan et al., arXiv 2210.04288), as a Keras 3 model for `model.fit`.

One step: a pair x+ = g(z, c+), x- = g(z, c-) from one z; Langevin revises both on f_E; the
descriptor learns by maximum likelihood + classification + triplet; the generator learns to
reproduce the revised pair (config.generator_latent says from which z, docs/GENERATOR.md why).
On a pretrained backbone the generator works at config.synthesis_size (docs/BACKBONES.md why).
"""

from typing import NamedTuple

import keras
import numpy as np
import tensorflow as tf

from coophash_keras import losses
from coophash_keras.data.validation import validate_images, validate_labels
from coophash_keras.layers import EnergyHead, PairGenerator
from coophash_keras.models.base import Batch, as_config
from coophash_keras.models.divergence import DivergenceGuard, TrainingDivergedError
from coophash_keras.models.generative import GenerativeHashingModel
from coophash_keras.models.step_metrics import bit_balance, correct_predictions
from coophash_keras.models.langevin import revise_with_langevin
from coophash_keras.models.networks import base_network_kwargs, energy_score, synthesis_shape
from coophash_keras.preprocessing import denormalize_images, normalize_images

__all__ = ["CoopHash", "ContrastivePairs", "DivergenceGuard", "TrainingDivergedError"]

# Sub-streams of a step's random seed (z, negative labels, Langevin noise, reparameterisation,
# the noise chains' starts and Langevin noise).
_LATENT, _NEGATIVES, _LANGEVIN, _REPARAM, _NOISE_CHAINS = 0, 1, 2, 3, 4


class ContrastivePairs(NamedTuple):
    """Eq. 1: x+ = g(z, c+) and x- = g(z, c-) from one z (after `revise_pairs`: their revisions)."""

    positive: tf.Tensor
    negative: tf.Tensor
    positive_labels: tf.Tensor
    negative_labels: tf.Tensor
    latent: tf.Tensor

    def images(self):
        return tf.concat([self.positive, self.negative], 0)

    def labels(self):
        return tf.concat([self.positive_labels, self.negative_labels], 0)


@keras.saving.register_keras_serializable(package="coophash")
class CoopHash(GenerativeHashingModel):
    """`compile()` then `fit(ds)` with ds yielding (images, labels): images raw pixels [0, 255]
    of shape config.image_shape, labels class ids [B] (or multi-hot [B, C] if multi_label).
    `encode(images)` gives int8 {-1,+1} codes (or packed uint8 bytes). `model.hash_network` is the
    multipurpose descriptor (models/descriptor.py), `model.generator` the pair generator."""

    optimizer_groups = {"descriptor": "descriptor_learning_rate", "generator": "generator_learning_rate"}
    all_tracker_names = (
        "loss",
        "nll_loss",
        "classification_loss",
        "triplet_loss",
        "quantization_loss",
        "generator_loss",
        "reconstruction_loss",
        "kl_loss",
        "inference_loss",
        "energy_real",
        "energy_revised",
        "energy_noise_chains",
        "langevin_grad_norm",
        "revision_distance",
        "energy_gap",
        "bit_balance",
        "class_accuracy",
        "diverged",
        "unlabeled_nll_loss",
        "pseudo_label_loss",
        "pseudo_label_rate",
        "recovery_consistency_loss",
    )
    tunable_fields = (
        "langevin_steps",
        "langevin_step_size",
        "langevin_noise_scale",
        "triplet_weight",
        "triplet_margin",
        "nll_weight",
        "classification_weight",
        "kl_weight",
        "descriptor_learning_rate",
        "generator_learning_rate",
        "base_filters",
        "feature_dim",
    )

    def __init__(self, config=None, **kwargs):
        config = as_config(config)
        # served_energy 'auto' becomes a name here, so the saved config, and the score the model
        # serves, never depend on what 'auto' means in a later version
        super().__init__(config.replace(served_energy=config.resolved_served_energy()), **kwargs)

    @staticmethod
    def uses_unlabeled(config):
        return bool(config.unlabeled_nll_weight or config.pseudo_label_weight or config.recovery_consistency_weight)

    @property
    def tracker_names(self):
        """Every tracker but those of switched-off unlabeled terms (a column of zeros tells nothing)."""
        c = self.config
        off = set()
        if not c.unlabeled_nll_weight:
            off.add("unlabeled_nll_loss")
        if not c.pseudo_label_weight:
            off |= {"pseudo_label_loss", "pseudo_label_rate"}
        if not c.recovery_consistency_weight:
            off.add("recovery_consistency_loss")
        if c.generator_latent != "taught":  # the generator's own loss is the inference head's
            off.add("inference_loss")
        if not c.noise_chains:
            off.add("energy_noise_chains")
        return tuple(n for n in self.all_tracker_names if n not in off)

    def build(self, input_shape=None):
        c = self.config
        self.hash_network.served_energy = c.served_energy  # CoopHash's only (DSH-GAN serves its adversary)
        super().build(input_shape)
        self.chain_buffer = self._add_chain_buffer("persistent_chains", c.seed)
        self.noise_chain_buffer = self._add_chain_buffer("noise_chains", c.seed + 1)
        self.built = True

    def _add_chain_buffer(self, field, seed):
        """A replay buffer [classes, slots, *image_shape] of Langevin chains (config field `field`
        gives the slots per class; None when 0), started at U[-1, 1] and saved with the model, so a
        resumed run keeps its chains."""
        c = self.config
        slots = getattr(c, field)
        if not slots:
            return None
        if c.multi_label:
            raise ValueError(f"{field} needs single-label data (one buffer per class)")
        name = "chain_buffer" if field == "persistent_chains" else "noise_chain_buffer"
        return self.add_weight(
            shape=(c.num_classes, slots, *synthesis_shape(c)),
            initializer=keras.initializers.RandomUniform(-1.0, 1.0, seed=seed),
            trainable=False,
            name=name,
        )

    def optimizer_variables(self, group):
        """What each optimizer updates. A part that no term of the config teaches is left out, so it
        stays exactly at its weights on every CPU: a gradient that is zero only in exact arithmetic
        (the generator reproducing its own unrevised samples) is ~1e-9 on some kernels, and Adam
        scales that up into real steps."""
        d = self.hash_network
        if group == "descriptor":
            untaught = {id(v) for part in self.untaught_heads() for v in part.trainable_variables}
            return [v for v in d.descriptor_variables if id(v) not in untaught]
        generator = list(self.generator.trainable_variables) if self.generator_is_taught else []
        if self.config.generator_latent == "prior":  # nothing trains the inference head
            return generator
        return generator + self.inference_variables()

    @property
    def generator_is_taught(self) -> bool:
        """False when the revision is the identity (no Langevin step, no persistent chains): the
        generator would only learn to reproduce its own samples, which teaches it nothing."""
        return bool(self.config.langevin_steps or self.config.persistent_chains)

    def untaught_heads(self):
        """Descriptor heads that no loss term of the config reaches (e.g. the energy head under the
        no_energy_head ablation, the classifier head under no_classifier_head)."""
        c = self.config
        d = self.hash_network
        heads = []
        if not (c.nll_weight or c.energy_l2_weight or c.unlabeled_nll_weight):
            heads.append(d.energy_head)
        classified = c.classification_weight or c.synthetic_classification_weight or c.pseudo_label_weight
        if not classified:
            heads.append(d.classifier_head)
        return heads

    def inference_variables(self):
        """What the ELBO of the revised pairs trains besides the generator: the inference head (and
        with vae_updates_base the shared base f0)."""
        v = list(self.hash_network.inference_head.trainable_variables)
        if self.config.vae_updates_base:
            v += self.hash_network.base.trainable_variables
        return v

    # ----------------------------------------------------------------------------- pieces
    def sample_latent(self, batch_size, seed):
        return tf.random.stateless_normal(
            [batch_size, self.config.latent_dim], tf.random.experimental.stateless_fold_in(seed, _LATENT)
        )

    def sample_reparameterization_noise(self, shape, seed):
        return tf.random.stateless_normal(shape, tf.random.experimental.stateless_fold_in(seed, _REPARAM))

    def sample_negative_labels(self, labels_multi_hot, seed):
        """c- sharing no class with c+ (models/generative.py)."""
        return self.negative_labels_for(labels_multi_hot, tf.random.experimental.stateless_fold_in(seed, _NEGATIVES))

    def generate_contrastive_pairs(self, labels_multi_hot, seed) -> ContrastivePairs:
        """Eq. 1: one z ~ N(0, I), two labels -> x+ = g(z, c+), x- = g(z, c-)."""
        z = self.sample_latent(tf.shape(labels_multi_hot)[0], seed)
        negative_labels = self.sample_negative_labels(labels_multi_hot, seed)
        return ContrastivePairs(
            self.generator(z, labels_multi_hot), self.generator(z, negative_labels), labels_multi_hot, negative_labels, z
        )

    def langevin_revise(self, images, labels_multi_hot, seed=None, steps=None):
        """Eq. 6 on f_E(., c) with the config's steps (unless given), step size (times the step
        scale the "shrink" divergence policy lowers), noise, reference Gaussian and clips. Returns
        (revised images, mean gradient norm)."""
        c = self.config
        return revise_with_langevin(
            self.hash_network.energy,
            images,
            labels_multi_hot,
            steps=c.langevin_steps if steps is None else steps,
            step_size=c.langevin_step_size * self.step_scale.value,  # a variable: read at run time, not traced in
            noise_scale=c.langevin_noise_scale,
            seed=None if seed is None else tf.random.experimental.stateless_fold_in(seed, _LANGEVIN),
            ref_sigma=c.langevin_ref_sigma,
            clip_update=c.langevin_clip_update,
            value_range=(-1.0, 1.0) if c.langevin_clip_images else None,
        )

    def revise_pairs(self, pairs: ContrastivePairs, seed):
        """Both images of every pair revised in one Langevin batch; returns (revised pairs, mean
        gradient norm). The revised images are constants for both updates. With persistent chains,
        each chain starts from a buffer slot of its class (or, at chain_reinit_rate, from the
        generator's sample) and the revised image goes back into that slot."""
        start, labels = pairs.images(), pairs.labels()
        if self.chain_buffer is not None:
            start, slots = self._chain_starts(self.chain_buffer, start, labels, seed, self.config.chain_reinit_rate)
        revised, grad_norm = self.langevin_revise(start, labels, seed)
        if self.chain_buffer is not None:
            self.chain_buffer.assign(tf.tensor_scatter_nd_update(self.chain_buffer.value, slots, revised))
        positive, negative = tf.split(revised, 2, axis=0)
        return pairs._replace(positive=positive, negative=negative), grad_norm

    def noise_chain_samples(self, labels_one_hot, seed):
        """JEM's sample_q on f_E(., c) for the descriptor's likelihood term (config.noise_chains):
        one chain per label row, started from a buffer slot of its class or, at
        noise_chain_reinit_rate, from fresh U[-1, 1] noise; `noise_chain_steps` Langevin steps with
        the revision's step size, noise and clips; the result goes back into its slot. Called by
        `train_step` only (`test_step` keeps the paper's terms and writes no buffer).

        Args:
            labels_one_hot: float [N, num_classes], the classes to sample (the batch's labels).
            seed: int32 [2], the step's stateless seed.

        Returns:
            float [N, *image_shape], the revised chains (constants); None when noise_chains is 0.
        """
        if self.noise_chain_buffer is None:
            return None
        c = self.config
        seed = tf.random.experimental.stateless_fold_in(seed, _NOISE_CHAINS)
        shape = tf.concat([tf.shape(labels_one_hot)[:1], self.noise_chain_buffer.shape[2:]], 0)
        noise = tf.random.stateless_uniform(shape, tf.random.experimental.stateless_fold_in(seed, 13), -1.0, 1.0)
        buffer = self.noise_chain_buffer
        start, slots = self._chain_starts(buffer, noise, labels_one_hot, seed, c.noise_chain_reinit_rate)
        revised, _ = self.langevin_revise(start, labels_one_hot, seed, steps=c.noise_chain_steps)
        buffer.assign(tf.tensor_scatter_nd_update(buffer.value, slots, revised))
        return revised

    @staticmethod
    def _chain_starts(buffer, restarts, labels_one_hot, seed, reinit_rate):
        """Where a batch of chains of a replay buffer [classes, slots, ...] starts: a random slot of
        each row's class, or, at `reinit_rate`, the row of `restarts` (the generator's sample for the
        persistent chains, U[-1, 1] for the noise chains). Returns (starts, [N, 2] slots (class, index))."""
        if tf.distribute.get_replica_context() is not None and tf.distribute.get_strategy().num_replicas_in_sync > 1:
            raise ValueError("replay-buffer chains are not supported across replicas (one buffer is written per step)")
        n = tf.shape(restarts)[0]
        fold = tf.random.experimental.stateless_fold_in
        classes = tf.argmax(labels_one_hot, axis=-1, output_type=tf.int32)
        index = tf.random.stateless_uniform([n], fold(seed, 11), 0, buffer.shape[1], dtype=tf.int32)
        slots = tf.stack([classes, index], axis=1)
        from_buffer = tf.gather_nd(buffer, slots)
        restart = tf.random.stateless_uniform([n], fold(seed, 12)) < reinit_rate
        return tf.where(restart[:, None, None, None], restarts, from_buffer), slots

    def descriptor_losses(self, batch: Batch, revised: ContrastivePairs, noise_samples=None):
        """Per-example descriptor terms on the real images (labels c+) and the revised pair
        (x~+ under c+, x~- under c-); with unlabelled images in the batch and
        unlabeled_nll_weight > 0, also the marginal-energy likelihood on them (ours). With
        `noise_samples` (one noise chain per real image, under its label: `noise_chain_samples`),
        the likelihood term's negative energy is (1 - s) f_E(revised) + s f_E(noise chain), s =
        noise_chain_share; nothing else reads them."""
        c = self.config
        d = self.hash_network
        labels = batch.labels
        real = d(batch.images, training=True)
        # The revised pair is scored once as a single batch (x+ then x-).
        scored = d(revised.images(), training=True)
        n = tf.shape(batch.images)[0]
        real_energies = real["class_energies"]
        if d.synthesizes_smaller:  # the energy compares real and synthetic images at one resolution
            real_energies = d.class_energies(d.synthetic_view(batch.images), training=True)
        energy_real = EnergyHead.select(real_energies, labels)
        energy_rev = EnergyHead.select(scored["class_energies"], revised.labels())
        energy_rev = 0.5 * (energy_rev[:n] + energy_rev[n:])
        energy_negative, energy_noise = self._likelihood_negatives(energy_rev, noise_samples, labels)
        terms = {
            "nll_loss": losses.maximum_likelihood_loss(energy_real, energy_negative),
            "classification_loss": self.labelled_classification_loss(real["logits"], labels),
            "triplet_loss": losses.triplet_loss(real["hash"], scored["hash"][:n], scored["hash"][n:], c.triplet_margin),
            "quantization_loss": losses.quantization_loss(real["hash"]),
        }
        total = (
            c.nll_weight * terms["nll_loss"]
            + c.classification_weight * terms["classification_loss"]
            + c.triplet_weight * terms["triplet_loss"]
            + c.quantization_weight * terms["quantization_loss"]
            + c.energy_l2_weight * (tf.square(energy_real) + tf.square(energy_rev))
        )
        if energy_noise is not None:
            total += c.energy_l2_weight * tf.square(energy_noise)
        if c.real_triplet_weight:
            total += c.real_triplet_weight * losses.in_batch_triplet_loss(real["hash"], labels, c.triplet_margin)
        if c.synthetic_classification_weight:
            synthetic = self.labelled_classification_loss(scored["logits"], revised.labels())
            if c.synthetic_realness_weighting:
                realness = tf.stop_gradient(
                    tf.sigmoid(EnergyHead.select(scored["class_energies"], revised.labels()) - tf.reduce_mean(energy_real))
                )
                synthetic *= realness
            total += c.synthetic_classification_weight * 0.5 * (synthetic[:n] + synthetic[n:])
        if batch.unlabeled is not None:
            unlabeled = self.unlabeled_losses(batch.unlabeled, scored, n)
            terms.update({k: v for k, v in unlabeled.items() if k != "total"})
            total += unlabeled["total"]
        terms.update(
            total=total,
            energy_real=energy_real,
            energy_revised=energy_rev,
            energy_noise_chains=energy_noise,
            logits=real["logits"],
            hash=real["hash"],
        )
        return terms

    def _likelihood_negatives(self, energy_rev, noise_samples, labels):
        """(the likelihood term's negative energy per example, f_E of the noise chains or None)."""
        if noise_samples is None:
            return energy_rev, None
        d = self.hash_network
        energy_noise = EnergyHead.select(d(noise_samples, training=True)["class_energies"], labels)
        share = self.config.noise_chain_share
        return (1.0 - share) * energy_rev + share * energy_noise, energy_noise

    def unlabeled_losses(self, unlabeled, scored, n):
        """Terms on a batch of unlabeled images (ours, not in the paper), each its mean over the
        unlabeled batch broadcast to the n anchors (so the global-batch scaling stays right):
          unlabeled_nll_loss   the marginal energy logsumexp_c f_E(u, c) raised against the revised
                               samples' (JEM-style), training f0 on the pool;
          pseudo_label_loss    FixMatch: the classifier head on a strong view learns the confident
                               predictions on a weak view (pseudo_label_rate: the share kept);
          recovery_consistency_loss  u's relaxed code pulled towards its recovery's code."""
        c = self.config
        d = self.hash_network
        out = {"total": tf.zeros([n])}
        per_anchor = lambda value: tf.fill([n], tf.reduce_mean(value))  # noqa: E731
        if c.unlabeled_nll_weight:
            marginal_u = tf.reduce_logsumexp(d.class_energies(d.synthetic_view(unlabeled), training=True), axis=-1)
            marginal_rev = tf.reduce_logsumexp(scored["class_energies"], axis=-1)
            marginal_rev = 0.5 * (marginal_rev[:n] + marginal_rev[n:])
            nll = losses.maximum_likelihood_loss(tf.reduce_mean(marginal_u), marginal_rev)
            out["unlabeled_nll_loss"] = nll
            out["total"] += c.unlabeled_nll_weight * (
                nll + c.energy_l2_weight * (tf.reduce_mean(tf.square(marginal_u)) + tf.square(marginal_rev))
            )
        if c.pseudo_label_weight:
            loss, kept = self.pseudo_label_terms(unlabeled, lambda x, training: d(x, training=training)["logits"])
            out["pseudo_label_loss"], out["pseudo_label_rate"] = per_anchor(loss), per_anchor(kept)
            out["total"] += c.pseudo_label_weight * out["pseudo_label_loss"]
        if c.recovery_consistency_weight:
            u = unlabeled[:n]
            codes = d.relaxed_codes(u, training=True)
            target = tf.stop_gradient(d.relaxed_codes(self._recover_normalized(u)))
            out["recovery_consistency_loss"] = per_anchor(tf.reduce_mean(tf.square(codes - target), axis=-1))
            out["total"] += c.recovery_consistency_weight * out["recovery_consistency_loss"]
        return out

    def _recover_normalized(self, x, labels=None, steps=None, seed=None):
        """Normalised images -> their recoveries: g(mu(x), c) revised by Langevin on f_E(., c), with
        c the classifier's prediction unless given. A constant (no gradient)."""
        d = self.hash_network
        features = d.features(x)
        if labels is None:
            logits = d.class_logits(features, d.hash_head(features))
            labels = (
                tf.cast(logits > 0, tf.float32)
                if self.config.multi_label
                else tf.one_hot(tf.argmax(logits, -1), self.config.num_classes)
            )
        z_mean, _ = d.infer_latent(x)
        revised, _ = self.langevin_revise(self.generator(z_mean, labels), labels, seed, steps=steps)
        return tf.stop_gradient(revised)

    def generator_losses(self, revised: ContrastivePairs, seed):
        """The generator's and the inference head's terms on the revised pairs x~ (constants):
          'taught' (default)  the generator reconstructs each x~ from the z that made its pair, and
                              the inference head learns the ELBO of x~ through the generator held
                              fixed (a gradient that reaches the inference head only);
          'inferred'          Eq. 2 as written: both learn the ELBO from z~ ~ q(z|x~);
          'prior'             the generator alone, from the z that made the pair (ablation).
        Per image of the pairs (x+ then x-), in reconstruction units (see nats_scale)."""
        c = self.config
        images, labels = revised.images(), revised.labels()
        if c.generator_latent == "inferred":
            return self._elbo(images, labels, seed)
        made_by = tf.concat([revised.latent, revised.latent], 0)
        taught = losses.reconstruction_loss(images, self.generator(made_by, labels), c.reconstruction_reduction)
        terms = {"reconstruction_loss": taught, "kl_loss": tf.zeros_like(taught), "total": taught}
        if c.generator_latent == "taught":
            inference = self._elbo(images, labels, seed)
            terms.update(
                kl_loss=inference["kl_loss"],
                inference_loss=inference["total"],
                restricted=((inference["total"], self.inference_variables()),),
            )
        return terms

    def _elbo(self, images, labels, seed):
        """Per image: the reconstruction of `images` from z~ = mu(x) + sigma(x) * eps, the KL of
        q(z|x) to N(0, I), and `total` = the negative ELBO in reconstruction units."""
        c = self.config
        features = self.hash_network.inference_features(images)
        if not c.vae_updates_base:
            features = tf.stop_gradient(features)
        z_mean, z_log_var = self.hash_network.infer_latent(images, features=features)
        z = z_mean + tf.exp(0.5 * z_log_var) * self.sample_reparameterization_noise(tf.shape(z_mean), seed)
        recon = losses.reconstruction_loss(images, self.generator(z, labels), c.reconstruction_reduction)
        kl = losses.kl_divergence(z_mean, z_log_var)
        return {"reconstruction_loss": recon, "kl_loss": kl, "total": recon + self.nats_scale * c.kl_weight * kl}

    @property
    def nats_scale(self):
        """The weight of one nat (of the KL) against the reconstruction term: 2 sigma^2 / D for the
        Gaussian ELBO per pixel, else 1 (see config.reconstruction_reduction)."""
        c = self.config
        if c.reconstruction_reduction != "gaussian":
            return 1.0
        return 2.0 * c.generator_sigma**2 / int(np.prod(synthesis_shape(c)))

    @staticmethod
    def revision_distance(pairs, revised):
        """Per example: RMS pixel change ||x~ - x^|| / sqrt(D) that Langevin made to x+ and x-."""
        diff = revised.images() - pairs.images()
        return tf.sqrt(tf.reduce_mean(tf.reshape(tf.square(diff), [tf.shape(diff)[0], -1]), axis=-1))

    def _logs(self, d_terms, g_terms, grad_norm, distance, labels, finite):
        return self.record(
            {
                "loss": d_terms["total"],
                **{k: d_terms.get(k) for k in self.tracker_names if k.endswith("_loss") and k in d_terms},
                "energy_real": d_terms["energy_real"],
                "energy_revised": d_terms["energy_revised"],
                "energy_noise_chains": d_terms.get("energy_noise_chains"),
                "generator_loss": g_terms["total"],
                "reconstruction_loss": g_terms["reconstruction_loss"],
                "kl_loss": g_terms["kl_loss"],
                "inference_loss": g_terms.get("inference_loss"),
                "pseudo_label_rate": d_terms.get("pseudo_label_rate"),
                "langevin_grad_norm": grad_norm,
                "revision_distance": distance,
                "energy_gap": d_terms["energy_real"] - d_terms["energy_revised"],
                "bit_balance": bit_balance(d_terms["hash"]),
                "class_accuracy": correct_predictions(d_terms["logits"], labels, self.config.multi_label),
                "diverged": 1.0 - tf.cast(finite, tf.float32),
            }
        )

    # ----------------------------------------------------------------------------- steps
    def train_step(self, data):
        batch = self.unpack(data)
        if not self.uses_unlabeled(self.config):
            batch = batch._replace(unlabeled=None)
        seed = self.step_seed()
        # 1. a contrastive pair from one z; 2. revised by Langevin on f_E (constants below).
        pairs = self.generate_contrastive_pairs(batch.labels, seed)
        revised, grad_norm = self.revise_pairs(pairs, seed)
        # 2b. with noise_chains: chains from noise, negatives of the likelihood term only.
        noise_samples = self.noise_chain_samples(batch.labels, seed)
        finite = tf.reduce_all(tf.math.is_finite(revised.images()))
        if noise_samples is not None:
            finite = finite & tf.reduce_all(tf.math.is_finite(noise_samples))
        # 3. descriptor: maximum likelihood + classification + triplet (+ quantization).
        d_terms, finite = self.guarded_update(
            "descriptor", lambda: self.descriptor_losses(batch, revised, noise_samples), finite
        )
        # 4. generator (and inference head): learn to reproduce the revised pairs.
        g_terms, finite = self.guarded_update("generator", lambda: self.generator_losses(revised, seed), finite)
        return self._logs(d_terms, g_terms, grad_norm, self.revision_distance(pairs, revised), batch.labels, finite)

    def test_step(self, data):
        batch = self.unpack(data)._replace(unlabeled=None)
        seed = self.step_seed()
        pairs = self.generate_contrastive_pairs(batch.labels, seed)
        revised, grad_norm = self.revise_pairs(pairs, seed)
        d_terms = self.descriptor_losses(batch, revised)
        g_terms = self.generator_losses(revised, seed)
        finite = tf.reduce_all(tf.math.is_finite(revised.images()))
        return self._logs(d_terms, g_terms, grad_norm, self.revision_distance(pairs, revised), batch.labels, finite)

    # ----------------------------------------------------------------------------- user API
    def fit_score_statistics(self, images, batch_size=256):
        """With served_energy 'min_z': store the mean and standard deviation of the energy head's
        and the free energy's scores on `images` (the labelled training images; `coophash train`
        calls it after fitting), which the served `energy` standardises by. A no-op otherwise.

        Args:
            images: uint8 [N, *image_shape], in-distribution images (never the queries).
            batch_size: images per forward pass.

        Returns:
            float [2, 2]: rows (energy head, free energy), columns (mean, std); None when not 'min_z'.
        """
        stats = self.hash_network.score_statistics
        if stats is None:
            return None
        images = validate_images(images, self.config.image_shape)
        head, free = [], []
        for i in range(0, len(images), batch_size):
            out = self.hash_network.serving_outputs(normalize_images(images[i : i + batch_size]))
            head.append(np.asarray(out["energy_head"], np.float64))
            free.append(np.asarray(energy_score(out["class_logits"], self.config.multi_label), np.float64))
        values = np.array([[np.mean(v), max(np.std(v), 1e-6)] for v in (np.concatenate(head), np.concatenate(free))])
        stats.assign(values.astype(np.float32))
        return values

    def generate(self, labels, z=None, seed=0):
        """Generator samples g(z, c) as uint8 images (at the synthesis size), for a list of class ids
        (or multi-hot rows)."""
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
            labels = self.labels_to_multi_hot(
                tf.convert_to_tensor(
                    validate_labels(labels, self.config.num_classes, self.config.multi_label, len(images))
                )
            )
        out = []
        for i in range(0, len(images), batch_size):
            x = normalize_images(images[i : i + batch_size])
            c = None if labels is None else labels[i : i + batch_size]
            revised = self._recover_normalized(x, c, steps, tf.constant([seed, i], tf.int32))
            out.append(np.asarray(denormalize_images(self.hash_network.to_image_size(revised))))
        return np.concatenate(out).astype(np.uint8).reshape(images.shape)

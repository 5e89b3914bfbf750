"""One object holding every hyper-parameter of every model of the package, each with its
provenance and its valid range.

Provenance tags (docs/CONFIG.md is generated from this file):
  paper     -- stated in the CoopHash paper (arXiv 2210.04288, sections 3.1-3.3)
  reference -- taken from a reference implementation named in the field's text (CoopNets /
               CoopVAEBM / Conditional-CoopNets for CoopHash's generative side; the official or
               swuxyj/DeepHash-pytorch code for CSQ, OrthoHash and DPN); not CoopHash's own value
  ours      -- our choice where the sources are silent (how it was picked: docs/RESULTS.md)
"""

from __future__ import annotations

import dataclasses
import json
import typing
from dataclasses import dataclass, field, fields
from typing import Any


def _f(
    default, provenance: str, doc: str, *, low=None, high=None, above=None, choices=None, multiple_of=None, check=None
):
    """A config field: default, provenance, meaning, and its valid range (low/high inclusive,
    `above` exclusive lower bound, `choices`, `multiple_of`, or `check`: a function that raises
    ValueError for a bad value)."""
    limits = dict(low=low, high=high, above=above, choices=choices, multiple_of=multiple_of, check=check)
    return field(default=default, metadata={"provenance": provenance, "doc": doc, "limits": limits})


@dataclass
class CoopHashConfig:
    # --- data / shapes -----------------------------------------------------------------------
    image_shape: tuple = _f((8, 8, 1), "ours", "input image shape (H, W, C); any size and channel count")
    num_classes: int = _f(
        10,
        "ours",
        "number of classes (length of the label vector c); at least 2 for every model that learns from labels, "
        "0 for unlabelled data (images:PATH) with a label-free model (itq, lsh)",
        low=0,
        check=lambda n: _no_single_class(n),
    )
    multi_label: bool = _f(False, "paper", "multi-hot labels (sigmoid classifier) instead of single labels")
    num_bits: int = _f(32, "ours", "K, number of hash bits", multiple_of=8)

    # --- the shared base network f0 (every model) ---------------------------------------------
    base_filters: int = _f(16, "ours", "channels of f0's stem; doubled per downsampling block (cap 256)", low=1)
    feature_dim: int = _f(256, "ours", "width of the shared feature vector f0(x)", low=1)
    base_pooling: str = _f(
        "max",
        "ours",
        "downsampling in f0: a stride-2 4x4 conv, or a max or average pool",
        choices=("stride", "max", "avg"),
    )
    base_convs_per_block: int = _f(
        1, "ours", "3x3 convs per downsampling block of f0 (with 'stride' the last is the stride-2 conv)", low=1
    )
    base_dropout: float = _f(0.3, "ours", "dropout on f0's feature vector during training", low=0.0, high=0.95)
    augmentation: str = _f(
        "",
        "ours",
        "augmentation of the labelled images for every model alike, e.g. 'flip,translate=0.1' (coophash_keras/data/augment.py); '' = none",
        check=lambda spec: _parse_augmentation(spec),
    )

    # --- a pretrained backbone as f0 (every model; docs/BACKBONES.md) ----------------------------
    backbone: str = _f(
        "none",
        "ours",
        "f0 from a pretrained image model instead of the conv base: 'none', a keras.applications name (see "
        "KERAS_APPLICATIONS in config.py, e.g. MobileNetV3Small, EfficientNetB0, ResNet50) or 'hub:PRESET' (a "
        "keras-hub image backbone preset name or local preset folder); images of at least 32x32, 1 or 3 channels. "
        "The base_* fields above apply to the conv base only",
    )
    backbone_weights: str = _f(
        "imagenet",
        "ours",
        "the backbone's initial weights: 'imagenet' (keras.applications' ImageNet file, from ~/.keras/models/ or "
        "downloaded; for hub: the preset's own weights), 'none' (random), or the path of a weights file "
        "(keras.applications: the *_notop.h5 file). Read once when a model is built to train; a saved model "
        "carries its own weights",
    )
    backbone_freeze_steps: int = _f(
        0, "ours", "steps (of each optimizer) that leave the backbone unchanged while the rest trains", low=0
    )
    backbone_learning_rate_scale: float = _f(
        0.1,
        "ours",
        "after backbone_freeze_steps, the backbone learns at this fraction of its optimizer's learning rate "
        "(0 = a frozen feature extractor for good)",
        low=0.0,
        high=1.0,
    )

    # --- CoopHash's generator -----------------------------------------------------------------
    latent_dim: int = _f(32, "ours", "z dimension (reference code: 100/128, scaled down for small images)", low=1)
    generator_filters: int = _f(
        64, "ours", "channels of the generator's first feature map, halved per upsampling", low=1
    )
    synthesis_size: int | None = _f(
        None,
        "ours",
        "smaller side (px) of the images CoopHash's and DSH-GAN's generator makes and Langevin revises; None = the "
        "image size with the conv base, 32 with a backbone (never above the image size). Below the image size the "
        "descriptor reads them through a bilinear upsampling, and its energy / adversary terms read real images "
        "resized down to it and back (models/descriptor.py)",
        low=4,
    )

    # --- Langevin revision (Eq. 6) -----------------------------------------------------------
    langevin_steps: int = _f(10, "ours", "T, Langevin steps per batch (reference code: 15)", low=0)
    langevin_step_size: float = _f(
        1.0,
        "ours",
        "delta in Eq. 6, so each step moves delta^2/2 = 0.5 x grad (reference code: 0.002 with a reference Gaussian of sigma 0.016)",
        above=0.0,
    )
    langevin_noise_scale: float = _f(
        0.007,
        "ours",
        "noise = scale * delta * N(0, I); 1.0 is Eq. 6, 0 turns it off (0.007: pixel noise std 0.007, JEM-like)",
        low=0.0,
    )
    langevin_ref_sigma: float | None = _f(
        None, "reference", "sigma of the reference Gaussian (CoopNets 0.016); None = off", above=0.0
    )
    langevin_clip_update: float | None = _f(
        0.1, "ours", "clip each Langevin update to +-value (CoopFlow-style); None = off", above=0.0
    )
    energy_dropout: bool = _f(
        True,
        "ours",
        "whether the likelihood term reads f_E through f0's training dropout; Langevin always follows f_E without "
        "dropout, so False trains the very function the sampler follows",
    )
    langevin_clip_images: bool = _f(True, "ours", "keep revised images inside the data range [-1, 1]")

    persistent_chains: int = _f(
        0,
        "ours",
        "slots per class of a replay buffer of revised images (persistent chains, as in JEM); each pair image starts its Langevin chain from a buffer slot of its class instead of the generator's sample, and is written back; 0 = off (the paper: chains start at the generator)",
        low=0,
    )
    chain_reinit_rate: float = _f(
        0.05,
        "reference",
        "share of chains restarted from the generator's sample each step (JEM: 5%)",
        low=0.0,
        high=1.0,
    )

    noise_chains: int = _f(
        0,
        "ours",
        "slots per class of a second replay buffer, of Langevin chains started from uniform noise U[-1, 1] "
        "(JEM's sample_q, class-conditional: 10,000 slots for CIFAR-10's 10 classes); each step runs one chain per "
        "labelled image under its class, and their energies are negatives of the descriptor's likelihood term only "
        "(never the triplet, the synthetic labels or the generator's teaching), so f_E also learns away from the "
        "generator's neighbourhood (docs/OOD.md); 0 = off (the paper: the revised pairs are the only negatives)",
        low=0,
    )
    noise_chain_reinit_rate: float = _f(
        0.05,
        "reference",
        "share of noise chains restarted from U[-1, 1] each step (JEM's reinit_freq 0.05; Du & Mordatch: 5%)",
        low=0.0,
        high=1.0,
    )
    noise_chain_steps: int = _f(
        20,
        "reference",
        "Langevin steps per noise chain and training step, with the revision's step size, noise and clips (JEM's "
        "n_steps: 20; Du & Mordatch: 60)",
        low=1,
    )
    noise_chain_share: float = _f(
        0.5,
        "ours",
        "with noise_chains: the share of the likelihood term's negative energy that the noise chains give, the rest "
        "the revised pairs' (0.5: as much weight to each kind of negative)",
        low=0.0,
        high=1.0,
    )

    served_energy: str = _f(
        "auto",
        "ours",
        "what CoopHash's served `energy` output (and so its `in_distribution`) is: 'energy_head' = log sum_c exp "
        "f_E(x, c), the descriptor's density view; 'class_free_energy' = the free energy of its class logits, "
        "log sum_c exp (Liu et al. 2020), or with multi_label sum_c softplus (JointEnergy, Wang et al. 2021: the "
        "free energy of independent sigmoids over label sets), what the pointwise baselines serve; 'min_z' = the "
        "smaller of the two, each as a z-score by its mean and standard deviation on the labelled training images "
        "at the end of `coophash train` (CoopHash.fit_score_statistics); 'auto' = the best of these measured for "
        "the kind of labels: 'min_z' with multi_label (the 2x2 mosaics), 'class_free_energy' otherwise (digits, "
        "Fashion-MNIST). CoopHash stores the resolved name, so a saved model keeps its score. All measured as OOD "
        "scores in docs/OOD.md. A model saved before this field existed keeps serving its energy head",
        choices=("auto", "energy_head", "class_free_energy", "min_z"),
    )

    negative_labels: str = _f(
        "one_absent_class",
        "ours",
        "c- of CoopHash's and DSH-GAN's synthesised pairs: 'one_absent_class' (one class absent from c+; the paper "
        "says only 'a different label') or 'absent_set' (as many absent classes as c+ has, so on multi-label data "
        "x- = g(z, c-) carries a label set like a real image's; identical to 'one_absent_class' on single-label data)",
        choices=("one_absent_class", "absent_set"),
    )

    # --- CoopHash descriptor losses -------------------------------------------------------------
    nll_weight: float = _f(1.0, "paper", "weight of the maximum-likelihood term mean f_E(x_rev) - mean f_E(x)", low=0.0)
    classification_weight: float = _f(1.0, "ours", "weight of the classification loss on real images", low=0.0)
    triplet_weight: float = _f(1.0, "ours", "weight of the triplet loss (real anchor, revised x+, revised x-)", low=0.0)
    triplet_margin: float = _f(1.0, "ours", "margin of the relaxed triplet loss on mean squared code distance", low=0.0)
    real_triplet_weight: float = _f(
        0.0,
        "ours",
        "extra triplet on hardest real in-batch triplets, per replica batch (0 = paper's synthetic-only)",
        low=0.0,
    )
    synthetic_classification_weight: float = _f(
        0.0,
        "ours",
        "extension (not in the paper; DSH-GAN/AC-GAN style): classify the revised x~+ as c+ and x~- as c-; 0 = off",
        low=0.0,
    )
    unlabeled_nll_weight: float = _f(
        0.0,
        "ours",
        "semi-supervised extension (not in the paper): maximum likelihood of the marginal energy logsumexp_c f_E(x, c) on unlabeled images, when batches carry them (data.with_unlabeled); 0 = off",
        low=0.0,
    )
    classifier_input: str = _f(
        "features",
        "ours",
        "what CoopHash's (and DSH-GAN's) classifier head reads: f0's 'features' (the paper's discriminative head beside the hash head), the relaxed 'codes' through a Dense layer (classification through the codes, so the class signal reaches the hash head), or the codes through OrthoHash's 'codebook' read-out: orthohash_scale * cosine to fixed +-1 class codewords (drawn from seed), with CoopHash's labelled classification terms taking OrthoHash's loss: orthohash_margin off the true classes' cosines, cross-entropy against the label set normalised to sum to 1",
        choices=("features", "codes", "codebook"),
    )
    synthetic_realness_weighting: bool = _f(
        False,
        "ours",
        "weight each revised image's synthetic_classification term by sigmoid(f_E(x~, c) - mean f_E(x, c) of the real batch): pairs the descriptor finds real count more",
    )
    pseudo_label_weight: float = _f(
        0.0,
        "ours",
        "FixMatch-style term on unlabeled images (not in the paper): cross-entropy of the classifier head on a strongly augmented view against the confident predictions on a weakly augmented one; 0 = off",
        low=0.0,
    )
    pseudo_label_threshold: float = _f(
        0.95, "reference", "confidence a pseudo-label needs (FixMatch: 0.95)", low=0.0, high=1.0
    )
    unlabeled_batch_ratio: int = _f(
        1, "ours", "unlabeled images per labelled image in a batch (FixMatch: 7; 1 here for 2-core compute)", low=1
    )
    weak_augmentation: str = _f(
        "flip,translate=0.125",
        "reference",
        "the weak view of an unlabeled image for pseudo-labels (FixMatch: flip and translate by 12.5%)",
        check=lambda spec: _parse_augmentation(spec),
    )
    strong_augmentation: str = _f(
        "flip,translate=0.125,contrast=0.5,brightness=0.3,noise=25,blur=1.0,erase=0.3",
        "ours",
        "the strong view (FixMatch uses RandAugment + Cutout; here Keras layers: coophash_keras/data/augment.py)",
        check=lambda spec: _parse_augmentation(spec),
    )
    recovery_consistency_weight: float = _f(
        0.0,
        "ours",
        "pull an unlabeled image's relaxed code towards the code of its recovery g(mu(x), c^) revised by Langevin (CoopHash.recover); 0 = off",
        low=0.0,
    )
    quantization_weight: float = _f(
        0.01,
        "ours",
        "weight of mean (|h| - 1)^2, pushes relaxed codes to +-1 (CoopHash, DSH-GAN, triplet, code classifier)",
        low=0.0,
    )
    energy_l2_weight: float = _f(
        0.1,
        "ours",
        "penalty on mean f_E^2 of real and revised images (and noise-chain images) (keeps energies bounded)",
        low=0.0,
    )

    # --- generator / inference-path loss (Eq. 2 + KL) ------------------------------------------
    kl_weight: float = _f(
        1.0, "reference", "KL(q(z|x_rev) || N(0,I)) weight (CoopVAEBM: 2 with pixel-sum recon)", low=0.0
    )
    reconstruction_reduction: str = _f(
        "gaussian",
        "paper",
        "the generator loss's form: 'gaussian' = the negative ELBO of the paper's x = g(c, z) + eps, "
        "eps ~ N(0, generator_sigma^2): mean squared error per pixel + kl_weight * 2 sigma^2 / D * KL (D pixels), "
        "so the KL keeps one weight against the reconstruction at any image size; 'mean' = mean squared error + "
        "kl_weight * KL and 'sum' = summed squared error + kl_weight * KL (CoopVAEBM: 'sum' with kl_weight 2)",
        choices=("gaussian", "mean", "sum"),
    )
    generator_sigma: float = _f(
        0.3,
        "reference",
        "sigma of the generator's noise eps in x = g(c, z) + eps, with reconstruction_reduction 'gaussian' "
        "(CoopNets' gen_refsig: 0.3)",
        above=0.0,
    )
    inference_features: str = _f(
        "pooled",
        "ours",
        "what of f0 the inference head reads: 'pooled' = f0(x), the feature vector every head reads; 'map' = f0's "
        "last convolutional map before its dense feature layer (a pretrained backbone: its pooled output)",
        choices=("pooled", "map"),
    )
    vae_updates_base: bool = _f(False, "ours", "whether the VAE loss also trains the shared base f0")
    generator_latent: str = _f(
        "taught",
        "ours",
        "the z the generator learns to reproduce each revised pair from: 'taught' = the z that made the pair, "
        "while the inference head learns q(z|x~) by the ELBO of the revised pairs through the generator held "
        "fixed (cooperative learning's MCMC teaching; ours: with 'inferred' the generator collapsed to one image "
        "per class, docs/GENERATOR.md); 'inferred' = z~ ~ q(z|x~) for both (variational MCMC teaching, Eq. 2 as "
        "written); 'prior' = the z that made the pair, inference head untrained (the no-inference-head ablation)",
        choices=("taught", "inferred", "prior"),
    )

    # --- DSH-GAN baseline ---------------------------------------------------------------------
    adversarial_weight: float = _f(
        1.0,
        "ours",
        "DSH-GAN: weight of the real-vs-synthetic adversarial loss (DSH-GAN's weights could not be read)",
        low=0.0,
    )

    # --- pointwise baselines -------------------------------------------------------------------
    csq_quantization_weight: float = _f(
        1e-4,
        "reference",
        "CSQ: lambda of mean (|u| - 1)^2 beside the BCE to the hash centre (swuxyj/DeepHash-pytorch CSQ.py)",
        low=0.0,
    )
    orthohash_scale: float = _f(
        8.0, "reference", "OrthoHash: scale s of the cosine logits (kamwoh/orthohash OrthoHashLoss)", above=0.0
    )
    orthohash_margin: float = _f(
        0.2, "reference", "OrthoHash: additive cosine margin m (kamwoh/orthohash OrthoHashLoss)", low=0.0
    )
    dpn_margin: float = _f(
        1.0, "reference", "DPN: polarization margin m of max(0, m - v * t) (kamwoh/DPN main.py)", low=0.0
    )

    # --- label-free models (itq, lsh; baselines/label_free.py) ---------------------------------
    itq_iterations: int = _f(
        50,
        "reference",
        "ITQ: alternating updates of the codes B and the rotation R (Gong & Lazebnik, CVPR 2011: 50)",
        low=0,
    )
    label_free_max_images: int = _f(
        100_000,
        "ours",
        "itq, lsh: at most this many images are read while fitting, in one streamed pass (the mean and "
        "covariance accumulated; ITQ's rotation learnt on the first 10,000); the rest of a larger data set is "
        "not read",
        low=1,
    )

    # --- optimisation ------------------------------------------------------------------------
    descriptor_learning_rate: float = _f(
        1e-3,
        "ours",
        "Adam LR of the hash network: CoopHash's descriptor, DSH-GAN's shared CNN, every baseline's network (CoopVAEBM: 0.009 on another scale)",
        above=0.0,
    )
    generator_learning_rate: float = _f(
        1e-3, "ours", "Adam LR of the generator (+ CoopHash's inference head) (CoopVAEBM: 2e-4)", above=0.0
    )
    adam_beta_1: float | None = _f(
        None,
        "reference",
        "Adam beta_1; None = the model's own: 0.5 for CoopHash and DSH-GAN (CoopNets, GAN practice), 0.9 for the pointwise baselines (Adam's default, as in their reference code)",
        low=0.0,
        high=0.999,
    )
    lr_decay_rate: float = _f(
        1.0, "ours", "multiply the LRs by this every lr_decay_steps steps (1.0 = constant)", above=0.0, high=1.0
    )
    lr_decay_steps: int = _f(1000, "ours", "steps per lr_decay_rate factor (smooth exponential decay)", low=1)
    divergence_policy: str = _f(
        "stop",
        "ours",
        "a non-finite step is always skipped; then 'stop' ends fit with TrainingDivergedError, 'shrink' halves every learning rate and the Langevin step size and goes on",
        choices=("stop", "shrink"),
    )
    divergence_max_shrinks: int = _f(
        5, "ours", "with divergence_policy 'shrink': halvings allowed in all before training stops", low=1, high=100
    )
    batch_size: int = _f(64, "ours", "global batch size", low=1)
    seed: int = _f(
        1337, "ours", "seed of the initial weights, z, negative labels, Langevin noise and the baselines' codebooks"
    )
    deterministic: bool = _f(
        False,
        "ours",
        "TensorFlow's op determinism (tf.config.experimental.enable_op_determinism) on top of the seeds, so the "
        "same run gives the same codes on one machine; slower on many cores",
    )

    def __post_init__(self):
        if isinstance(self.image_shape, (list, tuple)):
            self.image_shape = tuple(self.image_shape)
        self.validate()

    def validate(self) -> CoopHashConfig:
        problems = [p for f in fields(self) for p in _field_problems(f, getattr(self, f.name))]
        if not problems:
            h, w = self.image_shape[:2]
            if min(h, w) < 4:
                problems.append(f"image_shape: images must be at least 4x4 pixels, got {h}x{w}")
            problems += _backbone_problems(self)
        if problems:
            raise ValueError("Invalid CoopHashConfig: " + "; ".join(problems))
        return self

    # --- serialisation -----------------------------------------------------------------------
    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["image_shape"] = list(self.image_shape)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> CoopHashConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"Unknown CoopHashConfig field(s): {unknown}")
        return cls(**d)

    def replace(self, **changes: Any) -> CoopHashConfig:
        return dataclasses.replace(self, **changes)

    def resolved_served_energy(self) -> str:
        """`served_energy` with 'auto' resolved by the kind of labels: 'min_z' for a multi-label
        model, 'class_free_energy' for one label per image (the best score measured for each,
        docs/OOD.md)."""
        if self.served_energy != "auto":
            return self.served_energy
        return "min_z" if self.multi_label else "class_free_energy"

    def with_ablation(self, name: str) -> CoopHashConfig:
        """This config with one CoopHash component switched off (see ABLATIONS)."""
        if name not in ABLATIONS:
            raise ValueError(f"unknown ablation {name!r}; choose from {sorted(ABLATIONS)}")
        return self.replace(**ABLATIONS[name](self))

    def to_json(self, path: str) -> None:
        from coophash_keras.io import atomic_write_json

        atomic_write_json(path, self.to_dict())

    @classmethod
    def from_json(cls, path: str) -> CoopHashConfig:
        with open(path) as fh:
            return cls.from_dict(json.load(fh))

    @classmethod
    def provenance_table(cls) -> str:
        """Markdown table of every field, its default, provenance and meaning (used in docs)."""
        rows = ["| field | default | valid | provenance | meaning |", "|---|---|---|---|---|"]
        for f in fields(cls):
            valid = _limits_text(f)
            rows.append(
                f"| `{f.name}` | `{f.default!r}` | {valid} | {f.metadata['provenance']} | {f.metadata['doc']} |"
            )
        return "\n".join(rows)


_HINTS = typing.get_type_hints(CoopHashConfig)


def _no_single_class(n):
    if n == 1:
        raise ValueError("one class cannot be hashed by class: 0 (unlabelled data) or at least 2")


def _field_problems(f, value):
    """Type and range problems of one field's value, each naming the field."""
    hint = _HINTS[f.name]
    optional = type(None) in typing.get_args(hint)
    base = next((a for a in typing.get_args(hint) if a is not type(None)), hint)
    if value is None:
        return [] if optional else [f"{f.name} must be set (got None)"]
    if base is tuple:
        if not isinstance(value, tuple) or len(value) != 3 or not all(_is_int(v) and v > 0 for v in value):
            return [f"{f.name} must be (H, W, C) with positive integer sizes, got {value!r}"]
        return []
    if base is bool:
        ok = isinstance(value, bool)
    elif base is int:
        ok = _is_int(value)
    elif base is float:
        ok = _is_int(value) or isinstance(value, float)
    else:
        ok = isinstance(value, base)
    if not ok:
        return [
            f"{f.name} must be {'None or ' if optional else ''}{base.__name__}, got {value!r} ({type(value).__name__})"
        ]
    lim = f.metadata["limits"]
    if lim["choices"] is not None and value not in lim["choices"]:
        return [f"{f.name} must be one of {list(lim['choices'])}, got {value!r}"]
    if lim["multiple_of"] is not None and (value <= 0 or value % lim["multiple_of"]):
        return [f"{f.name} must be a positive multiple of {lim['multiple_of']}, got {value!r}"]
    if lim["check"] is not None:
        try:
            lim["check"](value)
        except ValueError as exc:
            return [f"{f.name}: {exc}"]
    if base is float and value != value:  # NaN
        return [f"{f.name} must be a number, got NaN"]
    if lim["low"] is not None and value < lim["low"]:
        return [f"{f.name} must be >= {lim['low']}, got {value!r}"]
    if lim["above"] is not None and value <= lim["above"]:
        return [f"{f.name} must be > {lim['above']}, got {value!r}"]
    if lim["high"] is not None and value > lim["high"]:
        return [f"{f.name} must be <= {lim['high']}, got {value!r}"]
    return []


def _parse_augmentation(spec):
    from coophash_keras.data.augment import parse_augmentation

    return parse_augmentation(spec)


def _limits_text(f):
    lim = f.metadata["limits"]
    parts = []
    if lim["choices"] is not None:
        parts.append(" / ".join(f"`{c}`" for c in lim["choices"]))
    if lim["low"] is not None:
        parts.append(f">= {lim['low']}")
    if lim["above"] is not None:
        parts.append(f"> {lim['above']}")
    if lim["high"] is not None:
        parts.append(f"<= {lim['high']}")
    if lim["multiple_of"] is not None:
        parts.append(f"positive multiple of {lim['multiple_of']}")
    if lim["check"] is not None:
        parts.append("see meaning")
    if type(None) in typing.get_args(_HINTS[f.name]):
        parts.append("or None")
    return ", ".join(parts)


# keras.applications models a `backbone` may name: each builds at 32x32 without its top and is
# checked to serve through the backbone base (coophash_keras/layers/backbone.py).
KERAS_APPLICATIONS = (
    ("MobileNet", "MobileNetV2", "MobileNetV3Small", "MobileNetV3Large")
    + tuple(f"EfficientNetB{i}" for i in range(8))
    + ("EfficientNetV2B0", "EfficientNetV2B1", "EfficientNetV2B2", "EfficientNetV2B3", "EfficientNetV2S")
    + ("ResNet50", "ResNet101", "ResNet152", "ResNet50V2", "ResNet101V2", "ResNet152V2")
    + ("DenseNet121", "DenseNet169", "DenseNet201", "ConvNeXtTiny", "ConvNeXtSmall", "ConvNeXtBase")
)
MIN_BACKBONE_SIZE = 32  # keras.applications' smallest input without the top


def _backbone_problems(c):
    if c.backbone == "none":
        return []
    problems = []
    if c.backbone.startswith("hub:"):
        if not c.backbone[4:].strip():
            problems.append("backbone: 'hub:' needs a keras-hub preset name or folder, e.g. hub:resnet_18_imagenet")
    elif c.backbone not in KERAS_APPLICATIONS:
        problems.append(
            f"backbone must be 'none', 'hub:PRESET' or one of {list(KERAS_APPLICATIONS)}, got {c.backbone!r}"
        )
    h, w, channels = c.image_shape
    if min(h, w) < MIN_BACKBONE_SIZE:
        problems.append(
            f"image_shape: a backbone needs images of at least {MIN_BACKBONE_SIZE}x{MIN_BACKBONE_SIZE}, got {h}x{w} "
            "(--image-size 96,96 for image files; ImageNet backbones were trained at 96-224)"
        )
    if channels not in (1, 3):
        problems.append(f"image_shape: a backbone takes 1 (grey) or 3 (RGB) channels, got {channels}")
    if not c.backbone_weights.strip():
        problems.append("backbone_weights must be 'imagenet', 'none' or a weights file path, got ''")
    return problems


def _is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)


# CoopHash ablations, each as the config changes that switch one component off:
#   no_generator_pairs: the triplet loss uses hardest real in-batch triplets instead of the
#       generated/revised pair, and the pairs are not classified either (the generator and
#       Langevin still train for the likelihood term);
#   no_energy_head: no maximum-likelihood term, no energy penalty, no Langevin revision (the
#       triplets use the raw generator pairs, and the generator learns only from itself);
#   no_inference_head: the generator learns from the z that made each pair (original
#       cooperative learning) instead of z~ inferred by the inference head;
#   no_classifier_head: no classification loss on real or revised images and no pseudo-labels
#       (they are the classifier's predictions): the codes learn from the triplets alone;
# and the few-labels switches, each turned off in a configuration that has it on:
#   no_synthetic_labels: the revised pairs are not used as labelled augmentation;
#   no_pseudo_labels: no FixMatch term on the unlabelled pool;
#   classifier_beside_codes: the classifier head reads f0's features, not the codes (the paper's form).
ABLATIONS = {
    "no_generator_pairs": lambda c: {
        "triplet_weight": 0.0,
        "real_triplet_weight": c.triplet_weight or 1.0,
        "synthetic_classification_weight": 0.0,
    },
    "no_energy_head": lambda c: {"nll_weight": 0.0, "energy_l2_weight": 0.0, "langevin_steps": 0, "noise_chains": 0},
    "no_inference_head": lambda c: {"generator_latent": "prior"},
    "no_classifier_head": lambda c: {
        "classification_weight": 0.0,
        "synthetic_classification_weight": 0.0,
        "pseudo_label_weight": 0.0,
    },
    "no_synthetic_labels": lambda c: {"synthetic_classification_weight": 0.0},
    "no_pseudo_labels": lambda c: {"pseudo_label_weight": 0.0},
    "classifier_beside_codes": lambda c: {"classifier_input": "features"},
}

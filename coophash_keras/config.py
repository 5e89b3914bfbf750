"""One object holding every CoopHash hyper-parameter, each with its provenance.

Provenance tags (see docs/CONFIG.md):
  paper     -- stated in the CoopHash paper (arXiv 2210.04288, sections 3.1-3.3)
  reference -- taken from the co-author's earlier public code (CoopNets / CoopVAEBM /
               Conditional-CoopNets); not CoopHash's own value, which could not be read
  ours      -- our choice where the paper is silent (tuned on digits, see docs)
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field, fields
from typing import Any


def _f(default, provenance: str, doc: str):
    return field(default=default, metadata={"provenance": provenance, "doc": doc})


@dataclass
class CoopHashConfig:
    # --- data / shapes -----------------------------------------------------------------------
    image_shape: tuple = _f((8, 8, 1), "ours", "input image shape (H, W, C); any size and channel count")
    num_classes: int = _f(10, "ours", "number of classes (length of the label vector c)")
    multi_label: bool = _f(False, "paper", "multi-hot labels (sigmoid classifier) instead of single labels")
    num_bits: int = _f(32, "ours", "K, number of hash bits; a multiple of 8")

    # --- networks ----------------------------------------------------------------------------
    base_filters: int = _f(32, "ours", "channels of the first conv of f0; doubled at each downsampling")
    feature_dim: int = _f(128, "ours", "width of the shared feature vector f0(x)")
    latent_dim: int = _f(32, "ours", "z dimension (reference code: 100/128, scaled down for small images)")
    generator_filters: int = _f(64, "ours", "channels of the generator's first feature map, halved per upsampling")

    # --- Langevin revision (Eq. 6) -----------------------------------------------------------
    langevin_steps: int = _f(10, "ours", "T, Langevin steps per batch (reference code: 15)")
    langevin_step_size: float = _f(
        1.0,
        "ours",
        "delta in Eq. 6, so each step moves delta^2/2 = 0.5 x grad (reference code: 0.002 with a reference Gaussian of sigma 0.016)",
    )
    langevin_noise_scale: float = _f(
        0.007,
        "ours",
        "noise = scale * delta * N(0, I); 1.0 is Eq. 6, 0 turns it off (0.007: pixel noise std 0.007, JEM-like)",
    )
    langevin_ref_sigma: float | None = _f(
        None, "reference", "sigma of the reference Gaussian (CoopNets 0.016); None = off"
    )
    langevin_clip_update: float | None = _f(
        0.1, "ours", "clip each Langevin update to +-value (CoopFlow-style); None = off"
    )
    langevin_clip_images: bool = _f(True, "ours", "keep revised images inside the data range [-1, 1]")

    # --- descriptor losses -------------------------------------------------------------------
    nll_weight: float = _f(1.0, "paper", "weight of the maximum-likelihood term mean f_E(x_rev) - mean f_E(x)")
    classification_weight: float = _f(1.0, "ours", "weight of the classification loss on real images")
    triplet_weight: float = _f(1.0, "ours", "weight of the triplet loss (real anchor, revised x+, revised x-)")
    triplet_margin: float = _f(1.0, "ours", "margin of the relaxed triplet loss on mean squared code distance")
    real_triplet_weight: float = _f(
        0.0, "ours", "extra triplet on hardest real in-batch triplets, per replica batch (0 = paper's synthetic-only)"
    )
    synthetic_classification_weight: float = _f(
        0.0,
        "ours",
        "extension (not in the paper; DSH-GAN/AC-GAN style): classify the revised x~+ as c+ and x~- as c-; 0 = off",
    )
    unlabeled_nll_weight: float = _f(
        0.0,
        "ours",
        "semi-supervised extension (not in the paper): maximum likelihood of the marginal energy logsumexp_c f_E(x, c) on unlabeled images, when batches carry them (data.with_unlabeled); 0 = off",
    )
    quantization_weight: float = _f(0.01, "ours", "weight of mean (|h| - 1)^2, pushes relaxed codes to +-1")
    energy_l2_weight: float = _f(
        0.1, "ours", "penalty on mean f_E^2 of real and revised images (keeps energies bounded)"
    )

    # --- generator / inference-path loss (Eq. 2 + KL) ------------------------------------------
    kl_weight: float = _f(1.0, "reference", "KL(q(z|x_rev) || N(0,I)) weight (CoopVAEBM: 2 with pixel-sum recon)")
    reconstruction_reduction: str = _f("mean", "ours", "'mean' over pixels or 'sum' (CoopVAEBM uses sum)")
    vae_updates_base: bool = _f(False, "ours", "whether the VAE loss also trains the shared base f0")
    generator_latent: str = _f(
        "inferred",
        "paper",
        "z the generator learns from: 'inferred' = z~ ~ q(z|x~) from the inference head (variational MCMC teaching, Eq. 2); 'prior' = the z that made the pair (original cooperative learning; the no-inference-head ablation)",
    )

    # --- DSH-GAN baseline only ---------------------------------------------------------------
    adversarial_weight: float = _f(
        1.0, "ours", "DSH-GAN: weight of the real-vs-synthetic adversarial loss (DSH-GAN's weights could not be read)"
    )

    # --- optimisation ------------------------------------------------------------------------
    descriptor_learning_rate: float = _f(1e-3, "ours", "Adam LR of the descriptor (reference: 0.009 on another scale)")
    generator_learning_rate: float = _f(1e-3, "ours", "Adam LR of generator + inference head (reference: 2e-4)")
    adam_beta_1: float = _f(0.5, "reference", "Adam beta_1 for both optimizers (CoopNets)")
    lr_decay_rate: float = _f(1.0, "ours", "multiply both LRs by this every lr_decay_steps steps (1.0 = constant)")
    lr_decay_steps: int = _f(1000, "ours", "steps per lr_decay_rate factor (smooth exponential decay)")
    batch_size: int = _f(64, "ours", "global batch size")
    seed: int = _f(1337, "ours", "seed of z, negative labels and Langevin noise")

    def __post_init__(self):
        self.image_shape = tuple(int(d) for d in self.image_shape)
        self.validate()

    def validate(self) -> CoopHashConfig:
        problems = []
        if len(self.image_shape) != 3 or min(self.image_shape) < 1:
            problems.append(f"image_shape must be (H, W, C) with positive sizes, got {self.image_shape}")
        elif min(self.image_shape[:2]) < 4:
            problems.append(f"images must be at least 4x4 pixels, got {self.image_shape[:2]}")
        if not isinstance(self.num_bits, int) or self.num_bits <= 0 or self.num_bits % 8:
            problems.append(f"num_bits (K) must be a positive multiple of 8, got {self.num_bits}")
        if self.num_classes < 2:
            problems.append(f"num_classes must be >= 2 (a negative label must exist), got {self.num_classes}")
        if self.langevin_steps < 0:
            problems.append(f"langevin_steps must be >= 0, got {self.langevin_steps}")
        if self.langevin_step_size <= 0:
            problems.append(f"langevin_step_size must be > 0, got {self.langevin_step_size}")
        if self.langevin_noise_scale < 0:
            problems.append(f"langevin_noise_scale must be >= 0, got {self.langevin_noise_scale}")
        if self.reconstruction_reduction not in ("mean", "sum"):
            problems.append(f"reconstruction_reduction must be 'mean' or 'sum', got {self.reconstruction_reduction!r}")
        if self.generator_latent not in ("inferred", "prior"):
            problems.append(f"generator_latent must be 'inferred' or 'prior', got {self.generator_latent!r}")
        if self.batch_size < 1:
            problems.append(f"batch_size must be >= 1, got {self.batch_size}")
        for name in ("base_filters", "feature_dim", "latent_dim", "generator_filters"):
            if getattr(self, name) < 1:
                problems.append(f"{name} must be >= 1, got {getattr(self, name)}")
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
        try:
            return cls(**d)
        except TypeError as exc:  # e.g. a string where a number belongs
            raise ValueError(f"Invalid CoopHashConfig value: {exc}") from None

    def replace(self, **changes: Any) -> CoopHashConfig:
        return dataclasses.replace(self, **changes)

    def with_ablation(self, name: str) -> CoopHashConfig:
        """This config with one CoopHash component switched off (see ABLATIONS)."""
        if name not in ABLATIONS:
            raise ValueError(f"unknown ablation {name!r}; choose from {sorted(ABLATIONS)}")
        return self.replace(**ABLATIONS[name](self))

    def to_json(self, path: str) -> None:
        with open(path, "w") as fh:
            json.dump(self.to_dict(), fh, indent=2)

    @classmethod
    def from_json(cls, path: str) -> CoopHashConfig:
        with open(path) as fh:
            return cls.from_dict(json.load(fh))

    @classmethod
    def provenance_table(cls) -> str:
        """Markdown table of every field, its default, provenance and meaning (used in docs)."""
        rows = ["| field | default | provenance | meaning |", "|---|---|---|---|"]
        for f in fields(cls):
            rows.append(f"| `{f.name}` | `{f.default!r}` | {f.metadata['provenance']} | {f.metadata['doc']} |")
        return "\n".join(rows)


# CoopHash ablations (issue #6), each as the config changes that switch one component off:
#   no_generator_pairs: the triplet loss uses hardest real in-batch triplets instead of the
#       generated/revised pair (the generator and Langevin still train for the likelihood term);
#   no_energy_head: no maximum-likelihood term, no energy penalty, no Langevin revision (the
#       triplets use the raw generator pairs, and the generator learns only from itself);
#   no_inference_head: the generator learns from the z that made each pair (original
#       cooperative learning) instead of z~ inferred by the inference head.
ABLATIONS = {
    "no_generator_pairs": lambda c: {"triplet_weight": 0.0, "real_triplet_weight": c.triplet_weight or 1.0},
    "no_energy_head": lambda c: {"nll_weight": 0.0, "energy_l2_weight": 0.0, "langevin_steps": 0},
    "no_inference_head": lambda c: {"generator_latent": "prior"},
}

"""Named configurations and the method names the benchmarks and the CLI accept.

A method is a registered model name (coophash_keras.registry), optionally with a variant:
`MODEL:NAME` where NAME is a key of VARIANTS[MODEL] (or, for CoopHash, of config.ABLATIONS), or
`coophash:NAME/ABLATION` (that variant with one component switched off). Every variant is a set of
config changes on top of the defaults; docs/RESULTS.md says which one is measured where and why."""

from coophash_keras.config import ABLATIONS
from coophash_keras.registry import MODELS

_CODES = {"classifier_input": "codes"}
_SYNTH = {"synthetic_classification_weight": 1.0}
_FIXMATCH = {"pseudo_label_weight": 1.0}
_JEM = {"unlabeled_nll_weight": 1.0}
_FEWLABELS = {**_CODES, **_SYNTH, **_FIXMATCH, "nll_weight": 0.1, "langevin_steps": 5}

# model -> variant name -> CoopHashConfig changes (all "ours" unless a field's provenance says otherwise)
VARIANTS = {
    "coophash": {
        "paper": {},  # the paper's form as built here: synthetic triplets, classification beside the codes
        # The default with the noise chains of fewlabels+noise_chains (the digits demo's OOD study).
        "noise_chains": {"noise_chains": 100},
        # The same training, serving min_z of the energy head and the free energy (docs/OOD.md).
        "noise_chains+min_z": {"noise_chains": 100, "served_energy": "min_z"},
        "codes": _CODES,  # + classification through the codes
        "codes+synth": {**_CODES, **_SYNTH},  # + the revised pairs as labelled augmentation
        "codes+synth+real": {**_CODES, **_SYNTH, "synthetic_realness_weighting": True},
        "semi": {**_CODES, **_SYNTH, **_FIXMATCH},  # + FixMatch pseudo-labels on the unlabeled pool
        "semi+jem": {**_CODES, **_SYNTH, **_FIXMATCH, **_JEM},  # + the marginal-energy likelihood on it
        "semi+recovery": {**_CODES, **_SYNTH, **_FIXMATCH, "recovery_consistency_weight": 1.0},
        # The candidate for the bar: "semi" with a 10x lighter likelihood term and T=5 Langevin steps.
        # Picked from single-seed 500-step runs (docs/RESULTS.md, "Exploration"): nll_weight=1 let the
        # energy gap grow to ~6 and cost 0.03 mAP; T=5 halves the step time. On the working generator
        # (3 seeds, tag nll1): nll_weight=1 gives better samples (the revision then improves them on
        # every seed), level codes, and 0.015 less OOD mAP; 0.1 stays for the codes.
        "fewlabels": _FEWLABELS,
        # The untried switches, each on top of the candidate (single-seed screen first, docs/RESULTS.md):
        # the marginal-energy likelihood on the pool at the candidate's NLL weight,
        "fewlabels+jem": {**_FEWLABELS, "unlabeled_nll_weight": 0.1},
        # a pool image's code pulled towards its recovery's code,
        "fewlabels+recovery": {**_FEWLABELS, "recovery_consistency_weight": 1.0},
        # Langevin chains that persist across steps (100 slots per class, JEM's 5% restarts).
        "fewlabels+persistent": {**_FEWLABELS, "persistent_chains": 100},
        # Negatives away from the generator's neighbourhood for the likelihood term only: 100 slots
        # per class of chains from U[-1, 1] (JEM's 5% restarts, 20 steps), half the negative energy
        # (issue 39, docs/OOD.md).
        "fewlabels+noise_chains": {**_FEWLABELS, "noise_chains": 100},
        # Classification through the codes by OrthoHash's codebook read-out and margin instead of a
        # Dense layer: the generative part on top of the best pointwise baseline's loss.
        "fewlabels+codebook": {**_FEWLABELS, "classifier_input": "codebook"},
        # On multi-label data c- as a label set of |c+| absent classes instead of one absent class, so
        # the negative image is asked to look like a real multi-label image (no change on single labels).
        "fewlabels+label_sets": {**_FEWLABELS, "negative_labels": "absent_set"},
    },
    # References, not baselines of the bar: what the pseudo-labels alone buy a supervised method
    # (orthohash:fixmatch is the reference for coophash:fewlabels+codebook).
    "code_classifier": {"fixmatch": _FIXMATCH},
    "orthohash": {"fixmatch": _FIXMATCH},
}


def method_names():
    """Every method name the harness accepts without a '/ABLATION' suffix."""
    names = list(MODELS)
    names += [f"{model}:{v}" for model, variants in VARIANTS.items() for v in variants]
    names += [f"coophash:{a}" for a in ABLATIONS]
    return names


def ablation_of(method):
    """The configuration an ablation method switches one part off in, None for a method that is no
    ablation: `coophash:V/ABL` -> `coophash:V`, `coophash:ABL` -> `coophash` (the default), for every
    ABL in config.ABLATIONS. The harness records it in each run's JSON, so the tables need not parse
    method names."""
    model, _, variant = method.partition(":")
    name, _, ablation = variant.partition("/")
    if model != "coophash":
        return None
    if ablation:
        return f"{model}:{name}"
    return model if name in ABLATIONS else None


def switch_of(method):
    """The variant a `+`-composed variant adds one switch to, None for any other method:
    `coophash:fewlabels+jem` -> `coophash:fewlabels` (the longest prefix before a `+` that is a
    variant of the same model). Recorded in each run's JSON beside `ablation_of`."""
    model, _, variant = method.partition(":")
    if "/" in variant:
        return None
    variants = VARIANTS.get(model, {})
    while "+" in variant:
        variant = variant.rsplit("+", 1)[0]
        if variant in variants:
            return f"{model}:{variant}"
    return None


def parse_method(method):
    """(registry model, variant changes, ablation name or None) of a method name; a clear error for
    unknown names. The ablation's changes depend on the config it switches off in, so they are left
    to `config.with_ablation` on the final config (resolve_method, run_spec.build_config)."""
    model, _, variant = method.partition(":")
    if model not in MODELS:
        raise ValueError(f"unknown method {method!r}: the model must be one of {list(MODELS)}")
    if not variant:
        return model, {}, None
    variants = VARIANTS.get(model, {})
    name, _, ablation = variant.partition("/")
    if model == "coophash" and name in ABLATIONS and not ablation:
        name, ablation = None, name
    elif name not in variants:
        known = sorted(variants) + (sorted(ABLATIONS) if model == "coophash" else [])
        raise ValueError(f"unknown method {method!r}: no {model} variant {name!r}; choose from {known}")
    if ablation and model != "coophash":
        raise ValueError(f"unknown method {method!r}: only coophash has ablations")
    if ablation and ablation not in ABLATIONS:
        raise ValueError(f"unknown ablation {ablation!r} in {method!r}; choose from {sorted(ABLATIONS)}")
    return model, dict(variants[name]) if name else {}, ablation or None


def resolve_method(method, config):
    """(registry model name, config changes) of a method name, the changes taken on top of
    `config`; a clear error for unknown names."""
    model, changes, ablation = parse_method(method)
    if ablation:
        changes.update(ABLATIONS[ablation](config.replace(**changes)))
    return model, changes

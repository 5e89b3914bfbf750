"""Named CoopHash configurations and the method names the benchmarks and the CLI accept.

A method is a registered model name (coophash_keras.registry), optionally with a variant:
`coophash:NAME` where NAME is a key of VARIANTS or of config.ABLATIONS, or `coophash:NAME/ABLATION`
(that variant with one component switched off). Every variant is a set of config changes on
top of the defaults; docs/RESULTS.md says which one is measured where and why."""

from coophash_keras.config import ABLATIONS
from coophash_keras.registry import MODELS

# name -> CoopHashConfig changes (all "ours" unless a field's provenance says otherwise)
VARIANTS = {
    "paper": {},  # the paper's form as built here: synthetic triplets, classification beside the codes
}


def method_names():
    """Every method name the harness accepts without a '/ABLATION' suffix."""
    names = list(MODELS)
    names += [f"coophash:{v}" for v in VARIANTS]
    names += [f"coophash:{a}" for a in ABLATIONS]
    return names


def resolve_method(method, config):
    """(registry model name, config changes) of a method name, the changes taken on top of
    `config`; a clear error for unknown names."""
    model, _, variant = method.partition(":")
    if model not in MODELS:
        raise ValueError(f"unknown method {method!r}: the model must be one of {list(MODELS)}")
    if not variant:
        return model, {}
    if model != "coophash":
        raise ValueError(f"unknown method {method!r}: only coophash has variants")
    name, _, ablation = variant.partition("/")
    if name in ABLATIONS and not ablation:
        name, ablation = None, name
    elif name not in VARIANTS:
        raise ValueError(f"unknown CoopHash variant {name!r}; choose from {sorted(VARIANTS) + sorted(ABLATIONS)}")
    changes = dict(VARIANTS[name]) if name else {}
    if ablation:
        changes.update(ABLATIONS[ablation](config.replace(**changes)))
    return model, changes

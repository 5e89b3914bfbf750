"""keras-tuner search over CoopHash hyper-parameters with validation mAP as the objective."""

import keras_tuner as kt

from coophash_keras.config import CoopHashConfig
from coophash_keras.models.coophash import CoopHash

# name -> how keras-tuner samples it (all are CoopHashConfig fields)
SEARCH_SPACE = {
    "langevin_steps": lambda hp: hp.Int("langevin_steps", 2, 16, step=2),
    "langevin_step_size": lambda hp: hp.Float("langevin_step_size", 0.1, 2.0, sampling="log"),
    "langevin_noise_scale": lambda hp: hp.Float("langevin_noise_scale", 0.001, 0.1, sampling="log"),
    "triplet_weight": lambda hp: hp.Float("triplet_weight", 0.25, 4.0, sampling="log"),
    "triplet_margin": lambda hp: hp.Float("triplet_margin", 0.25, 1.5),
    "nll_weight": lambda hp: hp.Float("nll_weight", 0.1, 2.0, sampling="log"),
    "classification_weight": lambda hp: hp.Float("classification_weight", 0.25, 4.0, sampling="log"),
    "kl_weight": lambda hp: hp.Float("kl_weight", 0.1, 4.0, sampling="log"),
    "descriptor_learning_rate": lambda hp: hp.Float("descriptor_learning_rate", 1e-4, 3e-3, sampling="log"),
    "generator_learning_rate": lambda hp: hp.Float("generator_learning_rate", 1e-4, 3e-3, sampling="log"),
    "base_filters": lambda hp: hp.Choice("base_filters", [16, 32, 64]),
    "feature_dim": lambda hp: hp.Choice("feature_dim", [64, 128, 256]),
}


class CoopHashHyperModel(kt.HyperModel):
    """Builds a compiled CoopHash from `base_config` with the `tune` fields sampled by the tuner
    (default: all of SEARCH_SPACE). Use with a RetrievalMetricsCallback and
    objective=kt.Objective("val_map", "max")."""

    def __init__(self, base_config: CoopHashConfig, tune=None, **kwargs):
        super().__init__(**kwargs)
        self.base_config = base_config
        self.tune = list(tune or SEARCH_SPACE)
        unknown = [t for t in self.tune if t not in SEARCH_SPACE]
        if unknown:
            raise ValueError(f"cannot tune {unknown}; tunable fields: {sorted(SEARCH_SPACE)}")

    def config_for(self, hp):
        return self.base_config.replace(**{name: SEARCH_SPACE[name](hp) for name in self.tune})

    def build(self, hp):
        model = CoopHash(self.config_for(hp))
        model.compile()  # the tuner builds under its distribution strategy's scope
        return model

    def fit(self, hp, model, *args, **kwargs):
        return model.fit(*args, **kwargs)


def make_tuner(
    base_config,
    directory,
    project_name="coophash",
    max_trials=10,
    tune=None,
    seed=0,
    distribution_strategy=None,
    overwrite=False,
):
    # No optimizer/loss passed to the tuner: it would re-compile() with the standard signature.
    return kt.RandomSearch(
        CoopHashHyperModel(base_config, tune),
        objective=kt.Objective("val_map", "max"),
        max_trials=max_trials,
        seed=seed,
        directory=directory,
        project_name=project_name,
        distribution_strategy=distribution_strategy,
        overwrite=overwrite,
    )

"""keras-tuner search over a registered model's hyper-parameters, validation mAP as the objective."""

import dataclasses
import os

import keras
import keras_tuner as kt
import numpy as np

from coophash_keras.callbacks import RetrievalMetricsCallback
from coophash_keras.evaluation import validation_sets
from coophash_keras.io import atomic_write_json
from coophash_keras.runs import prepare_run, training_dataset

# field -> how keras-tuner samples it (all are CoopHashConfig fields); each model class lists the
# fields that matter to it in `tunable_fields`.
SEARCH_SPACE = {
    "langevin_steps": lambda hp: hp.Int("langevin_steps", 2, 16, step=2),
    # Up to 8: at the default 1.0 the revision moves a Fashion-MNIST pixel by RMS ~0.025 of its [-1, 1]
    # range (revision_distance in every coophash:fewlabels run); each step moves delta^2/2 x the
    # gradient, so 8 reaches moves that the per-step clip (0.1) bounds.
    "langevin_step_size": lambda hp: hp.Float("langevin_step_size", 0.1, 8.0, sampling="log"),
    "langevin_noise_scale": lambda hp: hp.Float("langevin_noise_scale", 0.001, 0.1, sampling="log"),
    "triplet_weight": lambda hp: hp.Float("triplet_weight", 0.25, 4.0, sampling="log"),
    "triplet_margin": lambda hp: hp.Float("triplet_margin", 0.25, 1.5),
    "nll_weight": lambda hp: hp.Float("nll_weight", 0.1, 2.0, sampling="log"),
    "classification_weight": lambda hp: hp.Float("classification_weight", 0.25, 4.0, sampling="log"),
    "quantization_weight": lambda hp: hp.Float("quantization_weight", 1e-4, 0.1, sampling="log"),
    "kl_weight": lambda hp: hp.Float("kl_weight", 0.1, 4.0, sampling="log"),
    "descriptor_learning_rate": lambda hp: hp.Float("descriptor_learning_rate", 1e-4, 3e-3, sampling="log"),
    "generator_learning_rate": lambda hp: hp.Float("generator_learning_rate", 1e-4, 3e-3, sampling="log"),
    "base_filters": lambda hp: hp.Choice("base_filters", [16, 32, 64]),
    "base_dropout": lambda hp: hp.Float("base_dropout", 0.0, 0.5, step=0.1),
    "orthohash_scale": lambda hp: hp.Float("orthohash_scale", 2.0, 16.0, sampling="log"),
    "orthohash_margin": lambda hp: hp.Float("orthohash_margin", 0.0, 0.5, step=0.05),
    "dpn_margin": lambda hp: hp.Float("dpn_margin", 0.25, 2.0, sampling="log"),
    "feature_dim": lambda hp: hp.Choice("feature_dim", [64, 128, 256]),
}


class HashingHyperModel(kt.HyperModel):
    """Builds a compiled `model_class` from `base_config` with the `tune` fields sampled by the
    tuner (default: the model's `tunable_fields`). Use with a RetrievalMetricsCallback and
    objective=kt.Objective("val_map", "max")."""

    def __init__(self, model_class, base_config, tune=None, **kwargs):
        super().__init__(**kwargs)
        self.model_class = model_class
        self.base_config = base_config
        self.tune = list(tune or model_class.tunable_fields)
        unknown = [t for t in self.tune if t not in SEARCH_SPACE]
        if unknown:
            raise ValueError(f"cannot tune {unknown}; tunable fields: {sorted(SEARCH_SPACE)}")

    def config_for(self, hp):
        return self.base_config.replace(**{name: SEARCH_SPACE[name](hp) for name in self.tune})

    def build(self, hp):
        keras.utils.set_random_seed(self.base_config.seed)  # the same trial starts from the same weights
        model = self.model_class(self.config_for(hp))
        model.compile()  # the tuner builds under its distribution strategy's scope
        return model

    def fit(self, hp, model, *args, **kwargs):
        return model.fit(*args, **kwargs)


class _ReportingRandomSearch(kt.RandomSearch):
    """RandomSearch that reports each finished trial to `on_trial(dict)`."""

    def __init__(self, *args, on_trial=None, **kwargs):
        self._on_trial = on_trial
        super().__init__(*args, **kwargs)

    def on_trial_end(self, trial):
        super().on_trial_end(trial)
        if self._on_trial is not None:
            self._on_trial(trial_summary(trial))


def trial_summary(trial):
    """A trial's id, status, objective and values, and the last epoch's logs (so a search over, e.g.,
    the Langevin step shows what each value did to the revision, not only to the score)."""
    metrics = trial.metrics.metrics
    return {
        "trial_id": trial.trial_id,
        "status": str(trial.status),
        "score": trial.score,
        "hyperparameters": dict(trial.hyperparameters.values),
        "last_logs": {
            name: float(value) for name in sorted(metrics) if (value := trial.metrics.get_last_value(name)) is not None
        },
    }


def make_tuner(
    model_class,
    base_config,
    directory,
    project_name="coophash",
    max_trials=10,
    tune=None,
    seed=0,
    distribution_strategy=None,
    overwrite=False,
    on_trial=None,
):
    # keras-tuner replaces a seed of 0 by a random one (`seed or randint`), so the oracle gets seed + 1.
    # No optimizer/loss passed to the tuner: it would re-compile() with the standard signature.
    return _ReportingRandomSearch(
        HashingHyperModel(model_class, base_config, tune),
        objective=kt.Objective("val_map", "max"),
        max_trials=max_trials,
        seed=int(seed) + 1,
        directory=directory,
        project_name=project_name,
        distribution_strategy=distribution_strategy,
        overwrite=overwrite,
        on_trial=on_trial,
    )


def holdout_split(split, fraction=0.2, seed=0):
    """Tuning never looks at the queries: a `fraction` of the labelled training images becomes the
    validation queries, the rest of the labelled images both the training set and the validation
    database; the unlabeled pool stays the pool."""
    train = np.random.default_rng(seed).permutation(split.train)
    n_val = max(1, int(round(fraction * len(train))))
    val, rest = np.sort(train[:n_val]), np.sort(train[n_val:])
    return dataclasses.replace(split, query=val, train=rest, database=rest)


def tune_run(spec, trials=10, tune=None, overwrite=False, on_trial=None, validation_fraction=0.2):
    """Random search for `spec.model` on the run's data; the objective is mAP on a held-out part
    of the labelled training images (holdout_split), never on the run's queries. Writes
    RUN/tuning.json (every trial) and RUN/best_config.json (`coophash train --config`), which holds
    the spec's whole config (its method's variant included) with the best values."""
    from coophash_keras.registry import model_class
    from coophash_keras.run_spec import RunError

    if not tune and not model_class(spec.model).tunable_fields:
        raise RunError(f"{spec.model} is fitted in closed form and has no tunable fields: nothing to tune")
    run = prepare_run(spec)
    run.split = holdout_split(run.split, validation_fraction, spec.seed)
    tuner = make_tuner(
        run.model_class,
        run.config,
        os.path.join(spec.run_dir, "tuner"),
        max_trials=trials,
        tune=tune,
        seed=spec.seed,
        distribution_strategy=run.strategy,
        overwrite=overwrite,
        on_trial=on_trial,
    )
    names = tuner.hypermodel.tune
    repeat = spec.steps_per_epoch is not None
    train = training_dataset(run.model_class, run.config, run.data, run.split, spec.seed, repeat=repeat, pool=run.pool)
    validation = RetrievalMetricsCallback(*validation_sets(run.data, run.split), every_n_epochs=1)
    tuner.search(
        train, epochs=spec.epochs, steps_per_epoch=spec.steps_per_epoch, verbose=spec.verbose, callbacks=[validation]
    )
    best = tuner.oracle.get_best_trials(1)[0]
    best_values = {k: best.hyperparameters.get(k) for k in names}
    atomic_write_json(os.path.join(spec.run_dir, "best_config.json"), run.config.replace(**best_values).to_dict())
    summary = {
        "model": spec.model,
        "method": spec.method or spec.model,
        "seed": spec.seed,
        "tuned": names,
        "validation": f"{len(run.split.query)} held-out labelled images vs the other {len(run.split.train)}",
        "epochs": spec.epochs,
        "steps_per_epoch": spec.steps_per_epoch,  # None: one pass over the labelled images
        "best_val_map": best.score,
        "best_hyperparameters": best_values,
        "trials": [trial_summary(t) for t in sorted(tuner.oracle.trials.values(), key=lambda t: t.trial_id)],
    }
    atomic_write_json(os.path.join(spec.run_dir, "tuning.json"), summary)
    return summary

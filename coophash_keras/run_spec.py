"""What a training run is: `RunSpec` (everything `coophash train` takes, with its defaults) and the
config it trains (`build_config`). A spec resolves its method name once, when it is made: the
model, the variant's config changes and the ablation, with every check of how they combine."""

from __future__ import annotations

import dataclasses
import json
import os

from coophash_keras.config import CoopHashConfig
from coophash_keras.variants import parse_method

RUN_FILE = "run.json"


class RunError(ValueError):
    """A run cannot start or be read: the message names the problem (the CLI prints it as one line)."""


@dataclasses.dataclass
class RunSpec:
    """Everything a training run needs, with the CLI's defaults."""

    run_dir: str
    dataset: str = "digits"
    data_dir: str | None = None
    image_size: tuple | None = None  # (H, W) for folder:/csv:/images: data (default: the first image's size)
    channels: int | None = None  # 1 or 3 for folder:/csv:/images: data (default: the majority)
    model: str | None = None  # a registry name; None: the method's model, else "coophash"
    ablation: str | None = None
    # A named configuration, `MODEL[:VARIANT[/ABLATION]]` (variants.py). It names the model, and
    # build_config applies its changes after the config file and before `overrides`.
    method: str | None = None
    bits: int = 32
    epochs: int = 20
    steps_per_epoch: int | None = None  # None: one pass over the labelled images per epoch
    batch_size: int = 64
    query_per_class: int = 20
    labels_per_class: int | None = None
    # An unlabelled pool given apart (`--unlabeled`): any data set name, its labels ignored; it
    # replaces the pool `labels_per_class` leaves over (coophash_keras/data/pool.py).
    unlabeled: str | None = None
    seed: int = 0
    deterministic: bool = False  # config.deterministic: op determinism, so one spec gives one model
    overrides: dict = dataclasses.field(default_factory=dict)
    config_file: str | None = None  # a config.json / best_config.json to start from
    val_every: int = 0
    tensorboard: str | None = None
    backup_dir: str | None = None
    mixed_precision: bool = False
    workers: list | None = None  # host:port of every worker (MultiWorkerMirroredStrategy)
    task_index: int | None = None
    mirrored: bool = False
    verbose: int | str = "auto"
    # Resolved from `method` and `ablation` by __post_init__, for build_config.
    variant_changes: dict = dataclasses.field(init=False, repr=False, compare=False, default_factory=dict)
    applied_ablation: str | None = dataclasses.field(init=False, repr=False, compare=False, default=None)

    def __post_init__(self):
        self.applied_ablation = self.ablation
        if self.method:
            try:
                model, self.variant_changes, method_ablation = parse_method(self.method)
            except ValueError as e:
                raise RunError(str(e)) from None
            if self.ablation and method_ablation:
                raise RunError(f"method {self.method!r} names its ablation; drop ablation={self.ablation!r}")
            if self.model not in (None, model):
                raise RunError(f"method {self.method!r} trains {model!r}, not model={self.model!r}")
            self.model = model
            self.applied_ablation = method_ablation  # a method without one trains its variant whole
        elif self.model is None:
            self.model = "coophash"
        if self.applied_ablation and self.model != "coophash":
            raise RunError("--ablation applies to --model coophash only")

    def record(self) -> dict:
        """What run.json keeps to re-load the data and split later."""
        return {
            k: getattr(self, k)
            for k in (
                "dataset",
                "data_dir",
                "model",
                "method",
                "ablation",
                "query_per_class",
                "labels_per_class",
                "unlabeled",
                "seed",
                "epochs",
            )
        }


def build_config(spec: RunSpec, data):
    """The run's CoopHashConfig: data shapes and CLI values, then the config file, then the method's
    variant, then overrides (--set), then the ablation, so each names what it changes last."""
    values = dict(
        image_shape=data.image_shape,
        num_classes=data.num_classes,
        multi_label=data.multi_label,
        num_bits=spec.bits,
        batch_size=spec.batch_size,
        seed=spec.seed,
    )
    if spec.config_file:
        if not os.path.exists(spec.config_file):
            raise RunError(f"missing config file {spec.config_file}")
        with open(spec.config_file) as fh:
            try:
                from_file = json.load(fh)
            except json.JSONDecodeError as exc:
                raise RunError(f"{spec.config_file} is not a JSON config: {exc}") from None
        # The data decides shapes and classes; the file decides everything else it names.
        for key in ("image_shape", "num_classes", "multi_label"):
            from_file.pop(key, None)
        values.update(from_file)
    values.update(spec.variant_changes)
    values.update(spec.overrides)
    if spec.deterministic:
        values["deterministic"] = True
    config = CoopHashConfig.from_dict(values)
    if spec.applied_ablation:
        config = config.with_ablation(spec.applied_ablation)
    return config

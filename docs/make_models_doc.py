"""Regenerate docs/MODELS.md from the model registry: python docs/make_models_doc.py
(tests/test_config.py checks that the committed file is up to date)."""

import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

HEAD = """# The models

Every model below is in `coophash_keras.registry`: it trains with `model.fit` and
`coophash train --model NAME`, and exports, serves, indexes, resumes and tunes the same way
(`tests/test_every_model.py` runs each one through all of it). Every model reads the fields of the
one `CoopHashConfig` that apply to it (docs/CONFIG.md) and shares the base network f0. The
label-free models (`itq`, `lsh`; docs/FEW_LABELS.md) are fitted in closed form by `fit`, in one
pass over the images: a preempted fit is fitted again whole, and they have nothing to tune.

This file is generated from the code (`python docs/make_models_doc.py`); a test keeps it in sync.

"""

TENSORBOARD = """
## TensorBoard (`coophash train --tensorboard DIR`)

- `DIR/train/`: `epoch_<tracker>` for every tracker above (and `epoch_bit_correlation`).
- `DIR/validation/`: `epoch_map` and `epoch_map@100` on the epochs that measure them (`--val-every N`).
- `DIR/coophash/` (coophash_keras.callbacks.HashingTensorBoard): {tags}.
- `DIR/` (the root): the embedding projector (the +-1 codes of 1,000 database images, labels, sprite).
"""


def render():
    from coophash_keras.callbacks import HashingTensorBoard
    from coophash_keras.config import CoopHashConfig
    from coophash_keras.registry import MODELS

    rows = [
        "| `--model` | class | what it learns | optimizers (config learning rate) | uses the unlabeled pool |",
        "|---|---|---|---|---|",
    ]
    trackers = []
    for entry in MODELS.values():
        cls = entry.load()
        groups = ", ".join(f"`{g}` (`{lr}`)" for g, lr in cls.optimizer_groups.items()) or "none: fitted in closed form"
        unlabeled = "always" if cls.uses_unlabeled(CoopHashConfig()) else "with a semi-supervised switch on"
        if entry.name in ("triplet", "csq", "orthohash", "dpn", "code_classifier"):
            unlabeled = "with `pseudo_label_weight` > 0"
        if entry.name == "coophash":
            unlabeled = "with `unlabeled_nll_weight`, `pseudo_label_weight` or `recovery_consistency_weight` > 0"
        rows.append(
            f"| `{entry.name}` | `{entry.module}.{entry.class_name}` | {entry.summary} | {groups} | {unlabeled} |"
        )
        if cls.fitted_in_closed_form:
            logs = ", ".join(f"`{n}`" for n in cls.fit_log_names)
            trackers.append(
                f"- `{entry.name}`: fitted in closed form, one epoch whose logs are {logs}; nothing to tune"
            )
            continue
        model = cls(CoopHashConfig())
        shown = list(model.tracker_names)
        extra = [n for n in getattr(cls, "all_tracker_names", shown) if n not in shown]
        if entry.name != "coophash" and hasattr(cls, "loss_names"):
            extra = ["pseudo_label_loss", "pseudo_label_rate"]
        line = f"- `{entry.name}`: " + ", ".join(f"`{n}`" for n in shown)
        if extra:
            line += "; when switched on: " + ", ".join(f"`{n}`" for n in extra)
        trackers.append(line)
        tunable = ", ".join(f"`{f}`" for f in cls.tunable_fields)
        trackers.append(f"  (keras-tuner samples: {tunable})")
    tags = ", ".join(f"`{t}`" for t in HashingTensorBoard.TAGS)
    return (
        HEAD
        + "\n".join(rows)
        + "\n\n## Metric trackers (what `fit` shows and `history.json` keeps)\n\n"
        + "\n".join(trackers)
        + "\n"
        + TENSORBOARD.format(tags=tags)
    )


if __name__ == "__main__":
    with open(os.path.join(HERE, "MODELS.md"), "w") as fh:
        fh.write(render())

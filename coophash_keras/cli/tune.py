"""`coophash tune`: keras-tuner random search with validation mAP as the objective."""

from coophash_keras.cli.common import (
    add_data_arguments,
    add_method_argument,
    add_strategy_arguments,
    add_unlabeled_argument,
    positive_int,
)


def add_parser(sub):
    tu = sub.add_parser("tune", help="keras-tuner random search, objective: validation mAP")
    add_data_arguments(tu)
    add_unlabeled_argument(tu)
    add_method_argument(tu)
    tu.add_argument("--epochs", type=positive_int, default=5, help="epochs per trial")
    tu.add_argument(
        "--steps-per-epoch",
        type=positive_int,
        default=None,
        help="optimizer steps per epoch, the data repeated (default: one pass over the labelled images)",
    )
    tu.add_argument("--trials", type=positive_int, default=10, help="trial budget")
    tu.add_argument("--tune", default=None, help="comma-separated fields to tune (default: all tunable)")
    tu.add_argument("--run-dir", required=True)
    tu.add_argument("--overwrite", action="store_true", help="start the search over instead of resuming it")
    add_strategy_arguments(tu)
    tu.set_defaults(func=run)


def run(args):
    import os

    from coophash_keras.cli.train import spec_from_args
    from coophash_keras.tuning import tune_run

    args.model, args.ablation, args.val_every = None, None, 1  # --method names the model (default coophash)
    args.tensorboard = args.backup_dir = None
    args.mixed_precision = False
    summary = tune_run(
        spec_from_args(args),
        trials=args.trials,
        tune=args.tune.split(",") if args.tune else None,
        overwrite=args.overwrite,
        on_trial=lambda t: print(
            f"trial {t['trial_id']}: val_map {t['score']:.4f} {t['hyperparameters']}"
            if t["score"] is not None
            else f"trial {t['trial_id']}: no score ({t['status']})",
            flush=True,
        ),
    )
    print(
        f"best val_map {summary['best_val_map']:.4f} after {len(summary['trials'])} trials: "
        f"{summary['best_hyperparameters']}"
    )
    best = os.path.join(args.run_dir, "best_config.json")
    print(f"best config: {best} (train it: coophash train --config {best} ...)")
    return summary

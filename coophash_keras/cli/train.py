"""`coophash train`: one training run (coophash_keras.runs.train_run) from the command line."""

from coophash_keras.cli.common import (
    add_data_arguments,
    add_method_argument,
    add_strategy_arguments,
    add_unlabeled_argument,
    model_and_overrides,
    nonnegative_int,
    positive_int,
    worker_list,
)


def add_parser(sub):
    from coophash_keras.config import ABLATIONS
    from coophash_keras.registry import MODELS

    t = sub.add_parser("train", help="train a hashing model and save a run directory")
    add_data_arguments(t)
    add_unlabeled_argument(t)
    t.add_argument("--epochs", type=positive_int, default=20)
    t.add_argument("--steps-per-epoch", type=positive_int, default=None, help="default: one pass over the labels")
    t.add_argument("--run-dir", required=True)
    t.add_argument(
        "--model",
        choices=list(MODELS),
        default=None,
        help="(default coophash) " + "; ".join(f"{e.name}: {e.summary}" for e in MODELS.values()),
    )
    add_method_argument(t)
    t.add_argument("--ablation", choices=sorted(ABLATIONS), default=None, help="switch one CoopHash component off")
    t.add_argument(
        "--val-every",
        type=nonnegative_int,
        default=0,
        metavar="N",
        help="validation mAP (val_map) every N epochs; keeps RUN/best.keras (best val_map)",
    )
    t.add_argument("--tensorboard", default=None, metavar="DIR", help="write TensorBoard logs to DIR")
    t.add_argument(
        "--backup-dir",
        default=None,
        metavar="DIR",
        help="preemption-safe: back up every epoch and resume from DIR when re-run",
    )
    t.add_argument(
        "--mixed-precision",
        action="store_true",
        help="mixed_float16 (GPUs); Langevin revision, energies and losses stay float32",
    )
    add_strategy_arguments(t)
    t.set_defaults(func=run)


def spec_from_args(args):
    from coophash_keras.run_spec import RunSpec

    model, overrides = model_and_overrides(args)
    return RunSpec(
        run_dir=args.run_dir,
        dataset=args.dataset,
        data_dir=args.data_dir,
        image_size=args.image_size,
        channels=args.channels,
        model=model,
        ablation=args.ablation,
        method=getattr(args, "method", None),
        bits=args.bits,
        epochs=args.epochs,
        steps_per_epoch=args.steps_per_epoch,
        batch_size=args.batch_size,
        query_per_class=args.query_per_class,
        labels_per_class=args.labels_per_class,
        unlabeled=getattr(args, "unlabeled", None),
        seed=args.seed,
        deterministic=args.deterministic,
        overrides=overrides,
        config_file=args.config,
        val_every=args.val_every,
        tensorboard=args.tensorboard,
        backup_dir=args.backup_dir,
        mixed_precision=args.mixed_precision,
        workers=worker_list(args.workers),
        task_index=args.task_index,
        mirrored=args.mirrored,
        verbose=args.keras_verbosity,
    )


def run(args):
    import os

    from coophash_keras.runs import train_run

    result = train_run(spec_from_args(args))
    if not result.is_chief:
        print(f"worker done in {result.train_seconds:.1f}s (the chief saves the model)")
        return result
    line = f"trained in {result.train_seconds:.1f}s; model: {os.path.join(result.run_dir, 'model.keras')}"
    if result.history.get("val_map"):
        line += f"; val_map {result.history['val_map'][-1]:.4f}"
    print(line)
    return result

"""`coophash evaluate`: retrieval metrics of a run on its own query/database split."""

from coophash_keras.cli.common import positive_int


def add_parser(sub):
    e = sub.add_parser("evaluate", help="retrieval metrics of a run on its query/database split")
    e.add_argument("--run-dir", required=True)
    e.add_argument("--topk", type=positive_int, nargs="*", default=[100, 1000])
    e.add_argument("--output", default=None, help="metrics JSON path (default RUN/metrics.json)")
    e.set_defaults(func=run)


def run(args):
    import os

    from coophash_keras.evaluation import evaluate_run, load_run

    metrics = evaluate_run(args.run_dir, topk=args.topk, output=args.output, verbose=args.keras_verbosity)
    summary = {k: round(v, 4) for k, v in metrics.items() if k.startswith(("mAP", "P@")) and "exclude" not in k}
    print(
        f"{load_run(args.run_dir)['dataset']}: {metrics['num_query']} queries vs {metrics['num_database']} "
        f"database images: {summary}"
    )
    print(f"metrics: {args.output or os.path.join(args.run_dir, 'metrics.json')}")
    return metrics

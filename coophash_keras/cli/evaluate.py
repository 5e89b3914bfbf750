"""`coophash evaluate`: retrieval metrics of a run on its own query/database split."""

from coophash_keras.cli.common import positive_int


def add_parser(sub):
    e = sub.add_parser("evaluate", help="retrieval metrics of a run on its query/database split")
    e.add_argument("--run-dir", required=True)
    e.add_argument("--topk", type=positive_int, nargs="*", default=[100, 1000])
    e.add_argument("--output", default=None, help="metrics JSON path (default RUN/metrics.json)")
    e.add_argument(
        "--queries",
        default=None,
        metavar="DATASET",
        help="take the queries from this labelled data set instead of the run's split (a label-free run fitted on "
        "images:PATH needs it)",
    )
    e.add_argument(
        "--query-per-class",
        type=positive_int,
        default=None,
        metavar="N",
        help="with --queries: N queries per class (seeded by the run's seed); the rest of --queries joins the database",
    )
    e.add_argument(
        "--database",
        action="append",
        default=[],
        metavar="DATASET",
        help="add this data set's images to the database (repeatable); images without labels (images:PATH, e.g. "
        "the --unlabeled pool) are never relevant",
    )
    e.add_argument("--data-dir", default=None, help="directory of the dataset files (fashion_mnist, tfds)")
    e.set_defaults(func=run)


def run(args):
    import os

    from coophash_keras.cli.common import CLIError
    from coophash_keras.evaluation import evaluate_run, load_run

    if args.query_per_class and not args.queries:
        raise CLIError("--query-per-class applies to --queries DATASET")
    load_run(args.run_dir)  # a clear error before anything is loaded
    metrics = evaluate_run(
        args.run_dir,
        topk=args.topk,
        output=args.output,
        verbose=args.keras_verbosity,
        queries=args.queries,
        query_per_class=args.query_per_class,
        database=args.database,
        data_dir=args.data_dir,
    )
    summary = {k: round(v, 4) for k, v in metrics.items() if k.startswith(("mAP", "P@")) and "exclude" not in k}
    unlabelled = f" ({metrics['num_database_unlabelled']} unlabelled)" if metrics["num_database_unlabelled"] else ""
    print(
        f"{' + '.join(metrics['data_sets'])}: {metrics['num_query']} queries vs {metrics['num_database']} "
        f"database images{unlabelled}: {summary}"
    )
    print(f"metrics: {args.output or os.path.join(args.run_dir, 'metrics.json')}")
    return metrics

"""`coophash beam-encode`: codes of every file matching patterns, on Apache Beam (coophash_keras.beam).

Flags this parser does not know are Beam's pipeline options (--runner, --direct_num_workers,
--project, --flink_master, ...) and go to the pipeline unchanged."""

from coophash_keras.cli.common import CLIError, positive_int


def add_parser(sub):
    b = sub.add_parser(
        "beam-encode",
        help="codes of image files on Apache Beam: Parquet shards of (path, packed code) (needs coophash-keras[beam])",
        epilog="Any other --flag is a Beam pipeline option, e.g. --runner=DataflowRunner --project=P "
        "--region=R --temp_location=gs://B/tmp, or --direct_running_mode=multi_processing --direct_num_workers=2 "
        "(docs/BEAM.md).",
    )
    b.add_argument(
        "--input",
        action="append",
        required=True,
        metavar="PATTERN",
        help="files on any Beam file system (local, gs://, s3://, hdfs://): * within a folder, ** across; repeatable",
    )
    b.add_argument("--model", required=True, help="an export version directory (coophash export), e.g. models/m/1")
    b.add_argument(
        "--output", required=True, metavar="PREFIX", help="shards PREFIX-SSSSS-of-NNNNN.parquet (any Beam file system)"
    )
    b.add_argument("--batch-size", type=positive_int, default=256, help="images per model call (default 256)")
    b.set_defaults(func=run, accepts_extra_args=True)


def run(args):
    try:
        from coophash_keras.beam import encode_files
    except ImportError as exc:
        if "apache_beam" not in str(exc):
            raise
        raise CLIError("apache-beam is not installed: pip install 'coophash-keras[beam]'") from None
    summary = encode_files(args.input, args.model, args.output, args.extra_args, args.batch_size)
    print(
        f"encoded {summary['encoded']} files, skipped {summary['skipped']} "
        f"({summary['num_bits']} bits, model {summary['model_version']}) -> {args.output}-*.parquet"
    )
    return summary

"""`coophash` command line. One small module per command; each adds its subparser and runs it
through the library (coophash_keras.runs, export, serving, index)."""

import argparse
import os
import sys

# Module names under coophash_keras/cli/ (beam_encode adds the command `beam-encode`).
COMMANDS = (
    "train",
    "tune",
    "evaluate",
    "diagnose",
    "encode",
    "index",
    "search",
    "export",
    "serve",
    "query",
    "demo",
    "beam_encode",
)


def _quiet(verbose):
    """Keras progress and our own lines only, unless --verbose: TensorFlow's C++ log lines
    (cuInit, remapper, ...) and Python warnings are hidden. Runs before TensorFlow is imported."""
    if verbose:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "0")
        return
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    import warnings

    warnings.filterwarnings("ignore")
    import tensorflow  # already imported quietly by coophash_keras/__init__.py

    tensorflow.get_logger().setLevel("ERROR")


def _keras_verbosity(progress):
    if progress == "auto":  # a progress bar on a terminal, one line per epoch in a log file
        return 1 if sys.stdout.isatty() else 2
    return {"bar": 1, "epoch": 2, "none": 0}[progress]


def build_parser():
    import importlib

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--verbose", action="store_true", help="also show TensorFlow's logs and warnings")
    common.add_argument(
        "--progress",
        choices=["auto", "bar", "epoch", "none"],
        default="auto",
        help="Keras progress: a bar, a line per epoch, or nothing (auto: bar on a terminal, else epoch)",
    )
    p = argparse.ArgumentParser(prog="coophash", description="CoopHash deep image hashing (Keras 3)")
    sub = p.add_subparsers(dest="command", required=True)
    original = sub.add_parser
    sub.add_parser = lambda *a, **k: original(*a, parents=[common], **k)  # every command gets the common flags
    for name in COMMANDS:
        importlib.import_module(f"coophash_keras.cli.{name}").add_parser(sub)
    return p


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    _quiet("--verbose" in argv or bool(os.environ.get("COOPHASH_DEBUG")))
    parser = build_parser()
    # Commands that pass unknown flags on (beam-encode: Beam's pipeline options) say so; for the
    # others an unknown flag is argparse's usual error.
    args, extra = parser.parse_known_args(argv)
    if extra and not getattr(args, "accepts_extra_args", False):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    args.extra_args = extra
    args.keras_verbosity = _keras_verbosity(args.progress)
    if os.environ.get("COOPHASH_DEBUG"):
        import keras

        keras.config.disable_traceback_filtering()
    from coophash_keras.cli.common import CLIError
    from coophash_keras.models.divergence import TrainingDivergedError

    try:
        args.func(args)
    except (CLIError, ValueError, FileNotFoundError, KeyError, TrainingDivergedError) as exc:
        if os.environ.get("COOPHASH_DEBUG"):
            raise
        print(f"coophash {args.command}: error: {exc}", file=sys.stderr)
        return 2
    return 0

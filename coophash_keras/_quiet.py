"""Quiet start-up for the `coophash` command: XLA's absl logging prints a few lines to fd 2 while
TensorFlow loads (cudart_stub, cpu_feature_guard), before TF_CPP_MIN_LOG_LEVEL is read, so no
setting hides them. The command line imports TensorFlow with fd 2 pointed at /dev/null unless
--verbose (or COOPHASH_DEBUG) is given; a library user's process is left alone."""

import contextlib
import os
import sys


def is_quiet_cli():
    argv = sys.argv or [""]
    is_cli = os.path.basename(argv[0]) == "coophash" or argv[0] == "-m"  # `python -m coophash_keras.cli`
    return is_cli and "--verbose" not in argv and not os.environ.get("COOPHASH_DEBUG")


@contextlib.contextmanager
def quiet_stderr(enabled=True):
    if not enabled:
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)

"""A debug hook for fault-injection tests (benchmarks/fault_injection.py, tests/test_crash_safety.py):
hold a process inside a save so that a test can SIGKILL it exactly there.

Every crash-safe save calls `pause_point(name, point)` at the moments that matter:
  begin   its temporary file or directory exists, nothing of the new version is complete;
  commit  the temporary is complete, the rename over the old version has not happened;
  remove  a finished run's backup was renamed away and is about to be deleted.
With COOPHASH_DEBUG_PAUSE_IN_SAVE set to an fnmatch pattern of "name:point" (e.g.
"model.keras:commit", "epoch-*:begin", "*"), the first matching point of the process prints
`coophash-debug: paused in <name>:<point>` to stderr and sleeps COOPHASH_DEBUG_PAUSE_SECONDS
(default 60) before going on. Unset, as in normal use, it does nothing."""

import fnmatch
import os
import sys
import time

PAUSE_ENV = "COOPHASH_DEBUG_PAUSE_IN_SAVE"
SECONDS_ENV = "COOPHASH_DEBUG_PAUSE_SECONDS"
MARKER = "coophash-debug: paused in"

_paused = False


def pause_point(name, point):
    global _paused
    pattern = os.environ.get(PAUSE_ENV)
    if not pattern or _paused or not fnmatch.fnmatchcase(f"{name}:{point}", pattern):
        return
    _paused = True  # once per process: a pause that nobody acts on costs its seconds only once
    print(f"{MARKER} {name}:{point}", file=sys.stderr, flush=True)
    time.sleep(float(os.environ.get(SECONDS_ENV, "60")))

"""Did a timed run have the machine to itself? The CPU time every *other* process used while it ran.

The load average cannot tell: a run that keeps both cores busy raises it to ~2 by itself, and it
lags a minute behind. Instead, /proc/<pid>/stat gives each process's CPU time (user + system);
the difference between two snapshots, without this process, is what others took. A run counts as
alone when the others took less than `MAX_OTHER_CORES` of a core on average (shells, the kernel's
housekeeping and this script's own parent stay far below it; a test suite or a second benchmark
takes one to two cores).

    probe = AloneProbe()
    ... timed work ...
    record = probe.result()   # {"alone": bool, "other_cores": float, "load_average": [before, after]}
"""

import os
import platform
import time

MAX_OTHER_CORES = 0.15
_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _cpu_seconds_by_pid():
    """{pid: CPU seconds so far} of every process but this one (those readable in /proc)."""
    out, me = {}, os.getpid()
    try:
        pids = [int(p) for p in os.listdir("/proc") if p.isdigit()]
    except OSError:  # no /proc (not Linux): the probe cannot say, and says so
        return None
    for pid in pids:
        if pid == me:
            continue
        try:
            with open(f"/proc/{pid}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # ended between listdir and open
        out[pid] = (int(fields[11]) + int(fields[12])) / _TICK  # utime + stime (fields 14, 15)
    return out


class AloneProbe:
    """Snapshot at construction; `result()` compares with a second snapshot."""

    def __init__(self):
        self.start = time.monotonic()
        self.before = _cpu_seconds_by_pid()
        self.load_before = os.getloadavg()[0]

    def result(self):
        wall = max(time.monotonic() - self.start, 1e-9)
        after = _cpu_seconds_by_pid()
        load = [self.load_before, os.getloadavg()[0]]
        if self.before is None or after is None:
            return {"alone": False, "other_cores": None, "load_average": load}
        # processes that started during the run count from 0; those that ended are not seen (rare)
        other = sum(max(0.0, t - self.before.get(pid, 0.0)) for pid, t in after.items())
        cores = other / wall
        return {"alone": bool(cores < MAX_OTHER_CORES), "other_cores": round(cores, 3), "load_average": load}


def cpu_name():
    """The CPU's model name (/proc/cpuinfo), else what `platform` knows. Timings compare only
    between runs on one CPU: the same step took ~1,000 ms on one 2-core machine here and ~400 ms
    on another."""
    try:
        with open("/proc/cpuinfo") as fh:
            return next(line.split(":", 1)[1].strip() for line in fh if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()

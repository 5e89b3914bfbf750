"""Did a timed run have the machine to itself? The CPU time every *other* process used while it ran.

The load average cannot tell: a run that keeps both cores busy raises it to ~2 by itself, and it
lags a minute behind. Instead: the machine's busy CPU time (/proc/stat) between two snapshots,
less this process's own and that of the children it waited for, is what others took. (Summing
/proc/<pid>/stat over the processes alive at the end, as this did before 2026-12-06, missed every
process that ended during the run: a 2-hour training that shared the cores with a whole test
suite was reported alone.) A run counts as
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


def _busy_seconds():
    """CPU seconds the whole machine has spent busy (every core; idle and iowait excluded, and
    steal: time the hypervisor gave to other machines), or None without /proc/stat."""
    try:
        with open("/proc/stat") as fh:
            fields = [int(v) for v in fh.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    user, nice, system, _idle, _iowait, irq, softirq = fields[:7]
    return (user + nice + system + irq + softirq) / _TICK


def _own_seconds():
    """CPU seconds of this process (every thread) and of the children it has waited for."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


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
        self.busy_before, self.own_before = _busy_seconds(), _own_seconds()
        self.load_before = os.getloadavg()[0]

    def result(self):
        wall = max(time.monotonic() - self.start, 1e-9)
        after = _cpu_seconds_by_pid()
        load = [self.load_before, os.getloadavg()[0]]
        if self.before is None or after is None:
            return {"alone": False, "other_cores": None, "load_average": load}
        # processes that started during the run count from 0; those that ended are not seen (rare)
        # the per-process sum sees only processes alive now; the machine's busy time also sees
        # those that ended (it includes the children this process waited for: taken out)
        other = sum(max(0.0, t - self.before.get(pid, 0.0)) for pid, t in after.items())
        busy = _busy_seconds()
        if busy is not None and self.busy_before is not None:
            machine = (busy - self.busy_before) - (_own_seconds() - self.own_before)
            other = max(other, machine)
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

"""Fault injection: SIGKILL `coophash train --backup-dir B --run-dir R` at random moments and inside
every save, re-run the same command each time, and check that the run always completes, loses at
most one epoch per kill, and never leaves a file that cannot be read.

    python benchmarks/fault_injection.py --kills 30 [--seed 0] [--json out.json]

Each trial trains a tiny digits model (3 epochs of 6 steps, validation every epoch) in fresh
directories. It is killed up to --kills-per-trial times: every 4th kill after a random delay
(import, data loading, training, saving: wherever it lands), the others at the "begin" or
"commit" point of a save (the per-epoch backup, progress.jsonl, best.keras, the backup's config,
model.keras, config.json, split.npz, history.json, run.json) or in the deletion of the finished
run's backup, taken in a shuffled cycle so that every one is hit; the COOPHASH_DEBUG_PAUSE_IN_SAVE
hook (coophash_keras/faults.py) holds the process there until it is killed. Then it is re-run
without a kill to the end.

After every kill every file in R and B must be readable (model.keras and best.keras load, the
JSON files parse, split.npz loads, every progress line parses, every complete checkpoint in B has
a readable state and weights file), and the epochs lost are the epochs finished before the kill
(progress.jsonl) minus the epoch the backup resumes from (a run killed after it was complete
loses none). A re-run that reports resuming must resume where predicted, and must have cleared
the temporaries the kill left. At the end of a trial: history.json and progress.jsonl hold each
epoch exactly once, the optimizers' iteration counts continued across every restart, and no
temporary or backup is left.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from coophash_keras.faults import MARKER, PAUSE_ENV  # noqa: E402

SMALL = ["base_filters=8", "feature_dim=32", "latent_dim=8", "generator_filters=16", "langevin_steps=2"]
RUN_FILES = ("model.keras", "config.json", "split.npz", "history.json", "run.json")
RESUMED = re.compile(r"resuming from .* after epoch (\d+)")


class Harness:
    """One trial: a run dir and a backup dir, and the same `coophash train` command run again and
    again, killed or not."""

    def __init__(self, root, epochs=3, steps=6, timeout=600):
        self.run_dir = os.path.join(root, "run")
        self.backup_dir = os.path.join(root, "backup")
        self.epochs, self.steps, self.timeout = epochs, steps, timeout
        self.records = []
        self._pending = None  # (predicted resume epoch, leftovers) of the last kill, checked by the next run

    def command(self):
        sets = [a for kv in SMALL for a in ("--set", kv)]
        return [
            sys.executable,
            "-m",
            "coophash_keras.cli",
            "train",
            "--dataset",
            "digits",
            "--bits",
            "16",
            "--epochs",
            str(self.epochs),
            "--steps-per-epoch",
            str(self.steps),
            "--batch-size",
            "32",
            "--query-per-class",
            "5",
            "--labels-per-class",
            "20",
            "--val-every",
            "1",
            "--run-dir",
            self.run_dir,
            "--backup-dir",
            self.backup_dir,
            "--progress",
            "none",
            *sets,
        ]

    # ------------------------------------------------------------------ one run
    def run(self, target=None, delay=None):
        """Run the command once; SIGKILL it when it pauses at `target` ("name:point", fnmatch) or
        after `delay` seconds, whichever is given. Returns this run's record (also kept in
        self.records)."""
        env = {k: v for k, v in os.environ.items() if k != PAUSE_ENV}
        env.update(TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=REPO)
        if target:
            env[PAUSE_ENV] = target
        start = time.time()
        proc = subprocess.Popen(
            self.command(), cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        out, err, paused = [], [], threading.Event()

        def read(stream, lines, watch):
            for line in stream:
                lines.append(line)
                if watch and line.startswith(MARKER):
                    paused.set()

        threads = [
            threading.Thread(target=read, args=(proc.stdout, out, False), daemon=True),
            threading.Thread(target=read, args=(proc.stderr, err, True), daemon=True),
        ]
        for t in threads:
            t.start()
        limit = delay if delay is not None else self.timeout
        while proc.poll() is None and not paused.is_set() and time.time() - start < limit:
            time.sleep(0.02)
        killed = proc.poll() is None
        if killed:
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        for t in threads:
            t.join(timeout=10)
        stdout, stderr = "".join(out), "".join(err)
        hung = killed and not paused.is_set() and delay is None
        resumed = RESUMED.search(stdout)
        record = {
            "target": target or ("random" if delay is not None else None),
            "delay": delay,
            "paused_at": next((ln.split(MARKER, 1)[1].strip() for ln in err if ln.startswith(MARKER)), None),
            "killed": killed,
            "hung": hung,
            "returncode": proc.returncode,
            "seconds": round(time.time() - start, 2),
            "resumed_from": int(resumed.group(1)) if resumed else None,
            # got past the start-up (and its clean-up): training, or finding the run already finished
            "started_training": "training " in stdout or "already finished" in stdout,
            "stderr_tail": stderr[-2000:] if (proc.returncode not in (0, -signal.SIGKILL)) else "",
        }
        self._check_previous_kill(record)
        if killed:
            self._after_kill(record)
        else:
            record["problems"] = self.unreadable() + (self.final_problems() if proc.returncode == 0 else [])
        self.records.append(record)
        return record

    def _check_previous_kill(self, record):
        """The run after a kill resumes where the backup said, and cleared the kill's temporaries."""
        if self._pending is None:
            return
        predicted, leftovers = self._pending
        self._pending = None
        if not record["started_training"]:  # killed again before it got that far: the next one checks
            self._pending = (predicted, [p for p in leftovers if os.path.lexists(p)])
            return
        record["resume_expected"] = predicted
        bad = []
        if (record["resumed_from"] or 0) != predicted:
            bad.append(f"resumed from epoch {record['resumed_from'] or 0}, expected {predicted}")
        bad += [f"temporary {p} of the previous kill still there" for p in leftovers if os.path.lexists(p)]
        record["resume_problems"] = bad

    def _after_kill(self, record):
        done = self.epochs_done()
        complete = self.complete()
        resume = 0 if complete else self.newest_checkpoint()
        record.update(
            epochs_done=done,
            complete_at_kill=complete,
            resume_epoch=resume,
            epochs_lost=0 if complete else done - resume,
            problems=self.unreadable(),
            leftovers=[os.path.basename(p) for p in self.leftovers()],
        )
        self._pending = (resume, self.leftovers())

    # ------------------------------------------------------------------ state and checks
    def progress(self):
        from coophash_keras.callbacks import read_progress

        return read_progress(os.path.join(self.run_dir, "progress.jsonl"))

    def epochs_done(self):
        """Epochs finished before now (progress.jsonl is written before the epoch's backup)."""
        try:
            return max((e["epoch"] + 1 for e in self.progress()), default=0)
        except ValueError:
            return 0  # unreadable: reported by unreadable()

    def complete(self):
        return os.path.exists(os.path.join(self.run_dir, "run.json")) and not os.path.exists(self.backup_dir)

    def newest_checkpoint(self):
        from coophash_keras.backup import checkpoints, read_state

        found = checkpoints(self.backup_dir)
        return int(read_state(found[0])["epoch"]) if found else 0

    def leftovers(self):
        """Temporaries of killed saves: hidden `.tmp-` files in the run dir, hidden entries of the
        backup dir, and a backup renamed away for deletion."""
        out = []
        if os.path.isdir(self.run_dir):
            out += [os.path.join(self.run_dir, n) for n in os.listdir(self.run_dir) if n.startswith(".")]
        if os.path.isdir(self.backup_dir):
            out += [os.path.join(self.backup_dir, n) for n in os.listdir(self.backup_dir) if n.startswith(".")]
        removing = os.path.join(os.path.dirname(self.backup_dir), f".{os.path.basename(self.backup_dir)}.removing")
        return out + ([removing] if os.path.exists(removing) else [])

    def unreadable(self):
        """Every file of the run and backup dirs that should be readable and is not."""
        import h5py

        from coophash_keras.backup import STATE, WEIGHTS, checkpoints
        from coophash_keras.data import RetrievalSplit
        from coophash_keras.io import load_model

        problems = []

        def check(path, read):
            if os.path.exists(path):
                try:
                    read(path)
                except Exception as exc:  # noqa: BLE001 - any failure to read is the finding
                    problems.append(f"{os.path.relpath(path, os.path.dirname(self.run_dir))}: {exc!r:.200}")

        def read_json(path):
            with open(path) as fh:
                json.load(fh)

        def read_h5(path):
            with h5py.File(path, "r") as h5:
                h5.visit(lambda _: None)

        for name in ("model.keras", "best.keras"):
            check(os.path.join(self.run_dir, name), load_model)
        for name in ("config.json", "history.json", "run.json"):
            check(os.path.join(self.run_dir, name), read_json)
        check(os.path.join(self.run_dir, "split.npz"), RetrievalSplit.load)
        check(os.path.join(self.run_dir, "progress.jsonl"), lambda _: self.progress())
        check(os.path.join(self.backup_dir, "coophash_config.json"), read_json)
        for checkpoint in checkpoints(self.backup_dir):
            check(os.path.join(checkpoint, STATE), read_json)
            check(os.path.join(checkpoint, WEIGHTS), read_h5)
        return problems

    def final_problems(self):
        """A finished run: every file there, each epoch once in history.json and progress.jsonl,
        the optimizers' iterations continued across restarts, no temporary and no backup left."""
        problems = [f"missing {n}" for n in RUN_FILES if not os.path.exists(os.path.join(self.run_dir, n))]
        if problems:
            return problems
        with open(os.path.join(self.run_dir, "history.json")) as fh:
            history = json.load(fh)
        if "val_map" not in history:
            problems.append("history.json has no val_map")
        problems += [f"history.json {k}: {len(v)} epochs" for k, v in history.items() if len(v) != self.epochs]
        progress = self.progress()
        if [e["epoch"] for e in progress] != list(range(self.epochs)):
            problems.append(f"progress.jsonl epochs {[e['epoch'] for e in progress]}")
        elif progress[-1]["descriptor_iterations"] != self.epochs * self.steps:
            problems.append(f"descriptor iterations {progress[-1]['descriptor_iterations']} at the end")
        problems += [f"left behind: {p}" for p in self.leftovers()]
        if os.path.exists(self.backup_dir):
            problems.append("the backup dir is still there")
        return problems


# ---------------------------------------------------------------------- the benchmark
SAVES = [
    f"{name}:{point}"
    for name in (
        "epoch-*",  # the per-epoch backup (an epoch still ahead is picked when it is drawn)
        "progress.jsonl",
        "best.keras",
        "coophash_config.json",
        "model.keras",
        "config.json",
        "split.npz",
        "history.json",
        "run.json",
    )
    for point in ("begin", "commit")
] + ["*:remove"]  # the finished run's backup being deleted


def reachable(h, target):
    """Whether a re-run of this trial still passes through `target` (a save of SAVES)."""
    name = target.split(":")[0]
    start = 0 if h.complete() else h.newest_checkpoint()
    if name in ("epoch-*", "progress.jsonl", "best.keras"):
        return start < h.epochs
    if name == "coophash_config.json":
        return not os.path.exists(os.path.join(h.backup_dir, name))
    return True


class KillPlan:
    """Every `random_every`-th kill after a random delay; the others go through every save target
    in a shuffled cycle, each time the first one the trial can still reach."""

    def __init__(self, rng, random_every=4):
        self.rng, self.random_every, self.count, self.queue = rng, random_every, 0, []

    def next(self, h):
        self.count += 1
        if self.count % self.random_every == 0:
            return "random"
        if not self.queue:
            self.queue = self.rng.sample(SAVES, len(SAVES))
        for target in self.queue:
            if reachable(h, target):
                self.queue.remove(target)
                if target.startswith("epoch-*"):
                    start = 0 if h.complete() else h.newest_checkpoint()
                    target = target.replace("*", f"{self.rng.randint(start + 1, h.epochs):06d}")
                return target
        return "random"


def calibrate(root):
    """Seconds one run takes from start to end, without a kill (random delays are drawn in it)."""
    rec = Harness(os.path.join(root, "calibration")).run()
    if rec["returncode"] != 0 or rec["problems"]:
        raise SystemExit(f"the calibration run failed: {rec}")
    return rec["seconds"]


def benchmark(kills, kills_per_trial, seed, root):
    rng = random.Random(seed)
    total = calibrate(root)
    print(f"calibration: one uninterrupted run takes {total:.1f}s", flush=True)
    plan = KillPlan(rng)
    trials, done_kills = [], 0
    while done_kills < kills:
        h = Harness(os.path.join(root, f"trial{len(trials):03d}"))
        trial_kills = 0
        while True:
            if trial_kills < kills_per_trial and done_kills < kills:
                target = plan.next(h)
                rec = h.run(delay=rng.uniform(0.2 * total, total)) if target == "random" else h.run(target=target)
            else:
                rec = h.run()
            trial_kills += rec["killed"]
            done_kills += rec["killed"]
            print(
                f"trial {len(trials)}: {rec['target'] or 'to the end'} -> "
                + (
                    f"killed{' at ' + rec['paused_at'] if rec['paused_at'] else ''} "
                    f"({rec['epochs_done']} epochs done, resumes at {rec['resume_epoch']}, lost {rec['epochs_lost']})"
                    if rec["killed"]
                    else f"exit {rec['returncode']}"
                )
                + (f" PROBLEMS {rec['problems']}" if rec["problems"] else "")
                + (f" RESUME {rec['resume_problems']}" if rec.get("resume_problems") else ""),
                flush=True,
            )
            if not rec["killed"] or rec["hung"]:
                break
        trials.append(h.records)
    return trials


def summarize(trials):
    runs = [r for t in trials for r in t]
    kills = [r for r in runs if r["killed"] and not r["hung"]]
    finals = [t[-1] for t in trials]
    lost = [r["epochs_lost"] for r in kills]
    by_target = {}
    for r in kills:
        key = "random" if r["target"] == "random" else r["paused_at"] or r["target"]
        key = re.sub(r"epoch-\d+", "epoch-N", key)
        by_target[key] = by_target.get(key, 0) + 1
    return {
        "trials": len(trials),
        "kills": len(kills),
        "kills_after_completion": sum(r["complete_at_kill"] for r in kills),
        "completions": sum(r["returncode"] == 0 and not r["problems"] for r in finals),
        "hangs": sum(r["hung"] for r in runs),
        "epochs_lost_total": sum(lost),
        "epochs_lost_max": max(lost, default=0),
        "epochs_lost_histogram": {str(k): lost.count(k) for k in sorted(set(lost))},
        "unreadable_files": sum(len(r["problems"]) for r in kills),
        "final_problems": [p for r in finals for p in r["problems"]],
        "resume_problems": [p for r in runs for p in r.get("resume_problems", [])],
        "kills_by_target": dict(sorted(by_target.items())),
    }


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--kills", type=int, default=30)
    p.add_argument("--kills-per-trial", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default=None, help="write every run's record and the summary here")
    p.add_argument("--keep", action="store_true", help="keep the trial directories (printed)")
    args = p.parse_args()
    root = tempfile.mkdtemp(prefix="coophash-faults-")
    try:
        trials = benchmark(args.kills, args.kills_per_trial, args.seed, root)
    finally:
        if args.keep:
            print(f"trial directories in {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    summary = summarize(trials)
    print(json.dumps(summary, indent=2))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"summary": summary, "trials": trials}, fh, indent=2)
    bad = (
        summary["unreadable_files"]
        or summary["final_problems"]
        or summary["resume_problems"]
        or summary["hangs"]
        or summary["epochs_lost_max"] > 1
        or summary["completions"] != summary["trials"]
    )
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())

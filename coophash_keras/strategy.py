"""Where a run trains: the default device, MirroredStrategy over local GPUs, or
MultiWorkerMirroredStrategy over several machines; and which worker writes the run's files."""

import json
import os

import tensorflow as tf

from coophash_keras.run_spec import RunError


def make_strategy(workers=None, task_index=None, mirrored=False):
    """None (default device), MultiWorkerMirroredStrategy (workers / TF_CONFIG) or Mirrored over
    the local GPUs. Create it before any other TF op runs."""
    if workers:
        if task_index is None or not 0 <= task_index < len(workers):
            raise RunError(f"--task-index must be in [0, {len(workers) - 1}] for {len(workers)} workers")
        os.environ["TF_CONFIG"] = json.dumps(
            {"cluster": {"worker": list(workers)}, "task": {"type": "worker", "index": task_index}}
        )
    if os.environ.get("TF_CONFIG"):
        return tf.distribute.MultiWorkerMirroredStrategy()
    if mirrored:
        return tf.distribute.MirroredStrategy()
    return None


def is_chief(strategy) -> bool:
    if strategy is None or not os.environ.get("TF_CONFIG"):
        return True
    task = json.loads(os.environ["TF_CONFIG"]).get("task", {})
    return task.get("type") in ("chief", None) or (task.get("type") == "worker" and task.get("index", 0) == 0)

"""What happens when a training step goes non-finite: the guarded update (models/safe_update.py)
has already skipped it, so the model holds its last finite state; `DivergenceGuard` then stops
`fit` or, under the "shrink" policy, halves every step size and goes on."""

import keras
import numpy as np


class TrainingDivergedError(RuntimeError):
    """A step went non-finite and training stopped; the model holds the last finite state."""


@keras.saving.register_keras_serializable(package="coophash")
class ScaledSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """A learning-rate schedule times a constant factor: how the "shrink" divergence policy halves
    a learning rate that is a schedule (a schedule has no variable to assign)."""

    def __init__(self, schedule, factor=1.0):
        self.schedule = schedule
        self.factor = float(factor)

    def __call__(self, step):
        return self.schedule(step) * self.factor

    def get_config(self):
        return {"schedule": keras.optimizers.schedules.serialize(self.schedule), "factor": self.factor}

    @classmethod
    def from_config(cls, config):
        return cls(keras.optimizers.schedules.deserialize(config["schedule"]), config["factor"])


def _base_optimizer(optimizer):
    return optimizer.inner_optimizer if isinstance(optimizer, keras.optimizers.LossScaleOptimizer) else optimizer


def scale_learning_rate(optimizer, factor=None, absolute=None) -> bool:
    """Multiply an optimizer's learning rate by `factor` (or, for a schedule, set its factor to
    `absolute`); a LossScaleOptimizer's inner optimizer is the one changed. A float learning rate
    is a variable, assigned in place (saved with the optimizer's variables); a schedule is wrapped
    in ScaledSchedule. Returns True if the train step must be traced again (a schedule's factor is
    a constant in it)."""
    inner = _base_optimizer(optimizer)
    lr = inner._learning_rate  # the variable or schedule itself; `learning_rate` gives its current value
    if isinstance(lr, keras.optimizers.schedules.LearningRateSchedule):
        base, old = (lr.schedule, lr.factor) if isinstance(lr, ScaledSchedule) else (lr, 1.0)
        new = absolute if absolute is not None else old * factor
        if new == old:
            return False
        inner.learning_rate = ScaledSchedule(base, new)
        return True
    if absolute is not None:
        return False  # a variable learning rate was restored with the optimizer's own variables
    if not isinstance(lr, keras.Variable):
        raise TypeError(f"cannot scale the learning rate of {optimizer.name}: it is a {type(lr).__name__}")
    lr.assign(lr * factor)
    return False


class StepScale(keras.layers.Layer):
    """One non-trainable scalar, 1.0 until the "shrink" divergence policy halves it: the factor the
    model's learning rates and (CoopHash) Langevin step size stand at. A layer of its own, so it
    is saved with the weights (backups, .keras files), and files saved before it existed load (1.0)."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.value = self.add_weight(shape=(), initializer="ones", trainable=False, name="value")

    def load_own_variables(self, store):
        if len(store.keys()):
            super().load_own_variables(store)


class DivergenceGuard(keras.callbacks.Callback):
    """Acts on every batch whose step went non-finite (the guarded update skipped it, so the model
    holds its last finite weights and optimizer state), as config.divergence_policy says:
      "stop"    `fit` stops with TrainingDivergedError;
      "shrink"  every optimizer's learning rate and the Langevin step size are halved and training
                goes on; after config.divergence_max_shrinks halvings in all, it stops as "stop".
    HashingModel.fit adds it."""

    def __init__(self):
        super().__init__()
        self._epoch, self._seen = 0, 0.0

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch, self._seen = epoch, 0.0  # fit resets the trackers at every epoch

    def on_train_batch_end(self, batch, logs=None):
        # logs["diverged"] is the epoch's running mean; the tracker's total tells a new divergence
        # from one an earlier batch of this epoch already had.
        if not logs or float(np.asarray(logs.get("diverged", 0.0)).mean()) <= 0:
            return
        tracker = self.model.trackers.get("diverged")
        total = float(np.asarray(tracker.total)) if tracker is not None else self._seen + 1
        if total <= self._seen:
            return
        self._seen = total
        model, c = self.model, self.model.config
        where = f"batch {batch} (epoch {self._epoch + 1})"
        if c.divergence_policy == "shrink" and model.shrinks < c.divergence_max_shrinks:
            model.shrink_step_sizes(0.5)
            print(
                f"diverged at {where}: step skipped, learning rates and Langevin step size halved "
                f"(shrink {model.shrinks} of at most {c.divergence_max_shrinks})",
                flush=True,
            )
            return
        after = f" after {model.shrinks} halvings of the step sizes" if c.divergence_policy == "shrink" else ""
        raise TrainingDivergedError(
            f"training diverged at {where}{after}: a loss or gradient became non-finite, so that step was "
            "skipped and the model keeps its last finite weights and optimizer state. Lower the learning "
            "rates or langevin_step_size, set langevin_clip_update"
            + (
                ", or raise divergence_max_shrinks"
                if after
                else ", or set divergence_policy=shrink to halve the step sizes and go on"
            )
        )

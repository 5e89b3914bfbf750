"""Freeze, then fine-tune, a pretrained backbone within one optimizer per group.

`FineTuneAdam` is Adam whose updates of the backbone's variables (`set_backbone_variables`) are
multiplied by 0 for the optimizer's first `freeze_steps` steps and by `backbone_scale` after; every
other variable learns at the full rate. `make_optimizer` (every model's default optimizer) uses it
when the config names a backbone (config backbone_freeze_steps, backbone_learning_rate_scale).

Why this design: the optimizer groups, their eager builds in `compile` (distribution strategies
need them), the guarded update and the backups stay exactly as they are, and freezing needs no
retrace: the factor is a tensor of the optimizer's own iteration count. While frozen the gradient
through the backbone is still computed (CoopHash's Langevin needs it anyway) and Adam's moments of
the backbone accumulate, so fine-tuning starts from warm moment estimates; the weights do not move.
"""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="coophash")
class FineTuneAdam(keras.optimizers.Adam):
    def __init__(self, *args, freeze_steps=0, backbone_scale=1.0, **kwargs):
        super().__init__(*args, **kwargs)
        self.freeze_steps = int(freeze_steps)
        self.backbone_scale = float(backbone_scale)
        self._backbone_keys = frozenset()

    def set_backbone_variables(self, variables):
        """The variables the schedule applies to (HashingModel.compile sets them before building)."""
        self._backbone_keys = frozenset(self._var_key(v) for v in variables)

    def backbone_factor(self):
        """0 while frozen, then backbone_scale (a tensor of the current iteration)."""
        frozen = ops.less(self.iterations, self.freeze_steps)
        return ops.where(frozen, 0.0, self.backbone_scale)

    def update_step(self, gradient, variable, learning_rate):
        if self._var_key(variable) in self._backbone_keys:
            learning_rate = ops.cast(learning_rate, variable.dtype) * ops.cast(self.backbone_factor(), variable.dtype)
        super().update_step(gradient, variable, learning_rate)

    def get_config(self):
        config = super().get_config()
        config.update(freeze_steps=self.freeze_steps, backbone_scale=self.backbone_scale)
        return config


def attach_backbone(optimizer, variables):
    """Tell a FineTuneAdam (also inside a LossScaleOptimizer) which variables are the backbone's;
    other optimizers (a user's own) are left as they are."""
    inner = getattr(optimizer, "inner_optimizer", optimizer)
    if isinstance(inner, FineTuneAdam):
        inner.set_backbone_variables(variables)


def make_optimizer(config, learning_rate, beta_1, name):
    """A model group's default optimizer: Adam at `learning_rate` (decayed exponentially when the
    config says so), FineTuneAdam when the config names a backbone, wrapped for loss scaling under
    mixed_float16."""
    c = config
    if c.lr_decay_rate != 1.0:
        learning_rate = keras.optimizers.schedules.ExponentialDecay(
            learning_rate, decay_steps=c.lr_decay_steps, decay_rate=c.lr_decay_rate
        )
    if c.backbone != "none":  # the same Adam, with the backbone's freeze / fine-tune schedule
        optimizer = FineTuneAdam(
            learning_rate,
            beta_1=beta_1,
            freeze_steps=c.backbone_freeze_steps,
            backbone_scale=c.backbone_learning_rate_scale,
            name=f"{name}_optimizer",
        )
    else:
        optimizer = keras.optimizers.Adam(learning_rate, beta_1=beta_1, name=f"{name}_optimizer")
    if keras.mixed_precision.global_policy().name == "mixed_float16":
        # float16 gradients underflow without loss scaling; the wrapper unscales in apply().
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer, name=f"{name}_loss_scale")
    return optimizer

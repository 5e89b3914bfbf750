"""Run in a subprocess (conftest's `two_device_check`, once per session): the CPU must be split into
2 logical devices before TensorFlow initialises, which a pytest process that already used TF cannot
do. One process for both checks that need it (one TensorFlow start): FineTuneAdam's schedule under a
MirroredStrategy (test_backbone.py), first, then CoopHash under one (test_distribute.py).

Prints one JSON line with the measurements the tests assert on."""

import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import tensorflow as tf  # noqa: E402

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

import keras  # noqa: E402
import numpy as np  # noqa: E402

from coophash_keras import CoopHash, CoopHashConfig  # noqa: E402
from coophash_keras.data import load_digits  # noqa: E402
from coophash_keras.models.coophash import ContrastivePairs  # noqa: E402


class FixedNoiseCoopHash(CoopHash):
    """Noise held fixed: z and c- are functions of each example's label, no Langevin or
    reparameterisation noise. Each example's computation then does not depend on which replica
    runs it, so 2 replicas must reproduce the single-device update exactly."""

    def generate_contrastive_pairs(self, labels_multi_hot, seed):
        proj = tf.constant(
            np.random.default_rng(0).normal(size=(self.config.num_classes, self.config.latent_dim)), tf.float32
        )
        z = labels_multi_hot @ proj
        negative = tf.roll(labels_multi_hot, 1, axis=-1)
        return ContrastivePairs(
            self.generator(z, labels_multi_hot), self.generator(z, negative), labels_multi_hot, negative, z
        )

    def sample_reparameterization_noise(self, shape, seed):
        return tf.zeros(shape)


def fine_tune_adam_check(strategy):
    """Built eagerly in the strategy's scope, FineTuneAdam's schedule must still find the backbone's
    (mirrored) variables when each replica applies its update: frozen for 1 step, then half the step."""
    from coophash_keras.models.optimizers import FineTuneAdam

    with strategy.scope():
        backbone, head = keras.Variable(np.zeros(2, np.float32)), keras.Variable(np.zeros(2, np.float32))
        opt = FineTuneAdam(0.01, freeze_steps=1, backbone_scale=0.5)
        opt.set_backbone_variables([backbone])
        opt.build([backbone, head])

    @tf.function
    def step():
        def replica():
            g = tf.constant([1.0, -1.0])
            opt.apply([g, g], [backbone, head])

        strategy.run(replica)

    step()
    after_one = (backbone.numpy().tolist(), head.numpy().tolist())
    step()
    return dict(
        replicas=strategy.num_replicas_in_sync,
        after_one=after_one,
        after_two=(backbone.numpy().tolist(), head.numpy().tolist()),
    )


def main():
    # One strategy for both checks: a second MirroredStrategy in a process reuses the collective
    # instance keys of the first one's all-reduces.
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    fine_tune_adam = fine_tune_adam_check(strategy)
    cfg = CoopHashConfig(
        image_shape=(8, 8, 1),
        num_classes=10,
        num_bits=16,
        base_filters=8,
        feature_dim=32,
        latent_dim=8,
        generator_filters=16,
        langevin_steps=3,
        langevin_noise_scale=0.0,
        langevin_step_size=1.0,
        base_dropout=0.0,  # dropout masks differ per replica
    )
    digits = load_digits()
    ds = tf.data.Dataset.from_tensor_slices((digits.images[:32], digits.labels[:32])).batch(16, drop_remainder=True)

    def sgd():
        return keras.optimizers.SGD(0.5)  # SGD, not Adam: Adam would hide a wrong loss scale

    single = FixedNoiseCoopHash(cfg)
    single.compile(descriptor_optimizer=sgd(), generator_optimizer=sgd())
    init = single.get_weights()
    with strategy.scope():
        multi = FixedNoiseCoopHash(cfg)
        multi.compile(descriptor_optimizer=sgd(), generator_optimizer=sgd())
    multi.set_weights(init)
    single.fit(ds, epochs=1, verbose=0, shuffle=False)
    multi.fit(ds, epochs=1, verbose=0, shuffle=False)
    upd = max(float(np.abs(a - b).max()) for a, b in zip(single.get_weights(), init) if a.dtype.kind == "f")
    diff = max(
        float(np.abs(a - b).max()) for a, b in zip(single.get_weights(), multi.get_weights()) if a.dtype.kind == "f"
    )

    # The real model under the strategy: replicas draw different noise, and fit runs end to end.
    with strategy.scope():
        model = CoopHash(cfg.replace(langevin_noise_scale=0.05))
        model.compile()
    per_replica = strategy.run(tf.function(lambda: model.sample_latent(4, model.step_seed())))
    z0, z1 = [t.numpy() for t in strategy.experimental_local_results(per_replica)]
    hist = model.fit(ds, epochs=2, verbose=0)
    codes = model.encode(digits.images[:8])
    print(
        json.dumps(
            {
                "replicas": strategy.num_replicas_in_sync,
                "max_update": upd,
                "max_diff": diff,
                "replica_noise_differs": bool(not np.allclose(z0, z1)),
                "fit_losses_finite": bool(all(np.all(np.isfinite(v)) for v in hist.history.values())),
                "iterations": int(model.descriptor_optimizer.iterations.numpy()),
                "codes_ok": bool(codes.shape == (8, 16) and set(np.unique(codes)) <= {-1, 1}),
                "fine_tune_adam": fine_tune_adam,
            }
        )
    )


if __name__ == "__main__":
    main()

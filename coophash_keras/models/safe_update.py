"""The distribution-safe update every model's train step goes through: an optimizer step that is
skipped whole (weights, moments, iteration count) when its loss or a gradient is non-finite on any
replica, so a bad batch never poisons the model."""

import keras
import tensorflow as tf


def all_finite(values) -> tf.Tensor:
    return tf.reduce_all([tf.reduce_all(tf.math.is_finite(v)) for v in values if v is not None])


def all_replicas(flag):
    """A flag that is True only if it is True on every replica (they must agree to step)."""
    ctx = tf.distribute.get_replica_context()
    if ctx is None or ctx.num_replicas_in_sync == 1:
        return flag
    failures = ctx.all_reduce(tf.distribute.ReduceOp.SUM, 1.0 - tf.cast(flag, tf.float32))
    return failures < 0.5


def apply_if(optimizer, finite, grads, variables):
    """optimizer.apply(grads, variables) only where `finite` is True (the same on every replica).

    Under a strategy that synchronises through merge_call (MultiWorkerMirroredStrategy), a cond
    around apply() in the replica context is not allowed, so the cond runs in the cross-replica
    context, as keras.optimizers.LossScaleOptimizer does for its own skip."""

    def step():
        optimizer.apply(grads, variables)
        return tf.constant(True)

    if tf.__internal__.distribute.strategy_supports_no_merge_call() or not tf.distribute.has_strategy():
        tf.cond(finite, step, lambda: tf.constant(False))
        return

    def cross_replica(distribution, finite, grads):
        finite = distribution.experimental_local_results(finite)[0]

        def apply_everywhere():
            distribution.extended.call_for_each_replica(lambda g: optimizer.apply(g, variables), args=(grads,))
            return tf.constant(True)

        tf.cond(finite, apply_everywhere, lambda: tf.constant(False))

    tf.distribute.get_replica_context().merge_call(cross_replica, args=(finite, grads))


def guarded_update(optimizer, variables, loss_fn, finite=True):
    """One step of `optimizer` on `variables` for `loss_fn()` (a dict whose "total" holds
    per-example losses; the step uses this replica's share of the global-batch mean; an optional
    "restricted" entry, ((per-example loss, variables), ...), adds losses whose gradient reaches
    only the variables named with them, a subset of `variables`), unless the
    loss or a gradient's square is non-finite or `finite` is False: then nothing changes, neither
    the weights nor the optimizer's moments and iteration count. Returns (the dict, whether it
    stepped)."""
    with tf.GradientTape(persistent=True) as tape:
        terms = loss_fn()
        restricted = [(tf.nn.compute_average_loss(t), v) for t, v in terms.pop("restricted", ())]
        loss = tf.nn.compute_average_loss(terms["total"])  # share of the GLOBAL batch mean
        scaled = optimizer.scale_loss(loss)  # identity unless mixed precision
        scaled_restricted = [(optimizer.scale_loss(extra), v) for extra, v in restricted]
    grads = tape.gradient(scaled, variables)
    position = {id(v): i for i, v in enumerate(variables)}
    for extra, subset in scaled_restricted:  # a loss whose gradient reaches only `subset`
        for v, g in zip(subset, tape.gradient(extra, subset)):
            i = position[id(v)]
            if g is not None:
                grads[i] = g if grads[i] is None else grads[i] + g
    del tape
    loss = loss + sum(extra for extra, _ in restricted)
    finite = tf.logical_and(tf.convert_to_tensor(finite), tf.math.is_finite(loss))
    if not isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
        # (the loss-scale wrapper checks gradients itself and lowers its scale on overflow.)
        # Squares, not the gradients: Adam keeps g^2, so a finite gradient above ~1.8e19 would
        # still put inf into its second moment, and every later update of that weight to 0.
        finite = tf.logical_and(finite, all_finite([tf.square(g) for g in grads if g is not None]))
    finite = all_replicas(finite)
    apply_if(optimizer, finite, grads, variables)
    return terms, finite

import keras
import numpy as np
import pytest
import tensorflow as tf

from coophash_keras import CoopHash, TrainingDivergedError
from coophash_keras.io import load_model, save_model
from coophash_keras.models.base import Batch
from coophash_keras.models.coophash import ContrastivePairs
from coophash_keras.models.divergence import ScaledSchedule, scale_learning_rate
from coophash_keras.models.generative import sample_negative_labels
from coophash_keras.preprocessing import normalize_images


def make_model(config):
    model = CoopHash(config)
    model.compile()
    return model


def assert_every_variable_finite(model):
    """Weights, the step scale, and every optimizer's slots, iteration count and learning rate."""
    variables = list(model.weights) + [v for o in model.optimizers.values() for v in o.variables]
    assert [v.path for v in variables if not np.all(np.isfinite(np.asarray(v)))] == []


def test_fit_on_digits_trains_and_codes_are_pm1(tiny_config, digits):
    model = make_model(tiny_config)
    ds = digits.subset(np.arange(640)).as_dataset(32, shuffle=True, drop_remainder=True)
    hist = model.fit(ds, epochs=3, verbose=0)
    for name, values in hist.history.items():
        assert np.all(np.isfinite(values)), name
    expected = {
        "loss",
        "nll_loss",
        "classification_loss",
        "triplet_loss",
        "quantization_loss",
        "generator_loss",
        "reconstruction_loss",
        "kl_loss",
        "energy_real",
        "energy_revised",
        "langevin_grad_norm",
        "revision_distance",
        "energy_gap",
        "bit_balance",
        "class_accuracy",
        "diverged",
    }
    assert expected <= set(hist.history)
    assert hist.history["classification_loss"][-1] < hist.history["classification_loss"][0]
    assert int(model.descriptor_optimizer.iterations) == 3 * 20 == int(model.generator_optimizer.iterations)
    codes = model.encode(digits.images[:50])
    assert codes.shape == (50, 16) and codes.dtype == np.int8 and set(np.unique(codes)) <= {-1, 1}
    packed = model.encode(digits.images[:50], packed=True)
    assert packed.shape == (50, 2) and packed.dtype == np.uint8
    np.testing.assert_array_equal(np.unpackbits(packed, axis=1).astype(np.int8) * 2 - 1, codes)
    # validation losses through test_step
    val = model.evaluate(digits.subset(np.arange(640, 704)).as_dataset(32), verbose=0, return_dict=True)
    assert np.isfinite(val["loss"]) and np.isfinite(val["generator_loss"])


def fixed_batch(model, digits, n=32):
    from coophash_keras.models.base import Batch

    batch = Batch(
        normalize_images(tf.constant(digits.images[:n])),
        model.labels_to_multi_hot(tf.constant(digits.labels[:n])),
        None,
    )
    seed = tf.constant([5, 6])
    revised, _ = model.revise_pairs(model.generate_contrastive_pairs(batch.labels, seed), seed)
    return batch, revised, seed


def test_descriptor_update_reduces_descriptor_loss(tiny_config, digits):
    model = make_model(tiny_config)
    batch, revised, _ = fixed_batch(model, digits)

    def loss():
        return float(tf.reduce_mean(model.descriptor_losses(batch, revised)["total"]))

    before = loss()
    for _ in range(15):
        model.guarded_update("descriptor", lambda: model.descriptor_losses(batch, revised))
    assert loss() < before


def test_generator_update_reduces_generator_loss(tiny_config, digits):
    model = make_model(tiny_config)
    _, revised, seed = fixed_batch(model, digits)

    def loss():
        return float(tf.reduce_mean(model.generator_losses(revised, seed)["total"]))

    before = loss()
    descriptor_before = [v.numpy().copy() for v in model.hash_network.descriptor_variables]
    for _ in range(15):
        model.guarded_update("generator", lambda: model.generator_losses(revised, seed))
    assert loss() < before
    # the generator update leaves the descriptor's own weights alone
    for a, v in zip(descriptor_before, model.hash_network.descriptor_variables):
        np.testing.assert_array_equal(a, v.numpy())


def test_taught_generator_learns_from_the_pairs_z_and_the_elbo_reaches_only_the_inference_head(tiny_config, digits):
    taught = make_model(tiny_config.replace(generator_latent="taught"))
    prior = make_model(tiny_config.replace(generator_latent="prior"))
    for model in (taught, prior):
        model.compile(descriptor_optimizer=keras.optimizers.SGD(0.1), generator_optimizer=keras.optimizers.SGD(0.1))
    prior.set_weights(taught.get_weights())
    _, revised, seed = fixed_batch(taught, digits)
    head_before = [v.numpy().copy() for v in taught.hash_network.inference_head.trainable_variables]
    for model in (taught, prior):
        model.guarded_update("generator", lambda m=model: m.generator_losses(revised, seed))
    # the generator takes the same step as from the z that made the pair alone: the ELBO's
    # gradient does not reach it
    for a, b in zip(taught.generator.trainable_variables, prior.generator.trainable_variables):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5, atol=1e-7)
    assert any(
        not np.allclose(a, v.numpy())
        for a, v in zip(head_before, taught.hash_network.inference_head.trainable_variables)
    )
    for a, v in zip(head_before, prior.hash_network.inference_head.trainable_variables):
        np.testing.assert_array_equal(a, v.numpy())  # the ablation leaves the head alone

    # on unrevised pairs the generator has nothing to learn (it made them), so the head's ELBO alone moves
    unrevised = taught.generate_contrastive_pairs(revised.positive_labels, seed)

    def inference_loss():
        return float(tf.reduce_mean(taught.generator_losses(unrevised, seed)["inference_loss"]))

    before = inference_loss()
    for _ in range(15):
        taught.guarded_update("generator", lambda: taught.generator_losses(unrevised, seed))
    assert inference_loss() < before


def test_contrastive_pairs_share_z_and_negatives_differ(tiny_config, digits):
    model = make_model(tiny_config)
    c = model.labels_to_multi_hot(tf.constant(digits.labels[:64]))
    neg = model.sample_negative_labels(c, tf.constant([1, 2]))
    assert float(tf.reduce_max(tf.reduce_sum(c * neg, -1))) == 0.0  # no shared class
    assert len(np.unique(np.argmax(neg.numpy(), 1))) > 3
    pairs = model.generate_contrastive_pairs(c, tf.constant([1, 2]))
    z = model.sample_latent(64, tf.constant([1, 2]))
    np.testing.assert_allclose(pairs.latent.numpy(), z.numpy())
    np.testing.assert_allclose(pairs.positive.numpy(), model.generator(z, c).numpy(), atol=1e-6)
    np.testing.assert_allclose(pairs.negative.numpy(), model.generator(z, pairs.negative_labels).numpy(), atol=1e-6)


def test_negative_label_sets_are_disjoint_and_as_large_as_the_anchors():
    # label sets of every size 0..6 over 6 classes, 50 draws each
    rng = np.random.default_rng(0)
    sizes = np.repeat(np.arange(7), 50)
    c = np.zeros((len(sizes), 6), np.float32)
    for row, k in enumerate(sizes):
        c[row, rng.choice(6, k, replace=False)] = 1.0
    seed = tf.constant([3, 4])
    neg = sample_negative_labels(tf.constant(c), seed, 6, same_size=True).numpy()
    absent = 6 - sizes
    expected_size = np.where(absent == 0, 1, np.maximum(np.minimum(sizes, absent), 1))
    np.testing.assert_array_equal(neg.sum(1), expected_size)  # |c-| = min(|c+|, #absent), at least 1
    shared = (neg * c).sum(1)
    np.testing.assert_array_equal(shared[absent > 0], 0)  # disjoint whenever a class is absent
    # a 1-class anchor (single-label data) gets the same c- as the one-absent-class default
    one = np.eye(6, dtype=np.float32)[rng.integers(0, 6, 200)]
    np.testing.assert_array_equal(
        sample_negative_labels(tf.constant(one), seed, 6, same_size=True).numpy(),
        sample_negative_labels(tf.constant(one), seed, 6).numpy(),
    )
    # the default on a multi-label anchor: one absent class
    default = sample_negative_labels(tf.constant(c), seed, 6).numpy()
    np.testing.assert_array_equal(default.sum(1), 1)
    # the set is drawn uniformly: for 2-class anchors over 6 classes each absent class is drawn ~half the time
    two = np.zeros((4000, 6), np.float32)
    two[:, :2] = 1.0
    drawn = sample_negative_labels(tf.constant(two), seed, 6, same_size=True).numpy()[:, 2:].mean(0)
    np.testing.assert_allclose(drawn, 0.5, atol=0.04)


def test_absent_set_negatives_reach_the_generator_on_multi_label_data(tiny_config):
    config = tiny_config.replace(multi_label=True, negative_labels="absent_set")
    model = make_model(config)
    c = tf.constant([[1, 1, 1, 0, 0, 0, 0, 0, 0, 0], [0, 0, 0, 0, 0, 0, 0, 0, 1, 1]], tf.float32)
    pairs = model.generate_contrastive_pairs(c, tf.constant([1, 2]))
    np.testing.assert_array_equal(pairs.negative_labels.numpy().sum(1), [3, 2])
    assert float(tf.reduce_max(tf.reduce_sum(c * pairs.negative_labels, -1))) == 0.0


def test_save_load_round_trip_gives_identical_codes(tmp_path, tiny_config, digits):
    model = make_model(tiny_config)
    model.fit(digits.subset(np.arange(64)).as_dataset(32, drop_remainder=True), epochs=1, verbose=0)
    path = str(tmp_path / "model.keras")
    save_model(model, path)
    back = load_model(path)
    assert back.config == model.config
    np.testing.assert_array_equal(back.encode(digits.images[:100]), model.encode(digits.images[:100]))
    np.testing.assert_allclose(back.relaxed_codes(digits.images[:10]), model.relaxed_codes(digits.images[:10]))
    assert int(back.descriptor_optimizer.iterations) == 2
    # the reloaded model keeps training
    back.fit(digits.subset(np.arange(64)).as_dataset(32, drop_remainder=True), epochs=1, verbose=0)
    assert int(back.descriptor_optimizer.iterations) == 4


def test_load_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_model(str(tmp_path / "missing.keras"))
    bad = tmp_path / "bad.keras"
    bad.write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="not a loadable"):
        load_model(str(bad))


@pytest.mark.parametrize(
    "make_ds,match",
    [
        (lambda d: tf.data.Dataset.from_tensor_slices((d.images[:64], d.labels[:64])), "rank 4"),
        (lambda d: tf.data.Dataset.from_tensor_slices((d.images[:64, :7], d.labels[:64])).batch(8), "8x8"),
        (
            lambda d: tf.data.Dataset.from_tensor_slices((np.repeat(d.images[:64], 3, -1), d.labels[:64])).batch(8),
            "channel",
        ),
        (lambda d: tf.data.Dataset.from_tensor_slices((d.images[:64], d.labels[:64] + 5)).batch(8), "out of range"),
        (lambda d: tf.data.Dataset.from_tensor_slices((d.images[:0], d.labels[:0])).batch(8), "empty"),
        (lambda d: tf.data.Dataset.from_tensor_slices(d.images[:64]).batch(8), r"\(images, labels\)"),
        (lambda d: tf.data.Dataset.from_tensor_slices((d.images[:64] / 255.0, d.labels[:64])).batch(8), "normalised"),
    ],
)
def test_bad_training_data_is_rejected_before_training(tiny_config, digits, make_ds, match):
    model = make_model(tiny_config)
    with pytest.raises(ValueError, match=match):
        model.fit(make_ds(digits), epochs=1, verbose=0)
    assert int(model.descriptor_optimizer.iterations) == 0


def test_bad_encode_input_and_fit_before_compile(tiny_config, digits):
    model = make_model(tiny_config)
    with pytest.raises(ValueError, match="channel"):
        model.encode(np.zeros((2, 8, 8, 3), np.uint8))
    with pytest.raises(ValueError, match="compile"):
        CoopHash(tiny_config).fit(digits.as_dataset(32), epochs=1)
    with pytest.raises(ValueError, match="labels"):
        model.fit(digits.images[:64], None, epochs=1, verbose=0)


def test_langevin_divergence_stops_training_and_keeps_the_last_finite_state(tmp_path, tiny_config, digits):
    cfg = tiny_config.replace(
        langevin_step_size=1e20, langevin_clip_update=None, langevin_clip_images=False, langevin_steps=4
    )
    model = make_model(cfg)
    before = [v.numpy().copy() for v in model.weights]
    with pytest.raises(TrainingDivergedError, match="diverged at batch 0"):
        model.fit(digits.subset(np.arange(128)).as_dataset(32, drop_remainder=True), epochs=2, verbose=0)
    # the step was skipped whole: every weight, optimizer slot and iteration count is as before
    for b, v in zip(before, model.weights):
        np.testing.assert_array_equal(b, v.numpy())
    assert int(model.descriptor_optimizer.iterations) == 0 == int(model.generator_optimizer.iterations)
    assert_every_variable_finite(model)
    save_model(model, str(tmp_path / "ok.keras"))  # finite weights can be saved
    model.hash_network.hash_head.projection.kernel.assign(np.full((32, 16), np.nan, np.float32))
    with pytest.raises(ValueError, match="non-finite"):
        save_model(model, str(tmp_path / "ok.keras"))
    assert load_model(str(tmp_path / "ok.keras")) is not None  # the good file survived


# Langevin updates of ~1e13 x the energy gradient: the revised images, energies and gradients grow
# until the gradients' squares (Adam's second moment) overflow float32; a few halvings of the step
# size bring them back under it.
EXPLODING = dict(langevin_step_size=1e7, langevin_clip_update=None, langevin_clip_images=False)


@pytest.mark.slow
def test_shrink_policy_halves_the_step_sizes_and_training_goes_on(tmp_path, tiny_config, digits):
    cfg = tiny_config.replace(**EXPLODING, lr_decay_rate=0.5, divergence_policy="shrink", divergence_max_shrinks=8)
    model = make_model(cfg)
    ds = digits.subset(np.arange(128)).as_dataset(32, drop_remainder=True)
    hist = model.fit(ds, epochs=3, verbose=0).history
    assert 1 <= model.shrinks < 8 and hist["diverged"][0] > 0 and hist["diverged"][-1] == 0  # healed
    assert_every_variable_finite(model)
    scale = 0.5**model.shrinks
    assert float(model.step_scale.value) == scale  # what the Langevin step size is multiplied by
    decay = keras.optimizers.schedules.ExponentialDecay(1e-3, 1000, 0.5)
    for optimizer in model.optimizers.values():  # a schedule (lr_decay_rate < 1) gets the factor too
        assert isinstance(optimizer._learning_rate, ScaledSchedule)
        assert float(optimizer.learning_rate) == pytest.approx(float(decay(optimizer.iterations)) * scale)
    # saved with the model, and restored from a bare weights file (a backup) into a fresh model
    save_model(model, str(tmp_path / "m.keras"))
    loaded = load_model(str(tmp_path / "m.keras"))
    model.save_weights(str(tmp_path / "m.weights.h5"))
    fresh = make_model(cfg)
    fresh.load_weights(str(tmp_path / "m.weights.h5"))
    for other in (loaded, fresh):
        assert other.shrinks == model.shrinks
        lr = float(other.descriptor_optimizer.learning_rate)
        assert lr == pytest.approx(float(model.descriptor_optimizer.learning_rate))


def test_shrink_policy_stops_after_its_last_halving(tiny_config, digits):
    cfg = tiny_config.replace(**EXPLODING, divergence_policy="shrink", divergence_max_shrinks=2)
    model = make_model(cfg)
    with pytest.raises(TrainingDivergedError, match="after 2 halvings of the step sizes"):
        model.fit(digits.subset(np.arange(128)).as_dataset(32, drop_remainder=True), epochs=3, verbose=0)
    assert model.shrinks == 2 and float(model.step_scale.value) == 0.25
    assert float(model.descriptor_optimizer.learning_rate) == pytest.approx(0.25e-3)  # a variable, assigned
    assert_every_variable_finite(model)


def test_scale_learning_rate_of_variables_schedules_and_loss_scaling():
    def schedule():
        return keras.optimizers.schedules.ExponentialDecay(1e-3, 10, 0.5)

    optimizers = [
        keras.optimizers.Adam(1e-3),
        keras.optimizers.Adam(schedule()),
        keras.optimizers.LossScaleOptimizer(keras.optimizers.Adam(1e-3)),
        keras.optimizers.LossScaleOptimizer(keras.optimizers.Adam(schedule())),
    ]
    for optimizer, is_schedule in zip(optimizers, (False, True, False, True)):
        before = float(optimizer.learning_rate)
        assert scale_learning_rate(optimizer, 0.5) == is_schedule  # a schedule's factor means a retrace
        assert scale_learning_rate(optimizer, 0.5) == is_schedule
        assert float(optimizer.learning_rate) == pytest.approx(before / 4)
        if is_schedule:  # one wrapper, not one per halving, and it survives serialisation
            wrapped = getattr(optimizer, "inner_optimizer", optimizer)._learning_rate
            assert isinstance(wrapped, ScaledSchedule) and not isinstance(wrapped.schedule, ScaledSchedule)
            copy = keras.optimizers.deserialize(keras.optimizers.serialize(optimizer))
            assert float(copy.learning_rate) == pytest.approx(before / 4)


def test_fit_on_arrays_takes_one_channel_images_without_their_channel_axis(tiny_config, digits):
    model = make_model(tiny_config)
    model.fit(digits.images[:64, ..., 0], digits.labels[:64], batch_size=32, epochs=1, verbose=0)  # [N, 8, 8]
    assert int(model.descriptor_optimizer.iterations) == 2


@pytest.mark.parametrize(
    "ablation", ["no_generator_pairs", "no_energy_head", "no_inference_head", "no_classifier_head"]
)
def test_ablations_switch_their_component_off(tiny_config, digits, ablation):
    cfg = tiny_config.with_ablation(ablation)
    model = make_model(cfg)
    head_before = [v.numpy().copy() for v in model.hash_network.inference_head.trainable_variables]
    classifier_before = [v.numpy().copy() for v in model.hash_network.classifier_head.trainable_variables]
    gen_before = [v.numpy().copy() for v in model.generator.trainable_variables]
    energy_before = [v.numpy().copy() for v in model.hash_network.energy_head.trainable_variables]
    hist = model.fit(
        digits.subset(np.arange(256)).as_dataset(32, shuffle=True, drop_remainder=True), epochs=2, verbose=0
    ).history
    for name, values in hist.items():
        assert np.all(np.isfinite(values)), name
    moved = lambda before, vs: any(np.abs(b - v.numpy()).max() > 0 for b, v in zip(before, vs))  # noqa: E731
    # without Langevin the revision is the identity: nothing teaches the generator, so it is not
    # updated at all (not left to a gradient that is zero only in exact arithmetic)
    assert moved(gen_before, model.generator.trainable_variables) != (ablation == "no_energy_head")
    assert moved(energy_before, model.hash_network.energy_head.trainable_variables) != (ablation == "no_energy_head")
    if ablation == "no_generator_pairs":
        assert cfg.triplet_weight == 0 and cfg.real_triplet_weight == tiny_config.triplet_weight
        assert hist["langevin_grad_norm"][-1] > 0
    if ablation == "no_energy_head":
        assert cfg.nll_weight == 0 and cfg.langevin_steps == 0
        assert hist["langevin_grad_norm"] == [0.0, 0.0]  # no Langevin ran
    # the classifier head learns from nothing but the classification terms
    assert moved(classifier_before, model.hash_network.classifier_head.trainable_variables) != (
        ablation == "no_classifier_head"
    )
    if ablation == "no_energy_head":
        # g(z, c) computed again in another batch shape: zero up to float32 rounding (~1e-7 a
        # pixel, squared), not exactly zero on every CPU's kernels
        assert max(hist["reconstruction_loss"]) < 1e-10
    if ablation == "no_inference_head":
        assert hist["kl_loss"] == [0.0, 0.0]
        assert not moved(head_before, model.hash_network.inference_head.trainable_variables)
    else:
        assert moved(head_before, model.hash_network.inference_head.trainable_variables)
    with pytest.raises(ValueError, match="unknown ablation"):
        tiny_config.with_ablation("no_hash_head")


def test_recover_generates_from_inferred_z_and_langevin_raises_energy(trained_tiny, digits):
    model, _ = trained_tiny
    images = digits.images[:48]
    labels = digits.labels[:48]
    plain = model.recover(images, labels=labels, langevin_steps=0)
    revised = model.recover(images, labels=labels)
    assert plain.shape == images.shape and plain.dtype == np.uint8 and revised.dtype == np.uint8
    # 0 steps is exactly the generator at z = mu(x) for the given class
    features = model.hash_network.features(normalize_images(images))
    z_mean, _ = model.hash_network.inference_head(features)
    c = tf.one_hot(labels, 10)
    from coophash_keras.preprocessing import denormalize_images

    np.testing.assert_array_equal(plain, np.asarray(denormalize_images(model.generator(z_mean, c))))
    # Langevin ascends f_E(., c): revised images have higher energy than where they started
    energy = lambda x: model.hash_network.energy(normalize_images(x), c).numpy().mean()  # noqa: E731
    assert energy(revised) > energy(plain)
    # without labels the classifier head picks c
    predicted = np.argmax(model.class_probabilities(images), -1)
    np.testing.assert_array_equal(
        model.recover(images, langevin_steps=0), model.recover(images, labels=predicted, langevin_steps=0)
    )
    with pytest.raises(ValueError, match="out of range"):
        model.recover(images, labels=np.full(48, 12))
    with pytest.raises(ValueError, match="8x8"):
        model.recover(np.zeros((2, 5, 5, 1), np.uint8))


def test_unlabeled_batches_feed_the_marginal_energy_term_only_when_switched_on(tiny_config, digits):
    from coophash_keras.data import with_unlabeled

    labeled = digits.subset(np.arange(128)).as_dataset(32, drop_remainder=True)
    semi = with_unlabeled(labeled, digits.images[128:], 32)
    on = make_model(tiny_config.replace(unlabeled_nll_weight=1.0)).fit(semi, epochs=2, verbose=0).history
    assert all(np.isfinite(on["unlabeled_nll_loss"])) and on["unlabeled_nll_loss"][0] != 0
    off = make_model(tiny_config).fit(semi, epochs=1, verbose=0).history
    assert "unlabeled_nll_loss" not in off  # the third element is ignored (and its tracker not shown)
    # the term depends on the unlabeled images themselves
    model = make_model(tiny_config.replace(unlabeled_nll_weight=1.0))
    x = normalize_images(tf.constant(digits.images[:32]))
    c = tf.one_hot(digits.labels[:32], 10)
    rev = tf.random.stateless_uniform([32, 8, 8, 1], [0, 1], -1, 1)
    pairs = ContrastivePairs(rev, rev, c, c, tf.zeros([32, 8]))
    u1 = normalize_images(tf.constant(digits.images[200:232]))
    u2 = normalize_images(tf.constant(digits.images[300:332]))
    t1 = model.descriptor_losses(Batch(x, c, u1), pairs)
    t2 = model.descriptor_losses(Batch(x, c, u2), pairs)
    assert not np.allclose(t1["unlabeled_nll_loss"], t2["unlabeled_nll_loss"])
    assert "unlabeled_nll_loss" not in model.descriptor_losses(Batch(x, c, None), pairs)


def test_synthetic_classification_adds_the_revised_pairs_class_loss(tiny_config, digits):
    x = normalize_images(tf.constant(digits.images[:16]))
    c = tf.one_hot(digits.labels[:16], 10)
    c_neg = tf.one_hot((digits.labels[:16] + 1) % 10, 10)
    rev = tf.random.stateless_uniform([16, 8, 8, 1], [0, 2], -1, 1)
    cfg = tiny_config.replace(base_dropout=0.0)  # the two models' passes must see one network
    base = make_model(cfg)
    with_cls = CoopHash(cfg.replace(synthetic_classification_weight=2.0))
    with_cls.compile()
    with_cls.set_weights(base.get_weights())
    pairs = ContrastivePairs(rev, rev, c, c_neg, tf.zeros([16, 8]))
    t0 = base.descriptor_losses(Batch(x, c, None), pairs)["total"]
    t1 = with_cls.descriptor_losses(Batch(x, c, None), pairs)["total"]
    logits = base.hash_network(rev)["logits"]
    from coophash_keras import losses

    expected = losses.classification_loss(logits, c, False) + losses.classification_loss(logits, c_neg, False)
    np.testing.assert_allclose(t1 - t0, expected, rtol=1e-4, atol=1e-5)  # 2.0 * mean of the pair's two terms


def test_persistent_chains_start_from_and_write_back_to_the_buffer(tmp_path, tiny_config, digits):
    cfg = tiny_config.replace(persistent_chains=3, chain_reinit_rate=0.0)
    model = make_model(cfg)
    before = model.chain_buffer.numpy().copy()
    assert before.shape == (10, 3, 8, 8, 1)
    labels = model.labels_to_multi_hot(tf.constant(digits.labels[:32]))
    seed = tf.constant([3, 4])
    pairs = model.generate_contrastive_pairs(labels, seed)
    starts, slots = model._chain_starts(model.chain_buffer, pairs.images(), pairs.labels(), seed, 0.0)
    # with no restarts every chain starts at its class's buffer slot
    np.testing.assert_array_equal(starts.numpy(), before[slots[:, 0].numpy(), slots[:, 1].numpy()])
    np.testing.assert_array_equal(slots[:, 0].numpy(), np.argmax(pairs.labels().numpy(), -1))
    model.fit(digits.subset(np.arange(128)).as_dataset(32, drop_remainder=True), epochs=1, verbose=0)
    assert not np.allclose(model.chain_buffer.numpy(), before)  # revised images were written back
    path = str(tmp_path / "chains.keras")
    save_model(model, path)
    np.testing.assert_array_equal(load_model(path).chain_buffer.numpy(), model.chain_buffer.numpy())
    with pytest.raises(ValueError, match="single-label"):
        make_model(cfg.replace(multi_label=True))


def test_noise_chains_start_from_uniform_noise_at_the_reinit_rate_and_write_back(tiny_config):
    # A Langevin step too small to move a pixel and no noise: each chain ends where it started.
    cfg = tiny_config.replace(noise_chains=40, langevin_step_size=1e-12, langevin_noise_scale=0.0, noise_chain_steps=1)
    model = make_model(cfg)
    fresh = model.noise_chain_buffer.numpy()
    assert fresh.shape == (10, 40, 8, 8, 1) and fresh.min() >= -1.0 and fresh.max() <= 1.0
    assert abs(fresh.mean()) < 0.05 and abs(fresh.std() - 1 / np.sqrt(3)) < 0.02  # U[-1, 1]
    model.noise_chain_buffer.assign(np.zeros_like(fresh))
    n = 4000
    labels = tf.one_hot(np.arange(n) % 10, 10)
    samples = model.noise_chain_samples(labels, tf.constant([5, 6])).numpy()
    restarted = np.abs(samples).reshape(n, -1).max(axis=1) > 1e-6
    # the rows not restarted start (and end, to ~1e-20) at their buffer slot, all zeros here
    assert abs(restarted.mean() - cfg.noise_chain_reinit_rate) < 0.015  # 0.05 +- ~4 binomial sd
    fresh_noise = samples[restarted].ravel()
    assert fresh_noise.min() >= -1.0 and fresh_noise.max() <= 1.0 and fresh_noise.std() > 0.5
    # the ends went back into the buffer: every slot now holds zeros or one of the restarted chains
    buffer = model.noise_chain_buffer.numpy().reshape(10, 40, -1)
    written = np.abs(buffer).max(axis=-1) > 1e-6
    assert 0 < written.sum() <= restarted.sum()
    rows = {tuple(np.round(r, 6)) for r in samples[restarted].reshape(-1, 64)}
    assert all(tuple(np.round(r, 6)) in rows for r in buffer[written])
    assert model.noise_chain_samples(labels, tf.constant([5, 6])) is not None
    assert make_model(tiny_config).noise_chain_samples(labels, tf.constant([5, 6])) is None


def test_noise_chains_feed_only_the_likelihood_term_not_the_generators_teaching(tiny_config, digits):
    cfg = tiny_config.replace(base_dropout=0.0, energy_l2_weight=0.0)
    plain, noisy = make_model(cfg), make_model(cfg.replace(noise_chains=8))
    noisy.hash_network.set_weights(plain.hash_network.get_weights())
    noisy.generator.set_weights(plain.generator.get_weights())
    generator_before = [v.numpy().copy() for v in plain.generator.trainable_variables]
    # the likelihood term's negative: (1 - s) f_E(revised) + s f_E(noise chain)
    x = normalize_images(tf.constant(digits.images[:16]))
    c = tf.one_hot(digits.labels[:16], 10)
    rev = tf.random.stateless_uniform([16, 8, 8, 1], [0, 2], -1, 1)
    chains = tf.random.stateless_uniform([16, 8, 8, 1], [0, 3], -1, 1)
    pairs = ContrastivePairs(rev, rev, c, c, tf.zeros([16, 8]))
    with_chains = noisy.descriptor_losses(Batch(x, c, None), pairs, chains)
    without = noisy.descriptor_losses(Batch(x, c, None), pairs)
    energy_chains = noisy.hash_network(chains)["class_energies"]
    energy_chains = tf.reduce_sum(energy_chains * c, axis=-1)
    s = noisy.config.noise_chain_share
    expected = s * (energy_chains - without["energy_revised"])
    np.testing.assert_allclose(with_chains["nll_loss"] - without["nll_loss"], expected, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(with_chains["triplet_loss"], without["triplet_loss"])
    # one training step each on the same batch: the generator learns exactly the same revised pairs
    data = digits.subset(np.arange(32)).as_dataset(32, drop_remainder=True)
    plain.fit(data, epochs=1, verbose=0)
    noisy.fit(data, epochs=1, verbose=0)
    for before, a, b in zip(generator_before, plain.generator.trainable_variables, noisy.generator.trainable_variables):
        assert not np.array_equal(before, a.numpy())  # the generator did learn
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5, atol=1e-7)
    # while the descriptor learned something else
    assert not all(
        np.allclose(a.numpy(), b.numpy()) for a, b in zip(plain.hash_network.weights, noisy.hash_network.weights)
    )


def test_tuning_validates_on_held_out_labelled_images_never_the_queries():
    from coophash_keras.data.split import RetrievalSplit
    from coophash_keras.tuning import holdout_split

    split = RetrievalSplit(
        query=np.arange(0, 10), train=np.arange(10, 60), database=np.arange(10, 100), unlabeled=np.arange(60, 100)
    )
    held = holdout_split(split, 0.2, seed=0)
    assert len(held.query) == 10 and len(held.train) == 40
    assert not set(held.query) & set(split.query)  # the run's queries are never seen
    assert set(held.query) | set(held.train) == set(split.train) and not set(held.query) & set(held.train)
    np.testing.assert_array_equal(held.database, held.train)
    np.testing.assert_array_equal(held.unlabeled, split.unlabeled)


def test_a_generator_nothing_teaches_is_not_updated_even_with_no_other_part_in_its_group(tiny_config, digits):
    # No Langevin and the prior latent: the generator group holds nothing to train. Its step is
    # skipped (the optimizer's iteration count stays 0) while the descriptor trains on.
    cfg = tiny_config.replace(langevin_steps=0, generator_latent="prior")
    model = make_model(cfg)
    assert model.optimizer_variables("generator") == []
    before = [v.numpy().copy() for v in model.generator.trainable_variables]
    model.fit(digits.subset(np.arange(64)).as_dataset(32, drop_remainder=True), epochs=1, verbose=0)
    assert all(np.array_equal(b, v.numpy()) for b, v in zip(before, model.generator.trainable_variables))
    assert int(model.generator_optimizer.iterations) == 0 and int(model.descriptor_optimizer.iterations) == 2

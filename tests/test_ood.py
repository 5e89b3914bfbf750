"""Out-of-distribution detection: the pinned metrics (against brute force and hand cases), the
`in_distribution` output calibrated at export, and the server's flags on OOD queries."""

import json
import os

import numpy as np
import pytest
import tensorflow as tf

from coophash_keras.metrics.ood import auroc, fpr_at_tpr, ood_metrics, threshold_at_tpr


# ------------------------------------------------------------------------------------ metrics
def brute_auroc(pos, neg):
    """Every (in, out) pair: 1 if the in-distribution score is higher, 1/2 if tied."""
    return float(np.mean([[1.0 if p > n else 0.5 if p == n else 0.0 for n in neg] for p in pos]))


def brute_fpr(pos, neg, tpr):
    """Scan every candidate threshold; keep the highest one whose TPR is at least `tpr`."""
    best = max(t for t in set(pos) if np.mean(np.asarray(pos) >= t) >= tpr)
    return float(np.mean(np.asarray(neg) >= best))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_auroc_and_fpr_match_brute_force_with_ties(seed):
    rng = np.random.default_rng(seed)
    pos = rng.integers(0, 12, 57).astype(float)  # few distinct values: many ties within and across
    neg = rng.integers(-3, 9, 41).astype(float)
    assert auroc(pos, neg) == pytest.approx(brute_auroc(pos, neg), abs=1e-12)
    for tpr in (0.95, 0.9, 0.5, 1.0):
        assert fpr_at_tpr(pos, neg, tpr) == pytest.approx(brute_fpr(pos, neg, tpr), abs=1e-12)


def test_ood_metrics_hand_cases():
    assert auroc([2, 3], [0, 1]) == 1.0
    assert auroc([0, 1], [2, 3]) == 0.0
    assert auroc([1, 1], [1, 1]) == 0.5
    assert auroc([1, 3], [2]) == 0.5  # one pair above, one below
    in_scores = np.arange(1, 21)  # 20 scores: keeping 95% drops exactly the lowest
    assert threshold_at_tpr(in_scores, 0.95) == 2
    assert fpr_at_tpr(in_scores, [0, 1, 2, 30], 0.95) == 0.5  # 2 and 30 pass
    assert threshold_at_tpr(np.arange(1, 101), 0.95) == 6  # 95 of 100 are >= 6
    assert threshold_at_tpr([5.0], 0.95) == 5.0
    # pairs won against out = 0, 1, 2, 30: 20, 19 + a tie, 18 + a tie, 0 -> 58 of 80
    assert ood_metrics(in_scores, [0, 1, 2, 30]) == {"auroc": pytest.approx(58 / 80), "fpr@95tpr": 0.5}
    with pytest.raises(ValueError, match="not finite"):
        auroc([1.0, np.nan], [0.0])
    with pytest.raises(ValueError, match="no out-of-distribution"):
        auroc([1.0], [])
    with pytest.raises(ValueError, match="true-positive rate"):
        threshold_at_tpr([1.0], 0.0)


# ------------------------------------------------------------------------ export's threshold
@pytest.fixture(scope="module")
def calibrated(trained_tiny, digits, tmp_path_factory):
    """The tiny model (trained on digits 0..255) exported with in_distribution calibrated on half of
    the other digits; the other half stays held out to measure the TPR it keeps."""
    from coophash_keras.export import export_saved_model

    held_out = np.random.default_rng(0).permutation(np.arange(256, len(digits.images)))
    calibration, test = held_out[: len(held_out) // 2], held_out[len(held_out) // 2 :]
    base = str(tmp_path_factory.mktemp("models"))
    path = export_saved_model(
        trained_tiny[1],
        base,
        "coophash",
        database_images=digits.images[300:700],
        database_ids=np.arange(300, 700),
        search_k=5,
        ood_images=digits.images[calibration],
        warmup=False,
    )
    return base, path, calibration, test


def sampling_tolerance(tpr, n_calibration, n_test):
    """3 standard deviations of the difference between the share kept of two independent samples
    of held-out images at rate `tpr` (binomial): about 3 points at 0.95 and 770 + 770 digits, 6 at
    0.8. A threshold set from the wrong tail or the wrong quantile misses by far more; a fixed 3
    points would fail at 0.8 on some CPUs' trained weights by sampling alone."""
    return 3 * np.sqrt(tpr * (1 - tpr) * (1 / n_calibration + 1 / n_test))


def test_in_distribution_keeps_the_asked_tpr_on_held_out_images(calibrated, trained_tiny, digits):
    from coophash_keras.export import HashingExportModule, load_hashing_network
    from coophash_keras.export.saved_model import calibrate_ood_threshold

    _, path, calibration, test = calibrated
    info = json.load(open(os.path.join(path, "assets.extra", "coophash.json")))["ood"]
    assert info["tpr"] == 0.95 and info["calibration_images"] == len(calibration)
    loaded = tf.saved_model.load(path)
    assert float(loaded.ood_threshold[0].numpy()) == pytest.approx(info["threshold"])
    out = loaded.signatures["serving_default"](images=tf.constant(digits.images[test]))
    kept = float(np.mean(out["in_distribution"].numpy()))
    tolerance = sampling_tolerance(0.95, len(calibration), len(test))
    assert abs(kept - 0.95) <= tolerance, f"in_distribution kept {kept:.3f} of held-out images at an asked TPR of 0.95"
    np.testing.assert_array_equal(out["in_distribution"].numpy(), out["energy"].numpy() >= info["threshold"])
    # another operating point, through the same calibration
    network, cfg = load_hashing_network(trained_tiny[1])
    assert info["energy"].startswith(f"{network.served_energy}: ")  # the metadata names the served score
    module = HashingExportModule(network, cfg["image_shape"], cfg["num_bits"])
    threshold, on_calibration = calibrate_ood_threshold(module, digits.images[calibration], 0.8)
    assert on_calibration >= 0.8
    energy = module.serve(tf.constant(digits.images[test]))["energy"].numpy()
    assert abs(np.mean(energy >= threshold) - 0.8) <= sampling_tolerance(0.8, len(calibration), len(test))
    with pytest.raises(ValueError, match="at least 20 held-out images"):
        calibrate_ood_threshold(module, digits.images[:10], 0.95)


def test_calibrated_export_only_adds_outputs(calibrated, trained_tiny, tmp_path, digits):
    """The contract of an uncalibrated export stays whole: the same outputs with the same dtypes and
    values; calibration only adds in_distribution (and energy to search)."""
    from coophash_keras.export import export_saved_model

    _, path, _, _ = calibrated
    plain = tf.saved_model.load(export_saved_model(trained_tiny[1], str(tmp_path), "coophash", warmup=False))
    loaded = tf.saved_model.load(path)
    images = tf.constant(digits.images[:16])
    old, new = plain.signatures["serving_default"](images=images), loaded.signatures["serving_default"](images=images)
    assert set(old) == {"codes", "packed", "energy", "class_probs"}
    assert set(new) == set(old) | {"in_distribution"} and new["in_distribution"].dtype == tf.bool
    for key in old:
        assert new[key].dtype == old[key].dtype
        np.testing.assert_allclose(new[key].numpy(), old[key].numpy(), rtol=1e-6, atol=1e-6)
    search = loaded.signatures["search"](images=images)
    assert set(search) == {"ids", "distances", "codes", "packed", "energy", "in_distribution"}
    np.testing.assert_array_equal(search["in_distribution"].numpy(), new["in_distribution"].numpy())


def test_server_flags_ood_queries_and_shows_the_threshold(calibrated, trained_tiny, digits, tmp_path):
    from test_serving import http

    from coophash_keras.index import HammingIndex
    from coophash_keras.io import model_fingerprint
    from coophash_keras.serving.server import ModelServer

    base, _, _, _ = calibrated
    model, path = trained_tiny
    index_path = str(tmp_path / "db.idx")
    HammingIndex(16, model_fingerprint(path)).add(
        model.encode(digits.images[500:900], packed=True), np.arange(500, 900)
    ).save(index_path)
    noise = np.random.default_rng(0).integers(0, 256, (8, 8, 8, 1), dtype=np.uint8)
    queries = np.concatenate([digits.images[1000:1008], noise])
    with ModelServer(base, port=0, indexes={"coophash": index_path}) as srv:
        status, meta = http(srv, "GET", "/v1/models/coophash/metadata")
        assert status == 200 and meta["metadata"]["ood"]["tpr"] == 0.95 and "threshold" in meta["metadata"]["ood"]
        status, pred = http(srv, "POST", "/v1/models/coophash:predict", {"instances": queries.tolist()})
        assert status == 200
        inside = [p["in_distribution"] for p in pred["predictions"]]
        assert inside == [p["energy"] >= meta["metadata"]["ood"]["threshold"] for p in pred["predictions"]]
        status, body = http(srv, "POST", "/v1/models/coophash:search", {"instances": queries.tolist(), "k": 3})
        assert status == 200, body
        assert [r["ood"] for r in body["results"]] == [not i for i in inside]
        assert all(len(r["ids"]) == 3 for r in body["results"])  # flagged, not dropped


# -------------------------------------------------------------------- the benchmark's tables
def fake_record(model, seed, served, file):
    """A bench_ood.py record with one OOD set whose served AUROC is `served`."""
    q = list(np.linspace(0, 1, 101))
    score = {"auroc": served, "fpr@95tpr": 1 - served, "flagged": served, "percentiles": q}
    return {
        "file": file,
        "run_dir": f"runs/{file}",
        "dataset": "digits",
        "model": model,
        "method": model,
        "seed": seed,
        "scores": ["energy"],
        "in_distribution": {"energy": q},
        "decision": {"energy": {"tpr_held_out": 0.95, "test_images": 100}},
        "sets": {
            "uniform_noise": {"group": "far", "energy": score},
            "gaussian_noise": {"group": "far", "energy": score},
        },
        "machine": {"cpu": "cpu"},
        "alone": {"alone": True},
        "command": "bench_ood.py",
    }


def test_ood_tables_aggregate_seeds_and_compare_coophash_with_the_best_other_model():
    import sys

    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks"))
    import ood_tables

    runs = [
        fake_record("coophash", 0, 0.6, "a"),
        fake_record("coophash", 1, 0.8, "b"),
        fake_record("orthohash", 0, 0.9, "c"),
        fake_record("csq", 0, 0.7, "d"),
    ]
    text = ood_tables.document(runs)
    assert "| `coophash` | served `energy` | 0,1 | 0.700 ± 0.141 | 0.700 ± 0.141 |" in text
    # seed 0: CoopHash 0.6 against the best other, orthohash's 0.9; seed 1 has no other model
    assert "| digits | 0 | `coophash` | uniform_noise | 0.600 | 0.900 (`orthohash`) | -0.300 |" in text
    assert "| digits | 1 |" not in text
    assert ood_tables.document(runs) == text  # no time stamps, no order dependence
    # two CoopHash methods of one seed: a row each against the same best other model
    variant = {**fake_record("coophash", 0, 0.95, "e"), "method": "coophash:noise_chains"}
    text = ood_tables.document(runs + [variant])
    assert "| digits | 0 | `coophash` | uniform_noise | 0.600 | 0.900 (`orthohash`) | -0.300 |" in text
    assert "| digits | 0 | `coophash:noise_chains` | uniform_noise | 0.950 | 0.900 (`orthohash`) | +0.050 |" in text


# ------------------------------------------------------------------------- the served score
def _without_served_energy(src, dst):
    """A copy of a .keras file as saved before config.served_energy existed."""
    import zipfile

    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for item in zin.infolist():
            data = zin.read(item.filename)
            if item.filename == "config.json":
                saved = json.loads(data)
                saved["config"]["config"].pop("served_energy")
                saved["config"]["network"]["config"].pop("served_energy")
                data = json.dumps(saved).encode()
            zout.writestr(item, data)


def test_coophash_serves_the_score_its_config_names_and_old_models_keep_their_energy_head(
    tiny_config, digits, tmp_path
):
    from coophash_keras import CoopHash
    from coophash_keras.export import HashingExportModule, load_hashing_network
    from coophash_keras.io import load_model, save_model
    from coophash_keras.preprocessing import normalize_images

    model = CoopHash(tiny_config.replace(served_energy="class_free_energy"))
    model.compile()
    images = digits.images[:16]
    out = model.hash_network.serving_outputs(normalize_images(tf.constant(images)))
    np.testing.assert_allclose(out["energy"], tf.reduce_logsumexp(out["class_logits"], -1), rtol=1e-5, atol=1e-5)
    head = tf.reduce_logsumexp(model.hash_network.class_energies(normalize_images(tf.constant(images))), -1)
    np.testing.assert_allclose(out["energy_head"], head, rtol=1e-5, atol=1e-5)
    assert not np.allclose(out["energy"], out["energy_head"])
    path = str(tmp_path / "free_energy.keras")
    save_model(model, path)
    assert load_model(path).hash_network.served_energy == "class_free_energy"
    network, cfg = load_hashing_network(path)
    served = HashingExportModule(network, cfg["image_shape"], cfg["num_bits"]).serve(tf.constant(images))
    assert set(served) == {"codes", "packed", "energy", "class_probs"}  # the contract: same outputs
    np.testing.assert_allclose(served["energy"], out["energy"], rtol=1e-5, atol=1e-5)
    # saved before the field existed: the energy head, through Keras and through export alike
    legacy = str(tmp_path / "legacy.keras")
    _without_served_energy(path, legacy)
    assert load_model(legacy).hash_network.served_energy == "energy_head"
    network, cfg = load_hashing_network(legacy)
    served = HashingExportModule(network, cfg["image_shape"], cfg["num_bits"]).serve(tf.constant(images))
    np.testing.assert_allclose(served["energy"], out["energy_head"], rtol=1e-5, atol=1e-5)


def test_min_z_serves_the_smaller_standardised_score_with_statistics_saved_and_exported(tiny_config, digits, tmp_path):
    from coophash_keras import CoopHash
    from coophash_keras.export import HashingExportModule, load_hashing_network
    from coophash_keras.io import load_model, save_model
    from coophash_keras.preprocessing import normalize_images

    model = CoopHash(tiny_config.replace(served_energy="min_z"))
    model.compile()
    train, queries = digits.images[:300], digits.images[300:340]
    stats = model.fit_score_statistics(train)
    out = model.hash_network.serving_outputs(normalize_images(tf.constant(train)))
    head, free = np.asarray(out["energy_head"]), np.asarray(tf.reduce_logsumexp(out["class_logits"], -1))
    np.testing.assert_allclose(stats, [[head.mean(), head.std()], [free.mean(), free.std()]], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(model.hash_network.score_statistics.numpy(), stats, rtol=1e-6)
    expected = np.minimum((head - head.mean()) / head.std(), (free - free.mean()) / free.std())
    np.testing.assert_allclose(out["energy"], expected, rtol=1e-4, atol=1e-4)
    assert abs(np.median(out["energy"])) < 1.5 and np.asarray(out["energy"]).max() <= expected.max() + 1e-4
    path = str(tmp_path / "min_z.keras")
    save_model(model, path)
    served = model.hash_network.serving_outputs(normalize_images(tf.constant(queries)))["energy"]
    np.testing.assert_allclose(
        load_model(path).hash_network.serving_outputs(normalize_images(tf.constant(queries)))["energy"],
        served,
        rtol=1e-5,
        atol=1e-5,
    )
    network, cfg = load_hashing_network(path)
    exported = HashingExportModule(network, cfg["image_shape"], cfg["num_bits"]).serve(tf.constant(queries))
    np.testing.assert_allclose(exported["energy"], served, rtol=1e-5, atol=1e-5)
    assert CoopHash(tiny_config).fit_score_statistics(train) is None  # nothing to fit for another score


def test_coophash_train_sets_the_min_z_statistics_from_the_training_images(tmp_path):
    from coophash_keras.data import load_digits
    from coophash_keras.io import load_model
    from coophash_keras.runs import RunSpec, train_run

    overrides = dict(served_energy="min_z", base_filters=8, feature_dim=32, latent_dim=8, generator_filters=16)
    spec = RunSpec(run_dir=str(tmp_path / "run"), epochs=1, steps_per_epoch=2, bits=16, overrides=overrides)
    result = train_run(spec)
    stats = result.model.hash_network.score_statistics.numpy()
    assert not np.allclose(stats, [[0.0, 1.0], [0.0, 1.0]]) and np.all(stats[:, 1] > 0)
    split = np.load(tmp_path / "run" / "split.npz")
    expected = result.model.fit_score_statistics(load_digits().images[split["train"]])
    np.testing.assert_allclose(stats, expected, rtol=1e-5)  # the training images, not the queries
    np.testing.assert_allclose(load_model(str(tmp_path / "run" / "model.keras")).hash_network.score_statistics, stats)

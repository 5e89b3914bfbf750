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
def fake_record(model, seed, served, file, dataset="digits", scores=("energy",), near=()):
    """A bench_ood.py record whose OOD sets (two noise sets, and `near` ones) have AUROC `served`
    for every score."""
    q = list(np.linspace(0, 1, 101))
    score = {"auroc": served, "fpr@95tpr": 1 - served, "flagged": served, "percentiles": q}
    sets = {name: "far" for name in ("uniform_noise", "gaussian_noise")} | {name: "near" for name in near}
    return {
        "file": file,
        "run_dir": f"runs/{file}",
        "dataset": dataset,
        "model": model,
        "method": model,
        "seed": seed,
        "scores": list(scores),
        "in_distribution": {k: q for k in scores},
        "decision": {k: {"tpr_held_out": 0.95, "test_images": 100} for k in scores},
        "sets": {name: {"group": group, **{k: score for k in scores}} for name, group in sets.items()},
        "machine": {"cpu": "cpu"},
        "alone": {"alone": True},
        "command": "bench_ood.py",
    }


def test_ood_tables_aggregate_seeds_and_compare_coophash_with_the_best_other_model():
    _benchmarks()
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


def _benchmarks():
    import sys

    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks"))


def test_ood_tables_give_multi_label_runs_their_own_section_with_their_scores():
    _benchmarks()
    import ood_tables

    multi = ("energy", "free_energy", "joint_energy", "max_sigmoid")
    runs = [
        fake_record("coophash", 0, 0.6, "a"),
        fake_record("orthohash", 0, 0.9, "b"),
        fake_record("coophash", 0, 0.7, "c", "fashion_mosaics", multi, near=("single_items",)),
        fake_record("orthohash", 0, 0.8, "d", "fashion_mosaics", multi, near=("single_items",)),
    ]
    text = ood_tables.document(runs)
    digits, mosaics = text.split("#### digits")[1], text.split("#### fashion_mosaics")[1]
    assert "single_items (near)" in mosaics.split("####")[0] and "single_items" not in digits.split("####")[0]
    for name in ("joint energy Σ softplus(class logits)", "max sigmoid"):
        assert f"| `coophash` | {name} | 0 | 0.700 | 0.700 | 0.700 |" in mosaics
    assert "max softmax" not in text
    assert "| fashion_mosaics | 0 | `coophash` | single_items | 0.700 | 0.800 (`orthohash`) | -0.100 |" in text
    assert ood_tables.plot_names(runs) == ["ood_hist_digits.png", "ood_hist_fashion_mosaics.png"]


# ------------------------------------------------------------------- the benchmark's scores
def test_class_logit_scores_by_hand():
    """Single-label: the free energy and the max softmax; multi-label: JointEnergy (sum of
    softplus) and the max sigmoid beside the free energy, and no max softmax."""
    _benchmarks()
    from bench_ood import class_logit_scores

    logits = [[0.0, 0.0], [2.0, -1.0]]
    lse = [np.log(2.0), np.log(np.exp(2.0) + np.exp(-1.0))]
    single = class_logit_scores(logits)
    assert list(single) == ["free_energy", "msp"]
    np.testing.assert_allclose(single["free_energy"], lse, rtol=1e-12)
    np.testing.assert_allclose(single["msp"], [0.5, np.exp(2.0) / (np.exp(2.0) + np.exp(-1.0))], rtol=1e-12)
    multi = class_logit_scores(logits, multi_label=True)
    assert list(multi) == ["free_energy", "joint_energy", "max_sigmoid"]
    np.testing.assert_allclose(multi["free_energy"], lse, rtol=1e-12)
    joint = [2 * np.log(2.0), np.log(1 + np.exp(2.0)) + np.log(1 + np.exp(-1.0))]
    np.testing.assert_allclose(multi["joint_energy"], joint, rtol=1e-12)
    np.testing.assert_allclose(multi["max_sigmoid"], [0.5, 1 / (1 + np.exp(-2.0))], rtol=1e-12)
    # large logits: no overflow (softplus(1000) = 1000, softplus(-1000) = 0)
    big = class_logit_scores([[1000.0, -1000.0]], multi_label=True)
    np.testing.assert_allclose(big["joint_energy"], [1000.0], rtol=1e-12)
    np.testing.assert_allclose(big["max_sigmoid"], [1.0], rtol=1e-12)


def test_split_spread_of_the_held_out_tpr():
    _benchmarks()
    from bench_ood import split_spread

    scores = np.random.default_rng(0).normal(size=1000)
    spread = split_spread(scores, 100)
    assert spread["splits"] == 100 and spread["p5"] <= spread["median"] <= spread["p95"]
    assert abs(spread["median"] - 0.95) < 0.01 and spread["within_3_points"] > 0.8
    # many tied scores: a threshold keeps all of a tie, so the kept share is far above the asked one
    tied = np.concatenate([np.zeros(900), np.ones(100)])
    assert split_spread(tied, 20)["median"] == 1.0


def test_bench_ood_single_label_scores_keep_their_names_and_values(trained_tiny, digits):
    _benchmarks()
    from bench_ood import model_scores
    from scipy.special import logsumexp, softmax

    from coophash_keras.preprocessing import normalize_images

    model, _ = trained_tiny
    images = digits.images[:40]
    scores = model_scores(model, images, batch=16)
    assert list(scores) == ["energy", "free_energy", "msp", "energy_head"]  # serves class_free_energy
    logits = np.asarray(model.hash_network.serving_outputs(normalize_images(tf.constant(images)))["class_logits"])
    np.testing.assert_allclose(scores["free_energy"], logsumexp(logits.astype(np.float64), axis=1), rtol=1e-6)
    np.testing.assert_allclose(scores["msp"], softmax(logits.astype(np.float64), axis=1).max(axis=1), rtol=1e-6)


@pytest.fixture(scope="module")
def multi_label_run(tmp_path_factory, digits):
    """A 2-step CoopHash run on 2x2 mosaics of digits (16x16, multi-hot over 10 classes)."""
    from coophash_keras.data.mosaics import make_mosaics
    from coophash_keras.runs import RunSpec, train_run

    base = tmp_path_factory.mktemp("mosaics")
    images, labels = make_mosaics(digits.images, digits.labels, 10)
    np.savez(base / "mosaics.npz", images=images, labels=labels)
    # served_energy pinned to the free energy (JointEnergy here), as the mosaics' benchmark runs were
    # trained; the default for multi-label models, min_z, has its own test
    overrides = dict(
        base_filters=8,
        feature_dim=32,
        latent_dim=8,
        generator_filters=16,
        langevin_steps=2,
        served_energy="class_free_energy",
    )
    spec = RunSpec(
        run_dir=str(base / "run"),
        dataset=f"npz:{base / 'mosaics.npz'}",
        epochs=1,
        steps_per_epoch=2,
        bits=16,
        batch_size=32,
        query_per_class=3,
        overrides=overrides,
    )
    result = train_run(spec)
    assert result.model.config.multi_label
    return spec.run_dir, result.model


def test_bench_ood_scores_a_multi_label_run_by_joint_energy_and_max_sigmoid(multi_label_run):
    _benchmarks()
    from bench_ood import evaluate, model_scores

    from coophash_keras.evaluation import load_run, load_run_data
    from coophash_keras.preprocessing import normalize_images

    run_dir, model = multi_label_run
    data = load_run_data(load_run(run_dir))
    images = data.images[:20]
    scores = model_scores(model, images)
    assert list(scores) == ["energy", "free_energy", "joint_energy", "max_sigmoid", "energy_head"]
    logits = np.asarray(model.hash_network.serving_outputs(normalize_images(tf.constant(images)))["class_logits"])
    logits = logits.astype(np.float64)
    np.testing.assert_allclose(scores["joint_energy"], np.log1p(np.exp(logits)).sum(axis=1), rtol=1e-6)
    np.testing.assert_allclose(scores["max_sigmoid"], (1 / (1 + np.exp(-logits))).max(axis=1), rtol=1e-6)
    # the served score of a multi-label model is its free energy over label sets: JointEnergy
    np.testing.assert_allclose(scores["energy"], scores["joint_energy"], rtol=1e-5, atol=1e-5)
    assert not np.allclose(scores["energy"], scores["free_energy"], rtol=1e-3)
    record = evaluate(run_dir)
    assert {"energy", "free_energy", "joint_energy", "max_sigmoid"} <= set(record["scores"])
    assert "msp" not in record["scores"] and "msp" not in json.dumps(record)
    for entry in record["sets"].values():
        assert {"joint_energy", "max_sigmoid"} <= set(entry) and "msp" not in entry
        assert 0.0 <= entry["joint_energy"]["auroc"] <= 1.0


def test_fashion_mosaics_ood_sets_include_digits_and_single_items():
    _benchmarks()
    from bench_ood import ood_sets

    from coophash_keras.data.loaders import FASHION_MNIST_DIR

    if not os.path.exists(os.path.join(FASHION_MNIST_DIR, "t10k-images-idx3-ubyte.gz")):
        pytest.skip(f"no Fashion-MNIST in {FASHION_MNIST_DIR}")
    queries = np.random.default_rng(0).integers(0, 256, (12, 56, 56, 1), dtype=np.uint8)
    sets = ood_sets(queries, (56, 56, 1), "fashion_mosaics", None, 0)
    assert sets["other_dataset"][0] == "far" and sets["single_items"][0] == "near"
    assert {"uniform_noise", "gaussian_noise", "upside_down", "rotate90", "noise", "occlusion"} <= set(sets)
    for name, (_, images) in sets.items():
        assert images.shape == (12, 56, 56, 1) and images.dtype == np.uint8, name
    assert sets["single_items"][1].std() > 0 and not np.array_equal(sets["single_items"][1], sets["other_dataset"][1])
    assert "single_items" not in ood_sets(queries[:, :8, :8], (8, 8, 1), "digits", None, 0)


# ------------------------------------------------------------------------- the served score
def test_energy_score_is_the_free_energy_of_the_label_model_by_hand():
    from coophash_keras.models.networks import energy_score

    logits = np.array([[0.0, 0.0], [2.0, -1.0], [80.0, 80.0]], np.float32)
    # softmax: log sum_c exp l_c; independent sigmoids: sum over label sets = sum_c log(1 + exp l_c)
    single = [np.log(2.0), np.log(np.exp(2.0) + np.exp(-1.0)), 80.0 + np.log(2.0)]
    multi = [2 * np.log(2.0), np.log1p(np.exp(2.0)) + np.log1p(np.exp(-1.0)), 160.0]
    np.testing.assert_allclose(energy_score(logits), single, rtol=1e-5)
    np.testing.assert_allclose(energy_score(logits, multi_label=True), multi, rtol=1e-5)


def _without_network_field(src, dst, field):
    """A copy of a .keras file whose saved network config lacks `field` (saved before it existed)."""
    import zipfile

    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for item in zin.infolist():
            data = zin.read(item.filename)
            if item.filename == "config.json":
                saved = json.loads(data)
                saved["config"]["network"]["config"].pop(field)
                data = json.dumps(saved).encode()
            zout.writestr(item, data)


def test_a_multi_label_export_serves_joint_energy_also_from_a_network_saved_without_the_field(
    multi_label_run, tmp_path
):
    from coophash_keras.evaluation import load_run, load_run_data
    from coophash_keras.export import HashingExportModule, load_hashing_network
    from coophash_keras.io import save_model
    from coophash_keras.preprocessing import normalize_images

    run_dir, model = multi_label_run
    images = np.asarray(load_run_data(load_run(run_dir)).images[:12])
    path = str(tmp_path / "mosaics.keras")
    save_model(model, path)
    legacy = str(tmp_path / "legacy.keras")
    _without_network_field(path, legacy, "multi_label")
    for source in (path, legacy):
        network, cfg = load_hashing_network(source)
        assert network.multi_label
        served = HashingExportModule(network, cfg["image_shape"], cfg["num_bits"], True).serve(tf.constant(images))
        logits = network.serving_outputs(normalize_images(tf.constant(images)))["class_logits"]
        logits = np.asarray(logits, np.float64)
        np.testing.assert_allclose(served["energy"], np.logaddexp(0.0, logits).sum(axis=1), rtol=1e-4, atol=1e-4)


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


def test_served_energy_auto_is_min_z_with_joint_energy_for_multi_label_and_the_free_energy_otherwise(
    tiny_config, digits, tmp_path
):
    # 'auto' resolves by the kind of labels, is saved resolved, and a multi-label model's min_z
    # standardises JointEnergy: the served score equals ood_combination.py's offline min_z, by
    # which docs/OOD.md chose it
    _benchmarks()
    from ood_combination import combine, head_and_free_energy

    from coophash_keras import CoopHash
    from coophash_keras.data.mosaics import make_mosaics
    from coophash_keras.export import HashingExportModule, load_hashing_network
    from coophash_keras.io import load_model, save_model
    from coophash_keras.preprocessing import normalize_images

    assert tiny_config.served_energy == "auto"
    assert CoopHash(tiny_config).config.served_energy == "class_free_energy"
    images, _ = make_mosaics(digits.images, digits.labels, 10)
    model = CoopHash(tiny_config.replace(image_shape=images.shape[1:], multi_label=True))
    model.compile()
    assert model.config.served_energy == "min_z" and model.hash_network.served_energy == "min_z"
    train, queries = images[:200], images[200:240]
    stats = model.fit_score_statistics(train)
    offline_train = head_and_free_energy(model, train)
    by_hand = {k: (float(np.mean(v)), float(np.std(v))) for k, v in offline_train.items()}
    np.testing.assert_allclose(stats, [by_hand["energy_head"], by_hand["free_energy"]], rtol=1e-4, atol=1e-5)
    served = np.asarray(model.hash_network.serving_outputs(normalize_images(tf.constant(queries)))["energy"])
    np.testing.assert_allclose(served, combine(head_and_free_energy(model, queries), by_hand)["min_z"], atol=1e-4)
    logits = np.asarray(model.hash_network.serving_outputs(normalize_images(tf.constant(train)))["class_logits"])
    assert not np.allclose(by_hand["free_energy"][0], np.mean(np.log(np.exp(logits).sum(axis=1))), rtol=1e-3)
    path = str(tmp_path / "auto.keras")
    save_model(model, path)
    assert load_model(path).config.served_energy == "min_z"  # saved resolved
    network, cfg = load_hashing_network(path)
    assert cfg["served_energy"] == "min_z"
    exported = HashingExportModule(network, cfg["image_shape"], cfg["num_bits"], True).serve(tf.constant(queries))
    np.testing.assert_allclose(exported["energy"], served, rtol=1e-5, atol=1e-5)


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

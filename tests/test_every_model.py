"""What every model of the registry passes: adding a model to coophash_keras.registry is all it
takes for it to be covered. One training run per model (a module-scoped fixture, through the
library run function that `coophash train` calls), then one test per stage, so that a failure
names its stage: .keras round trip with identical codes -> resume from a backup -> export -> a
REST predict and search on our TF-Serving-compatible server -> `coophash index build` and `index
search` -> one keras-tuner trial."""

import json
from types import SimpleNamespace

import keras
import numpy as np
import pytest

from coophash_keras.registry import model_names

pytestmark = pytest.mark.slow  # every model trained several times: minutes

SMALL = {"base_filters": 8, "feature_dim": 32, "latent_dim": 8, "generator_filters": 16, "langevin_steps": 2}


class _Preempted(Exception):
    pass


class _PreemptAfterFirstEpoch(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        raise _Preempted()


def _spec(run_dir, name, **changes):
    from coophash_keras.runs import RunSpec

    values = dict(
        run_dir=str(run_dir),
        dataset="digits",
        model=name,
        bits=16,
        epochs=2,
        steps_per_epoch=3,
        batch_size=32,
        query_per_class=5,
        labels_per_class=20,
        overrides=dict(SMALL),
        verbose=0,
    )
    values.update(changes)
    return RunSpec(**values)


@pytest.fixture(scope="module", params=model_names())
def trained(request, tmp_path_factory):
    """One model trained a few steps: its name, run directory and RunResult."""
    from coophash_keras.runs import train_run

    name = request.param
    run = tmp_path_factory.mktemp(name) / "run"
    return SimpleNamespace(name=name, run=run, result=train_run(_spec(run, name)))


@pytest.fixture(scope="module")
def exported(trained, digits):
    """The trained model exported for TF-Serving with its run's database embedded."""
    from coophash_keras.data import RetrievalSplit
    from coophash_keras.export import export_saved_model

    split = RetrievalSplit.load(str(trained.run / "split.npz"))
    base = trained.run.parent / "models"
    export_saved_model(
        str(trained.run / "model.keras"),
        str(base),
        trained.name,
        database_images=digits.images[split.database],
        database_ids=split.database,
        search_k=5,
    )
    return SimpleNamespace(base=base, split=split)


def test_train(trained):
    assert (trained.run / "model.keras").exists() and (trained.run / "run.json").exists()
    assert trained.result.history and all(np.all(np.isfinite(v)) for v in trained.result.history.values())


def test_save_and_reload_give_identical_codes(trained, digits):
    loaded = keras.models.load_model(str(trained.run / "model.keras"))
    assert type(loaded) is type(trained.result.model)
    np.testing.assert_array_equal(loaded.encode(digits.images[:64]), trained.result.model.encode(digits.images[:64]))


def test_resume_after_preemption(trained, tmp_path):
    """Preempted after epoch 1, the same run resumes at epoch 2 with every optimizer continued. A
    model fitted in closed form (itq, lsh) has one epoch: preempted in it, the re-run fits it whole."""
    from coophash_keras.runs import train_run

    backup = tmp_path / "backup"
    spec = _spec(tmp_path / "resumed", trained.name, backup_dir=str(backup))
    with pytest.raises(_Preempted):
        train_run(spec, extra_callbacks=[_PreemptAfterFirstEpoch()])
    resumed = train_run(_spec(tmp_path / "resumed", trained.name, backup_dir=str(backup)))
    if resumed.model.fitted_in_closed_form:
        epochs = [json.loads(line)["epoch"] for line in open(tmp_path / "resumed" / "progress.jsonl")]
        assert epochs == [0] and not backup.exists()
        np.testing.assert_array_equal(
            resumed.model.encode(np.zeros((2, 8, 8, 1), np.uint8)),
            trained.result.model.encode(np.zeros((2, 8, 8, 1), np.uint8)),
        )
        return
    assert all(int(o.iterations) == 2 * 3 for o in resumed.model.optimizers.values())
    epochs = [json.loads(line)["epoch"] for line in open(tmp_path / "resumed" / "progress.jsonl")]
    assert epochs == [0, 1]  # epoch 0 from the first process, epoch 1 from the resumed one


def test_export(trained, exported):
    assert (exported.base / trained.name / "1" / "saved_model.pb").exists()


def test_serve_predict_and_search(trained, exported, digits):
    """One REST predict and one search from PNG bytes on our TF-Serving-compatible server."""
    from coophash_keras.serving.client import RestClient
    from coophash_keras.serving.server import ModelServer

    with ModelServer(str(exported.base), port=0, grpc_port=None) as server:
        client = RestClient(server.url, trained.name)
        out = client.hash_images(digits.images[:3])
        np.testing.assert_array_equal(np.asarray(out["codes"]), trained.result.model.encode(digits.images[:3]))
        assert np.asarray(out["class_probs"]).shape == (3, 10) and np.all(np.isfinite(out["energy"]))
        query = digits.images[exported.split.query[0]]
        found = client.predict({"signature_name": "search_image_bytes", "instances": [{"b64": _png_b64(query)}]})
        ids = found["predictions"][0]["ids"]
        assert len(ids) == 5 and set(ids) <= set(exported.split.database.tolist())


def test_index_build_and_search(trained, tmp_path, digits, capsys):
    """Through the command line (in this process)."""
    from coophash_keras.cli import main as coophash
    from coophash_keras.data import RetrievalSplit

    split = RetrievalSplit.load(str(trained.run / "split.npz"))
    index = tmp_path / "db.idx"
    assert coophash(["index", "build", "--model", str(trained.run), "--split", "database", "--out", str(index)]) == 0
    png = tmp_path / "q.png"
    _save_png(digits.images[split.query[0]], png)
    capsys.readouterr()
    assert coophash(["index", "search", "--index", str(index), "--model", str(trained.run), "--k", "3", str(png)]) == 0
    assert "ids=[" in capsys.readouterr().out


def test_tune_one_trial(trained, tmp_path):
    """One keras-tuner trial over the model's own tunable fields (a model fitted in closed form has
    none, and says so)."""
    from coophash_keras.run_spec import RunError
    from coophash_keras.tuning import tune_run

    if not trained.result.model.tunable_fields:
        with pytest.raises(RunError, match="nothing to tune"):
            tune_run(_spec(tmp_path / "tune", trained.name, epochs=1), trials=1)
        return

    summary = tune_run(_spec(tmp_path / "tune", trained.name, epochs=1), trials=1)
    assert len(summary["trials"]) == 1 and 0 <= summary["best_val_map"] <= 1
    assert set(summary["best_hyperparameters"]) == set(trained.result.model.tunable_fields)


def _png_b64(image):
    import base64
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(image[..., 0]).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def _save_png(image, path):
    from PIL import Image

    Image.fromarray(image[..., 0]).save(path)

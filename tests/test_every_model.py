"""One test that every model of the registry passes: adding a model to coophash_keras.registry is
all it takes for it to be covered. Train a few steps through the library run function (what
`coophash train` calls) -> .keras round trip with identical codes -> resume from a backup ->
export -> a REST predict and search on our TF-Serving-compatible server -> `coophash index
build` and `index search` -> one keras-tuner trial."""

import json

import keras
import numpy as np
import pytest

from coophash_keras.registry import model_names

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


@pytest.mark.parametrize("name", model_names())
def test_every_model_trains_saves_resumes_exports_serves_indexes_and_tunes(name, tmp_path, digits, capsys):
    from coophash_keras.cli import main as coophash
    from coophash_keras.export import export_saved_model
    from coophash_keras.runs import train_run
    from coophash_keras.serving.client import RestClient
    from coophash_keras.serving.server import ModelServer
    from coophash_keras.tuning import tune_run

    # train, then a reload in this process gives identical codes
    run = tmp_path / "run"
    result = train_run(_spec(run, name))
    assert all(np.all(np.isfinite(v)) for v in result.history.values())
    loaded = keras.models.load_model(str(run / "model.keras"))
    assert type(loaded) is type(result.model)
    np.testing.assert_array_equal(loaded.encode(digits.images[:64]), result.model.encode(digits.images[:64]))

    # preempted after epoch 1, the same run resumes at epoch 2 with every optimizer continued
    backup = tmp_path / "backup"
    with pytest.raises(_Preempted):
        train_run(
            _spec(tmp_path / "resumed", name, backup_dir=str(backup)), extra_callbacks=[_PreemptAfterFirstEpoch()]
        )
    resumed = train_run(_spec(tmp_path / "resumed", name, backup_dir=str(backup)))
    assert all(int(o.iterations) == 2 * 3 for o in resumed.model.optimizers.values())
    epochs = [json.loads(line)["epoch"] for line in open(tmp_path / "resumed" / "progress.jsonl")]
    assert epochs == [0, 1]  # epoch 0 from the first process, epoch 1 from the resumed one

    # export with the run's database, serve, one REST predict and one search from PNG bytes
    from coophash_keras.data import RetrievalSplit

    split = RetrievalSplit.load(str(run / "split.npz"))
    base = tmp_path / "models"
    export_saved_model(
        str(run / "model.keras"),
        str(base),
        name,
        database_images=digits.images[split.database],
        database_ids=split.database,
        search_k=5,
    )
    with ModelServer(str(base), port=0, grpc_port=None) as server:
        client = RestClient(server.url, name)
        out = client.hash_images(digits.images[:3])
        np.testing.assert_array_equal(np.asarray(out["codes"]), result.model.encode(digits.images[:3]))
        assert np.asarray(out["class_probs"]).shape == (3, 10) and np.all(np.isfinite(out["energy"]))
        found = client.predict(
            {"signature_name": "search_image_bytes", "instances": [{"b64": _png_b64(digits.images[split.query[0]])}]}
        )["predictions"][0]
        assert len(found["ids"]) == 5 and set(found["ids"]) <= set(split.database.tolist())

    # index build and search through the command line (in this process)
    index = tmp_path / "db.idx"
    assert coophash(["index", "build", "--model", str(run), "--split", "database", "--out", str(index)]) == 0
    png = tmp_path / "q.png"
    _save_png(digits.images[split.query[0]], png)
    capsys.readouterr()
    assert coophash(["index", "search", "--index", str(index), "--model", str(run), "--k", "3", str(png)]) == 0
    assert "ids=[" in capsys.readouterr().out

    # one keras-tuner trial over the model's own tunable fields
    summary = tune_run(_spec(tmp_path / "tune", name, epochs=1), trials=1)
    assert len(summary["trials"]) == 1 and 0 <= summary["best_val_map"] <= 1
    assert set(summary["best_hyperparameters"]) == set(result.model.tunable_fields)


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

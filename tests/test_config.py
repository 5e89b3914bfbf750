import dataclasses

import pytest

from coophash_keras import CoopHashConfig


@pytest.mark.parametrize("bits", [0, 12, 33, -8])
def test_bits_must_be_positive_multiple_of_8(bits):
    with pytest.raises(ValueError, match="multiple of 8"):
        CoopHashConfig(num_bits=bits)


@pytest.mark.parametrize(
    "change,match",
    [
        (dict(image_shape=(8, 8)), "image_shape"),
        (dict(image_shape=(2, 2, 1)), "at least 4x4"),
        (dict(num_classes=1), "num_classes"),
        (dict(langevin_step_size=0), "step_size"),
        (dict(reconstruction_reduction="max"), "reconstruction_reduction"),
        (dict(langevin_steps="abc"), "langevin_steps must be int, got 'abc'"),
        (dict(langevin_steps=2.5), "langevin_steps must be int"),
        (dict(langevin_steps=-1), "langevin_steps must be >= 0"),
        (dict(multi_label="yes"), "multi_label must be bool"),
        (dict(descriptor_learning_rate=float("nan")), "descriptor_learning_rate must be a number"),
        (dict(langevin_clip_update=-0.1), "langevin_clip_update must be > 0.0"),
        (dict(base_pooling="median"), "base_pooling must be one of"),
        (dict(adam_beta_1=1.5), "adam_beta_1 must be <= 0.999"),
        (dict(base_dropout=True), "base_dropout must be float"),
    ],
)
def test_invalid_values_are_named(change, match):
    with pytest.raises(ValueError, match=match):
        CoopHashConfig(**change)


def test_optional_fields_take_none_and_ints_are_floats():
    c = CoopHashConfig(langevin_clip_update=None, adam_beta_1=None, descriptor_learning_rate=1)
    assert c.langevin_clip_update is None and c.descriptor_learning_rate == 1


def test_round_trip_and_unknown_fields(tmp_path):
    c = CoopHashConfig(num_bits=64, image_shape=(28, 28, 1))
    c.to_json(tmp_path / "c.json")
    assert CoopHashConfig.from_json(tmp_path / "c.json") == c
    with pytest.raises(ValueError, match="Unknown CoopHashConfig field"):
        CoopHashConfig.from_dict({"num_bitz": 8})


def test_every_field_has_provenance():
    table = CoopHashConfig.provenance_table()
    for f in dataclasses.fields(CoopHashConfig):
        assert f.metadata["provenance"] in ("paper", "reference", "ours")
        assert f"`{f.name}`" in table


def test_config_doc_is_up_to_date():
    import os
    import sys

    from conftest import REPO

    sys.path.insert(0, os.path.join(REPO, "docs"))
    from make_config_doc import render

    with open(os.path.join(REPO, "docs", "CONFIG.md")) as fh:
        assert fh.read() == render(), "docs/CONFIG.md is stale: run python docs/make_config_doc.py"


def test_models_doc_is_generated_from_the_registry():
    import os
    import sys

    from conftest import REPO

    sys.path.insert(0, os.path.join(REPO, "docs"))
    from make_models_doc import render

    with open(os.path.join(REPO, "docs", "MODELS.md")) as fh:
        assert fh.read() == render(), "docs/MODELS.md is stale: run python docs/make_models_doc.py"

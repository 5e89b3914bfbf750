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
    ],
)
def test_invalid_values_are_named(change, match):
    with pytest.raises(ValueError, match=match):
        CoopHashConfig(**change)


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

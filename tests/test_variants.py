"""Method names (`MODEL`, `MODEL:VARIANT`, `coophash:VARIANT/ABLATION`): what config each resolves
to, and a clear error for a name that is not one."""

import pytest

from coophash_keras import CoopHashConfig
from coophash_keras.config import ABLATIONS
from coophash_keras.run_spec import RunError, RunSpec
from coophash_keras.variants import VARIANTS, ablation_of, method_names, resolve_method, switch_of


def test_every_method_name_resolves_to_a_valid_config():
    base = CoopHashConfig()
    for name in method_names():
        model, changes = resolve_method(name, base)
        assert name.split(":")[0] == model
        base.replace(**changes)  # every change is a known, valid field value


def test_an_ablation_of_a_variant_switches_off_one_thing_and_keeps_the_rest():
    base = CoopHashConfig()
    fewlabels = VARIANTS["coophash"]["fewlabels"]
    expected = {
        "no_pseudo_labels": {"pseudo_label_weight": 0.0},
        "no_synthetic_labels": {"synthetic_classification_weight": 0.0},
        "classifier_beside_codes": {"classifier_input": "features"},
        "no_energy_head": {"nll_weight": 0.0, "energy_l2_weight": 0.0, "langevin_steps": 0, "noise_chains": 0},
        "no_inference_head": {"generator_latent": "prior"},
        # no class signal from the classifier at all: neither on real nor revised images, nor pseudo-labels
        "no_classifier_head": {
            "classification_weight": 0,
            "synthetic_classification_weight": 0,
            "pseudo_label_weight": 0,
        },
        # no pairs at all: neither the triplet on them nor their classification
        "no_generator_pairs": {"triplet_weight": 0.0, "real_triplet_weight": 1.0, "synthetic_classification_weight": 0},
    }
    assert set(expected) == set(ABLATIONS)
    for ablation, switched in expected.items():
        model, changes = resolve_method(f"coophash:fewlabels/{ablation}", base)
        assert model == "coophash" and changes == {**fewlabels, **switched}, ablation
    # an ablation alone applies to the default configuration
    assert resolve_method("coophash:no_pseudo_labels", base) == ("coophash", {"pseudo_label_weight": 0.0})


@pytest.mark.parametrize(
    "name, message",
    [
        ("nope", "the model must be one of"),
        ("coophash:nope", "no coophash variant 'nope'"),
        ("csq:fewlabels", "no csq variant"),
        ("code_classifier:fixmatch/no_energy_head", "only coophash has ablations"),
    ],
)
def test_unknown_names_are_clear_errors(name, message):
    with pytest.raises(ValueError, match=message):
        resolve_method(name, CoopHashConfig())


def test_an_ablation_names_the_configuration_it_switches_a_part_off_in():
    assert ablation_of("coophash:fewlabels/no_energy_head") == "coophash:fewlabels"
    assert ablation_of("coophash:classifier_beside_codes") == "coophash"  # the default's ablation
    assert [ablation_of(m) for m in ("coophash", "coophash:fewlabels", "orthohash", "code_classifier:fixmatch")] == [
        None
    ] * 4
    for name in method_names():  # every name that resolves with ablation changes names its parent
        parent = ablation_of(name)
        if parent is not None:
            _, changes = resolve_method(name, CoopHashConfig())
            assert changes != resolve_method(parent, CoopHashConfig())[1], name


def test_a_switch_names_the_variant_it_is_added_to():
    assert switch_of("coophash:fewlabels+jem") == "coophash:fewlabels"
    assert switch_of("coophash:codes+synth+real") == "coophash:codes+synth"  # the longest variant prefix
    assert switch_of("coophash:codes+synth") == "coophash:codes"
    for name in ("coophash:fewlabels", "coophash", "orthohash", "coophash:fewlabels/no_energy_head"):
        assert switch_of(name) is None, name
    for name in method_names():  # a switch changes its variant's config
        if (parent := switch_of(name)) is not None:
            assert resolve_method(name, CoopHashConfig())[1] != resolve_method(parent, CoopHashConfig())[1], name


def _train_spec(*argv):
    from coophash_keras.cli import build_parser
    from coophash_keras.cli.train import spec_from_args

    args = build_parser().parse_args(["train", "--run-dir", "r", *argv])
    args.keras_verbosity = 0
    return spec_from_args(args)


def _config(spec):
    from types import SimpleNamespace

    from coophash_keras.run_spec import build_config

    return build_config(spec, SimpleNamespace(image_shape=(8, 8, 1), num_classes=10, multi_label=False))


def test_the_cli_takes_a_method_name_and_set_wins_over_its_variant():
    from coophash_keras.cli.common import CLIError

    spec = _train_spec("--method", "coophash:fewlabels", "--set", "nll_weight=0.5", "--set", "langevin_step_size=2")
    assert spec.model == "coophash" and spec.ablation is None and spec.method == "coophash:fewlabels"
    config = _config(spec)
    assert (config.nll_weight, config.langevin_step_size) == (0.5, 2)
    assert (config.classifier_input, config.langevin_steps) == (
        "codes",
        VARIANTS["coophash"]["fewlabels"]["langevin_steps"],
    )
    ablated = _config(_train_spec("--method", "coophash:fewlabels/no_pseudo_labels"))
    assert ablated.pseudo_label_weight == 0.0 and ablated.classifier_input == "codes"
    assert _train_spec("--method", "code_classifier:fixmatch").model == "code_classifier"
    assert _train_spec().model == "coophash" and _train_spec("--model", "csq").model == "csq"
    with pytest.raises(RunError, match="unknown method 'coophash:nope': no coophash variant 'nope'"):
        _train_spec("--method", "coophash:nope")
    with pytest.raises(RunError, match="unknown ablation 'nope'"):
        _train_spec("--method", "coophash:fewlabels/nope")
    with pytest.raises(CLIError, match="drop --model / --ablation"):
        _train_spec("--method", "csq", "--model", "csq")


def test_a_method_applies_after_the_config_file_and_its_ablation_last(tmp_path):
    """A tuned best_config.json trained as an ablation of a named variant: the file's values stay
    where the variant is silent, the variant wins where it speaks, --set wins over both, and the
    ablation switches off its part of that final config."""
    import json

    path = tmp_path / "best_config.json"
    path.write_text(
        json.dumps({"langevin_step_size": 0.18, "nll_weight": 1.0, "classifier_input": "features", "num_bits": 16})
    )
    spec = _train_spec("--config", str(path), "--method", "coophash:fewlabels/no_pseudo_labels", "--set", "num_bits=24")
    config = _config(spec)
    assert config.langevin_step_size == 0.18  # the file's, the variant is silent on it
    assert (config.nll_weight, config.classifier_input) == (0.1, "codes")  # the variant's over the file's
    assert config.num_bits == 24 and config.pseudo_label_weight == 0.0  # --set, then the ablation
    assert spec.record()["method"] == "coophash:fewlabels/no_pseudo_labels"
    with pytest.raises(RunError, match="names its ablation"):
        RunSpec(run_dir="r", method="coophash:no_energy_head", ablation="no_energy_head")
    with pytest.raises(RunError, match="unknown method 'nope'"):
        RunSpec(run_dir="r", method="nope")
    with pytest.raises(RunError, match="trains 'coophash', not model='csq'"):
        RunSpec(run_dir="r", model="csq", method="coophash:fewlabels")
    assert RunSpec(run_dir="r", model="coophash", method="coophash:fewlabels").model == "coophash"

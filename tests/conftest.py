import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import pytest  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class CLIResult:
    """What subprocess.run(capture_output=True, text=True) returns, for an in-process CLI call."""

    def __init__(self, returncode, stdout, stderr):
        self.returncode, self.stdout, self.stderr = returncode, stdout, stderr


def run_cli_in_process(args):
    """`coophash ARGS` through coophash_keras.cli.main in this process: the same parser, handlers and
    exit codes as the console command, without a fresh TensorFlow import (seconds per call on 2
    cores). Tests of the entry point itself (`python -m coophash_keras.cli`) use a subprocess."""
    import contextlib
    import io

    from coophash_keras.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main([str(a) for a in args])
        except SystemExit as exc:  # argparse errors and --help exit; their code is the command's
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    return CLIResult(code or 0, out.getvalue(), err.getvalue())


@pytest.fixture
def tiny_config():
    """The smallest CoopHash that still exercises every part (8x8 digits, 16 bits)."""
    from coophash_keras import CoopHashConfig

    return CoopHashConfig(
        image_shape=(8, 8, 1),
        num_classes=10,
        num_bits=16,
        base_filters=8,
        feature_dim=32,
        latent_dim=8,
        generator_filters=16,
        langevin_steps=3,
        batch_size=32,
    )


@pytest.fixture(scope="session")
def digits():
    from coophash_keras.data import load_digits

    return load_digits()


@pytest.fixture(scope="session")
def trained_tiny(tmp_path_factory, digits):
    """(model, path of its .keras file): a 16-bit CoopHash trained 2 epochs on 256 digits, shared by
    the export, serving and index tests."""
    import numpy as np

    from coophash_keras import CoopHash, CoopHashConfig
    from coophash_keras.io import save_model

    cfg = CoopHashConfig(
        image_shape=(8, 8, 1),
        num_classes=10,
        num_bits=16,
        base_filters=8,
        feature_dim=32,
        latent_dim=8,
        generator_filters=16,
        langevin_steps=2,
    )
    model = CoopHash(cfg)
    model.compile()
    model.fit(digits.subset(np.arange(256)).as_dataset(32, drop_remainder=True), epochs=2, verbose=0)
    path = str(tmp_path_factory.mktemp("trained") / "model.keras")
    save_model(model, path)
    return model, path


# The tests `bash scripts/test.sh --fast` leaves out (pytest -m "not slow"), besides the modules that
# mark themselves (tests/test_every_model.py): each trains whole runs, several models, or several
# processes, or imports TensorFlow Datasets: ten seconds or more on 2 cores. Listed here, in one
# place, as file::test.
SLOW = (
    "test_backbone.py::test_model_on_a_backbone_trains_saves_exports_and_serves",
    "test_backbone.py::test_keras_hub_preset_folder_as_backbone",
    "test_cli.py::test_an_unprepared_tfds_dataset_is_one_clear_line",
    "test_cli.py::test_demo_runs_end_to_end",
    "test_cli.py::test_train_baselines_and_ablations_from_the_cli",
    "test_beam.py::test_two_worker_pipeline_gives_coophash_encode_codes_and_skips_bad_files",
    "test_crash_safety.py::test_killed_inside_saves_the_rerun_resumes_cleans_up_and_completes",
    "test_diagnostics.py::test_reference_classifier_recognises_held_out_digits_and_is_cached",
    "test_diagnostics.py::test_diagnose_command_reports_coophash_and_dshgan_and_refuses_a_model_without_generator",
    "test_diagnostics.py::test_a_generator_that_ignores_z_has_no_spread_and_one_that_copies_real_images_matches_them",
    "test_diagnostics.py::test_the_default_generator_varies_with_z_and_the_check_catches_the_old_collapse",
    "test_distribute.py::test_mirrored_strategy_matches_single_device_and_draws_per_replica_noise",
    "test_export.py::test_layout_and_saved_model_cli",
    "test_label_free.py::test_itq_on_a_backbone_takes_raw_pixels_and_round_trips",
    "test_model.py::test_shrink_policy_halves_the_step_sizes_and_training_goes_on",
    "test_reproducibility.py::test_deterministic_runs_give_identical_codes_and_weights",
    "test_training_tools.py::test_coophash_tune_cli_reports_every_trial_and_repeats_with_the_same_seed",
    "test_training_tools.py::test_two_workers_train_together_and_the_chief_saves",
    "test_training_tools.py::test_sigkill_then_resume_continues_with_both_optimizers",
    "test_training_tools.py::test_keras_tuner_two_trials_report_validation_map",
    "test_training_tools.py::test_corrupted_or_mismatched_backup_is_a_clear_error",
)


def pytest_collection_modifyitems(config, items):
    matched = set()
    for item in items:
        name = f"{os.path.basename(item.path)}::{item.originalname}"
        if name in SLOW:
            item.add_marker(pytest.mark.slow)
            matched.add(name)
    collected = {os.path.basename(item.path) for item in items}
    stale = sorted(n for n in set(SLOW) - matched if n.split("::")[0] in collected)
    if stale and not config.option.keyword:  # a renamed test would silently join the fast tier
        raise pytest.UsageError(f"tests/conftest.py SLOW names tests that do not exist: {stale}")

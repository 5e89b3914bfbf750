"""benchmarks/bench_train_step.py --unless-same-cpu: step times are measured again only on another
CPU (or when the last measurement was not alone), and another CPU's times are kept, not lost."""

import json
import os
import sys

import pytest
from conftest import REPO

sys.path.insert(0, os.path.join(REPO, "benchmarks"))
from bench_train_step import set_aside_other_cpu  # noqa: E402


def write(path, **record):
    path.write_text(json.dumps({"methods": {"orthohash": {"train_step_s": 0.089}}, **record}))
    return str(path)


def test_no_file_yet_is_measured(tmp_path):
    path = str(tmp_path / "steps.json")
    assert set_aside_other_cpu(path, "Intel Xeon") == path
    assert os.listdir(tmp_path) == []


def test_this_cpus_times_measured_alone_are_kept_as_they_are(tmp_path):
    path = write(tmp_path / "steps.json", cpu="Intel Xeon", alone=True)
    assert set_aside_other_cpu(path, "Intel Xeon") is None
    assert set_aside_other_cpu(path, "Intel Xeon", ["orthohash"]) is None
    assert os.listdir(tmp_path) == ["steps.json"]


def test_a_method_missing_from_this_cpus_times_has_them_measured_again(tmp_path):
    path = write(tmp_path / "steps.json", cpu="Intel Xeon", alone=True)
    assert set_aside_other_cpu(path, "Intel Xeon", ["orthohash", "orthohash:fixmatch"]) == path
    assert os.listdir(tmp_path) == ["steps.json"]


def test_this_cpus_times_not_measured_alone_are_measured_again(tmp_path):
    path = write(tmp_path / "steps.json", cpu="Intel Xeon", alone=False)
    assert set_aside_other_cpu(path, "Intel Xeon") == path
    assert os.listdir(tmp_path) == ["steps.json"]  # nothing worth keeping beside it


@pytest.mark.parametrize(
    "cpu, kept", [("AMD EPYC 7B13", "steps_AMD_EPYC_7B13.json"), (None, "steps_unrecorded_cpu.json")]
)
def test_another_cpus_times_are_kept_beside_under_its_name(tmp_path, cpu, kept):
    path = write(tmp_path / "steps.json", cpu=cpu, alone=True)
    original = open(path).read()
    assert set_aside_other_cpu(path, "Intel Xeon") == path
    assert sorted(os.listdir(tmp_path)) == sorted(["steps.json", kept])
    assert (tmp_path / kept).read_text() == original


def test_a_file_that_is_not_step_times_stops_with_its_name(tmp_path):
    path = tmp_path / "steps.json"
    path.write_text("[1, 2")
    with pytest.raises(SystemExit, match="steps.json: not a step-time file"):
        set_aside_other_cpu(str(path), "Intel Xeon")

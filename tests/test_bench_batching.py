"""benchmarks/bench_batching.py's round summary: each ratio is taken within a round, against the
batch-64 rate of the right server (batching off with the same environment, or the fastest one)."""

import os
import sys

import pytest
from conftest import REPO

sys.path.insert(0, os.path.join(REPO, "benchmarks"))
from bench_batching import summarise_rounds  # noqa: E402


def load(batch64, concurrent):
    return {"batch64": batch64, "concurrent": concurrent, "concurrent_p99_ms": 20.0, "errors": 0}


def test_ratios_are_within_each_round_against_the_right_batch64_server():
    rounds = [
        {
            "batching_off": load(2000.0, 400.0),
            "batching_on_0": load(2100.0, 900.0),
            "batching_off_env_0": load(4000.0, 500.0),
            "batching_on_env_0": load(3900.0, 1000.0),
        },
        {
            "batching_off": load(1000.0, 300.0),
            "batching_on_0": load(1100.0, 600.0),
            "batching_off_env_0": load(500.0, 200.0),
            "batching_on_env_0": load(600.0, 400.0),
        },
    ]
    out = summarise_rounds(rounds)
    on, env = out["batching_on_0"], out["batching_on_env_0"]
    assert on["concurrent_over_batch64_off"]["median"] == pytest.approx((900 / 2000 + 600 / 1000) / 2)
    assert on["concurrent_over_same_env_batch64_off"] == on["concurrent_over_batch64_off"]
    # the server with the environment against its own batching-off twin, and against the default's
    assert env["concurrent_over_same_env_batch64_off"]["median"] == pytest.approx((1000 / 4000 + 400 / 500) / 2)
    assert env["concurrent_over_batch64_off"]["median"] == pytest.approx((1000 / 2000 + 400 / 1000) / 2)
    # against the fastest batching-off server of each round: 4000 in round 1, 1000 in round 2
    assert on["concurrent_over_best_batch64_off"]["min"] == pytest.approx(900 / 4000)
    assert on["concurrent_over_best_batch64_off"]["max"] == pytest.approx(600 / 1000)
    assert out["batching_off"]["concurrent"]["median"] == pytest.approx(350.0)

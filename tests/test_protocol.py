"""benchmarks/protocol.py's own arithmetic: a run trains exactly the steps it is asked for."""

import os
import sys

import pytest
from conftest import REPO

sys.path.insert(0, os.path.join(REPO, "benchmarks"))
from protocol import epoch_length  # noqa: E402


@pytest.mark.parametrize(
    "steps, log_every, expected",
    [(1000, 250, 250), (12900, 500, 430), (5900, 500, 295), (100, 250, 100), (12500, 500, 500)],
)
def test_epochs_split_the_steps_exactly(steps, log_every, expected):
    d = epoch_length(steps, log_every)
    assert d == expected and steps % d == 0 and d <= log_every


def test_steps_that_only_split_into_tiny_epochs_are_refused():
    with pytest.raises(ValueError, match="--steps 997 has no divisor between 125 and 250.*e.g. 1000"):
        epoch_length(997, 250)

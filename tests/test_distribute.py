import pytest


@pytest.mark.slow
def test_mirrored_strategy_matches_single_device_and_draws_per_replica_noise(two_device_check):
    res = two_device_check  # tests/distributed_check.py, in a process of its own
    assert res["replicas"] == 2
    assert res["max_update"] > 1e-3  # the step really moved the weights...
    # ...and 2 replicas (8 + 8 examples) gave the same update as one device on the 16 (a wrong
    # loss scale would double or halve it).
    assert res["max_diff"] < 1e-4 * res["max_update"] + 1e-6, res
    assert res["replica_noise_differs"]
    assert res["fit_losses_finite"] and res["iterations"] == 4 and res["codes_ok"]

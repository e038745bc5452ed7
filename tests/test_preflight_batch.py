"""A batch larger than a worker's share of the training rows: a full sweep refuses it with the fix, a `--smoke`
run fits the batch to the data and says so."""

from types import SimpleNamespace

import pytest
from ray import tune

from orchestrator.preflight import Preflight
from trainables.config import TrainConfig
from trainables.errors import UserError


def preflight(smoke: bool, batch) -> Preflight:
    space = {"task": "attributes", "optim.batch_size": batch, "optim.epochs": 1}
    fixed = {k: v for k, v in space.items() if not isinstance(v, dict)}
    return Preflight(SimpleNamespace(smoke=smoke), space=space, base=TrainConfig.from_dict(fixed))


@pytest.mark.parametrize("batch", [32, tune.grid_search([16, 64])], ids=["fixed", "grid"])
def test_a_full_sweep_refuses_a_batch_over_a_workers_share_with_the_fix(batch):
    pre = preflight(False, batch)
    with pytest.raises(UserError, match=r"--set optim.batch_size=29 \(or less\)"):
        pre.check_batch(58, 2)
    assert pre.space["optim.batch_size"] == batch and not pre.notes


@pytest.mark.parametrize("batch", [32, tune.grid_search([16, 64])], ids=["fixed", "grid"])
def test_a_smoke_run_on_a_small_set_fits_the_batch_and_says_so(batch):
    pre = preflight(True, batch)
    pre.check_batch(58, 2)
    assert pre.space["optim.batch_size"] == 29 and pre.base.optim.batch_size == 29
    assert pre.notes == [f"--smoke fits optim.batch_size to 29 (was {32 if batch == 32 else 64}): 58 training rows "
                         "over 2 workers"]


def test_a_batch_that_fits_is_left_alone_and_fewer_rows_than_workers_is_still_refused():
    pre = preflight(True, 16)
    pre.check_batch(96, 2)
    assert pre.space["optim.batch_size"] == 16 and not pre.notes
    with pytest.raises(UserError, match="no training step would run"):
        preflight(True, 16).check_batch(1, 2)

"""FairFace label encodings (seed 000's 18 columns, the multi-head targets) and the multitask criterion."""

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from sklearn.preprocessing import LabelEncoder, OneHotEncoder

from trainables.config import TrainConfig
from trainables.data.formats.fairface import AGE_BINS, GENDERS, RACES
from trainables.errors import UserError
from trainables.tasks.fairface.labels import (AGE_MIDPOINTS, ONEHOT18_COLUMNS, decode_multihead, decode_onehot18,
                                        encode_multihead, encode_onehot18, years_to_bin)
from trainables.tasks.fairface.multitask import MultitaskLoss, build_multitask_loss

# Seed 000's first ten training rows and the encoding it printed for them.
SEED_ROWS = """train/1.jpg,50-59,Male,East Asian,True
train/2.jpg,30-39,Female,Indian,False
train/3.jpg,3-9,Female,Black,False
train/4.jpg,20-29,Female,Indian,True
train/5.jpg,20-29,Female,Indian,True
train/6.jpg,20-29,Male,White,True
train/7.jpg,40-49,Male,Middle Eastern,False
train/8.jpg,30-39,Female,Indian,True
train/9.jpg,10-19,Male,White,True
train/10.jpg,30-39,Male,Middle Eastern,False"""
SEED_HEADER = ("0-2,10-19,20-29,3-9,30-39,40-49,50-59,60-69,more than 70,Female,Male,Black,East Asian,Indian,"
               "Latino_Hispanic,Middle Eastern,Southeast Asian,White")
SEED_ENCODED = """0,0,0,0,0,0,1,0,0,0,1,0,1,0,0,0,0,0
0,0,0,0,1,0,0,0,0,1,0,0,0,1,0,0,0,0
0,0,0,1,0,0,0,0,0,1,0,1,0,0,0,0,0,0
0,0,1,0,0,0,0,0,0,1,0,0,0,1,0,0,0,0
0,0,1,0,0,0,0,0,0,1,0,0,0,1,0,0,0,0
0,0,1,0,0,0,0,0,0,0,1,0,0,0,0,0,0,1
0,0,0,0,0,1,0,0,0,0,1,0,0,0,0,1,0,0
0,0,0,0,1,0,0,0,0,1,0,0,0,1,0,0,0,0
0,1,0,0,0,0,0,0,0,0,1,0,0,0,0,0,0,1
0,0,0,0,1,0,0,0,0,0,1,0,0,0,0,1,0,0"""


def rows(text: str) -> SimpleNamespace:
    table = [line.split(",") for line in text.splitlines()]
    return SimpleNamespace(age=[r[1] for r in table], gender=[r[2] for r in table], race=[r[3] for r in table])


def every_class(n: int = 126, seed: int = 0) -> SimpleNamespace:
    """Rows covering every class of every task, in shuffled order."""
    rng = np.random.default_rng(seed)
    k = np.arange(n)
    return SimpleNamespace(age=[AGE_BINS[i] for i in rng.permutation(k % 9)],
                           gender=[GENDERS[i] for i in rng.permutation(k % 2)],
                           race=[RACES[i] for i in rng.permutation(k % 7)])


def test_onehot18_reproduces_the_encoding_seed_000_printed():
    assert ",".join(ONEHOT18_COLUMNS) == SEED_HEADER
    expected = np.array([[int(v) for v in line.split(",")] for line in SEED_ENCODED.splitlines()])
    np.testing.assert_array_equal(encode_onehot18(rows(SEED_ROWS)), expected)


def test_onehot18_matches_seed_000s_sklearn_pipeline():
    index = every_class()
    df = pd.DataFrame({"age": index.age, "gender": index.gender, "race": index.race})
    columns, blocks = [], []
    label_encoder, one_hot_encoder = LabelEncoder(), OneHotEncoder(dtype=int)
    for column in df.columns:  # the seed's loop
        fit = label_encoder.fit_transform(df[column].values)
        blocks.append(one_hot_encoder.fit_transform(fit.reshape(-1, 1)).toarray())
        columns += list(label_encoder.classes_)
    assert tuple(columns) == ONEHOT18_COLUMNS
    np.testing.assert_array_equal(encode_onehot18(index), np.hstack(blocks))


def test_round_trips():
    index = every_class()
    targets = encode_multihead(index)
    assert targets.dtype == np.float32 and targets.shape == (126, 4)
    canonical = decode_multihead(targets)
    assert [RACES[i] for i in canonical["race"]] == index.race
    assert [GENDERS[i] for i in canonical["gender"]] == index.gender
    assert [AGE_BINS[i] for i in canonical["age"]] == index.age
    np.testing.assert_array_equal(targets[:, 3], AGE_MIDPOINTS[canonical["age"]])
    back = decode_onehot18(encode_onehot18(index))
    for task in ("race", "gender", "age"):
        np.testing.assert_array_equal(back[task], canonical[task])
    np.testing.assert_array_equal(years_to_bin(targets[:, 3]), canonical["age"])


def test_age_midpoints_and_years_to_bins():
    assert AGE_MIDPOINTS[0] == 1.0 and AGE_MIDPOINTS[3] == 24.5 and AGE_MIDPOINTS[-1] == 75.0
    years = [-4, 0, 2.9, 3, 9.99, 10, 29.5, 69.9, 70, 75, 130]
    assert years_to_bin(years).tolist() == [0, 0, 0, 1, 1, 2, 3, 7, 8, 8, 8]


def config(**overrides) -> TrainConfig:
    return TrainConfig.from_dict({"task": "fairface", "data.format": "fairface", **overrides})


@pytest.fixture
def batch():
    index = every_class(n=36, seed=1)
    torch.manual_seed(0)
    return index, torch.from_numpy(encode_multihead(index))


@pytest.mark.parametrize("formulation,mode,width", [("multihead", "bins", 18), ("multihead", "regression", 10),
                                                    ("onehot18", "bins", 18), ("onehot18", "regression", 18)])
def test_output_widths(formulation, mode, width):
    assert build_multitask_loss(config(**{"multitask.formulation": formulation, "age.mode": mode})).num_outputs == width


def test_onehot18_with_unit_weights_is_seed_000s_bce(batch):
    index, targets = batch
    loss = build_multitask_loss(config(**{"multitask.formulation": "onehot18"}))
    np.testing.assert_array_equal(loss.head.targets18(targets).numpy(), encode_onehot18(index))
    outputs = torch.randn(len(targets), 18)
    seed_loss = F.binary_cross_entropy_with_logits(outputs, torch.from_numpy(encode_onehot18(index)))
    assert float(loss(outputs, targets)) == pytest.approx(float(seed_loss), rel=1e-6)


def test_multihead_losses_and_fixed_weights(batch):
    _, targets = batch
    weights = {"multitask.race_weight": 0.5, "multitask.gender_weight": 2.0, "multitask.age_weight": 3.0}
    outputs = torch.randn(len(targets), 18)
    loss = build_multitask_loss(config(**weights))
    race = F.cross_entropy(outputs[:, :7], targets[:, 0].long())
    gender = F.cross_entropy(outputs[:, 7:9], targets[:, 1].long())
    age = F.cross_entropy(outputs[:, 9:], targets[:, 2].long())
    assert float(loss(outputs, targets)) == pytest.approx(float(0.5 * race + 2 * gender + 3 * age), rel=1e-6)

    regression = build_multitask_loss(config(**{"age.mode": "regression", "age.scale": 80.0}))
    out10 = outputs[:, :10]
    l1 = (out10[:, 9] - targets[:, 3] / 80).abs().mean()
    np.testing.assert_allclose(regression.task_losses(out10, targets).numpy(), [race, gender, l1], rtol=1e-6)


def test_uncertainty_weighting_learns_log_variances(batch):
    _, targets = batch
    loss = build_multitask_loss(config(**{"multitask.weighting": "uncertainty", "age.mode": "regression"}))
    with torch.no_grad():
        loss.weighting.log_vars.copy_(torch.tensor([0.3, -0.2, 1.0]))
    outputs = torch.randn(len(targets), 10, requires_grad=True)
    per_task = loss.task_losses(outputs, targets)
    s = torch.tensor([0.3, -0.2, 1.0])
    total = loss(outputs, targets)
    assert float(total.detach()) == pytest.approx(float((torch.exp(-s) * per_task.detach() + s).sum()), rel=1e-6)
    total.backward()
    assert loss.weighting.log_vars.grad is not None and outputs.grad is not None
    assert list(loss.task_weights()) == ["race", "gender", "age"]
    assert loss.task_weights()["age"] == pytest.approx(float(np.exp(-1.0)), rel=1e-6)
    assert "weighting.log_vars" in loss.state_dict()  # checkpointed with the criterion


def test_decoding_both_formulations():
    outputs = np.zeros((2, 10), np.float32)
    outputs[0, 3], outputs[0, 8], outputs[0, 9] = 5, 5, 24.5 / 80  # East Asian, Female, 24.5 years
    outputs[1, 0], outputs[1, 7], outputs[1, 9] = 5, 5, 71 / 80
    decoded = build_multitask_loss(config(**{"age.mode": "regression"})).decode(outputs)
    assert decoded.indices["race"].tolist() == [3, 0] and decoded.indices["gender"].tolist() == [1, 0]
    assert decoded.indices["age"].tolist() == [3, 8]
    np.testing.assert_allclose(decoded.age_years, [24.5, 71], rtol=1e-5)
    assert "score/age_years" in decoded.scores and "score/race/White" in decoded.scores

    index = SimpleNamespace(age=["3-9", "more than 70"], gender=["Male", "Female"], race=["Indian", "White"])
    logits = encode_onehot18(index) * 8 - 4
    decoded = build_multitask_loss(config(**{"multitask.formulation": "onehot18"})).decode(logits)
    assert decoded.indices["race"].tolist() == [5, 0] and decoded.indices["age"].tolist() == [1, 8]
    np.testing.assert_allclose(decoded.age_years, [6.0, 75.0])
    assert {f"score/{t}/{c}" for t, c in [("age", "0-2"), ("gender", "Male"), ("race", "White")]} <= set(decoded.scores)


@pytest.mark.parametrize("key,value", [("multitask.formulation", "onehot"), ("multitask.weighting", "kendall"),
                                       ("age.mode", "years"), ("age.scale", 0.0)])
def test_unknown_names_are_user_errors(key, value):
    with pytest.raises(UserError) as err:
        build_multitask_loss(config(**{key: value}))
    assert key in str(err.value) and "\n" not in str(err.value)


def test_criterion_defaults_are_the_config_defaults():
    loss = MultitaskLoss()
    assert loss.num_outputs == 18 and loss.task_weights() == {"race": 1.0, "gender": 1.0, "age": 1.0}

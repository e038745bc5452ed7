"""The seed 002 table: our trials ranked, the published numbers beside them and marked."""

import pytest

from trainables.tasks.attributes.leaderboard import PUBLISHED, leaderboard, to_markdown


def _metrics(acc, f1_fixed, f1_opt):
    out = {}
    for strategy, f1 in (("fixed", f1_fixed), ("prior", f1_opt - 0.05), ("f1_opt", f1_opt), ("acc_opt", f1_fixed)):
        out.update({f"test/{strategy}/mean_accuracy": acc, f"test/{strategy}/macro_precision": 0.7,
                    f"test/{strategy}/macro_recall": 0.6, f"test/{strategy}/macro_f1": f1})
    return out


def test_trials_sorted_with_best_strategy_named_and_published_rows_marked():
    table = leaderboard([("resnet18", _metrics(0.88, 0.40, 0.55)), ("seresnet18", _metrics(0.90, 0.42, 0.50))])
    ours = table[table["source"] == "this sweep"]
    assert list(ours["model"]) == ["seresnet18", "resnet18"]
    assert list(ours["best/strategy"]) == ["f1_opt", "f1_opt"]
    assert ours.iloc[1]["best/macro_f1"] == pytest.approx(55.0) and ours.iloc[1]["fixed/macro_f1"] == pytest.approx(40.0)
    published = table[table["source"] == "published"]
    assert len(published) == len(PUBLISHED) and published["best/macro_f1"].isna().all()
    assert "FaceAttr-Analysis SE-ResNet101" in set(published["model"])
    markdown = to_markdown(table)
    assert markdown.count("\n| ") == len(table) + 0 and "published" in markdown


def test_no_table_for_non_attribute_sweeps():
    assert leaderboard([("x", {"val/macro_f1": 0.5})]) is None

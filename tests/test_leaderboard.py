"""The seed 002 table: our trials ranked, marked pretrained or scratch, and the published CelebA numbers
beside them, marked, only when the sweep trained on CelebA's own 40 attributes."""

import json

import pytest

from trainables.data.formats.celeba import ATTRIBUTE_NAMES
from trainables.tasks.attributes.leaderboard import (PUBLISHED, leaderboard, sweep_attribute_names, to_markdown,
                                                     write_sweep_leaderboard)


def _metrics(acc, f1_fixed, f1_opt):
    out = {}
    for strategy, f1 in (("fixed", f1_fixed), ("prior", f1_opt - 0.05), ("f1_opt", f1_opt), ("acc_opt", f1_fixed)):
        out.update({f"test/{strategy}/mean_accuracy": acc, f"test/{strategy}/macro_precision": 0.7,
                    f"test/{strategy}/macro_recall": 0.6, f"test/{strategy}/macro_f1": f1})
    return out


def _prepared(folder, label_columns):
    """The metadata.json of prepared attribute data, as prepare writes it (only what is read here)."""
    folder.mkdir(parents=True)
    (folder / "metadata.json").write_text(json.dumps({"format": "celeba", "version": 1, "splits": {},
                                                      "label_columns": label_columns}))
    return str(folder)


def test_trials_sorted_with_best_strategy_named_and_published_rows_marked():
    table = leaderboard([("resnet18", _metrics(0.88, 0.40, 0.55)), ("seresnet18", _metrics(0.90, 0.42, 0.50))],
                        list(ATTRIBUTE_NAMES))
    ours = table[table["source"] == "this sweep"]
    assert list(ours["model"]) == ["seresnet18", "resnet18"]
    assert list(ours["best/strategy"]) == ["f1_opt", "f1_opt"]
    assert ours.iloc[1]["best/macro_f1"] == pytest.approx(55.0) and ours.iloc[1]["fixed/macro_f1"] == pytest.approx(40.0)
    published = table[table["source"] == "published"]
    assert len(published) == len(PUBLISHED) and published["best/macro_f1"].isna().all()
    assert "FaceAttr-Analysis SE-ResNet101" in set(published["model"])
    markdown = to_markdown(table)
    assert markdown.count("\n| ") == len(table) + 0 and "published" in markdown and "CelebA test split" in markdown


@pytest.mark.parametrize("names", [None, ["Face", "Bright"], list(ATTRIBUTE_NAMES)[:39],
                                   list(reversed(ATTRIBUTE_NAMES))])
def test_published_numbers_only_for_celeba_own_attribute_set(names):
    table = leaderboard([("resnet18", _metrics(0.88, 0.40, 0.55))], names)
    assert list(table["source"]) == ["this sweep"]
    assert "left out" in to_markdown(table) and "CelebA test split" not in to_markdown(table)


def test_weights_column_marks_pretrained_against_scratch():
    rows = [("a", _metrics(0.80, 0.4, 0.5), {"model.name": "resnet18"}),
            ("b", _metrics(0.90, 0.4, 0.5), {"model.pretrained": True}),
            ("c", _metrics(0.85, 0.4, 0.5), {"model.weights": "/w/resnet18.safetensors"}),
            ("d", _metrics(0.70, 0.4, 0.5), {"model.pretrained": "false", "model.weights": ""})]
    table = leaderboard(rows, list(ATTRIBUTE_NAMES))
    ours = table[table["source"] == "this sweep"]
    assert dict(zip(ours["model"], ours["weights"])) == {"a": "scratch", "b": "pretrained", "c": "pretrained",
                                                         "d": "scratch"}
    assert list(ours["model"]) == ["b", "c", "a", "d"]
    assert table[table["source"] == "published"]["weights"].isna().all()


def test_sweep_hook_reads_the_attribute_names_from_the_trials_data(tmp_path):
    celeba = _prepared(tmp_path / "celeba", [*ATTRIBUTE_NAMES, "identity"])
    own = _prepared(tmp_path / "own", ["Face", "Bright"])
    row = lambda root: ("resnet18", _metrics(0.9, 0.4, 0.5), {"data.root": root})  # noqa: E731
    assert sweep_attribute_names([row(celeba)]) == list(ATTRIBUTE_NAMES)  # identity is not an attribute
    assert sweep_attribute_names([row(own)]) == ["Face", "Bright"]
    assert sweep_attribute_names([row(celeba), row(own)]) is None  # two data sets: nothing to compare with
    assert sweep_attribute_names([row(str(tmp_path / "gone"))]) is None

    for root, published in ((celeba, True), (own, False)):
        out = tmp_path / f"out-{published}"
        out.mkdir()
        assert write_sweep_leaderboard([row(root)], out) == ["leaderboard.csv", "leaderboard.md"]
        markdown = (out / "leaderboard.md").read_text()
        assert ("FaceAttr-Analysis" in markdown) is published
        assert "| resnet18 | scratch | this sweep |" in markdown


def test_no_table_for_non_attribute_sweeps():
    assert leaderboard([("x", {"val/macro_f1": 0.5})]) is None

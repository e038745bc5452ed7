"""The FairFace reader on files in the real layout, its one-line errors, and the synthetic demo set."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from trainables.data.formats.fairface import (AGE_BINS, GENDERS, LABEL_FILES, RACES, YEARS_LABEL_FILES,
                                             is_fairface_root, read_fairface, years_to_bin)
from trainables.data.demo.fairface import (AGE_RATES, RACE_RATES, ensure_demo_fairface, sample_labels,
                                                write_demo_fairface)
from trainables.errors import UserError

HEADER = "file,age,gender,race,service_test\n"
TRAIN = HEADER + ("train/1.jpg,50-59,Male,East Asian,True\n"
                  "train/2.jpg,30-39,Female,Indian,False\n"
                  "train/3.jpg,3-9,Female,Black,False\n")
VAL = HEADER + ("val/1.jpg,more than 70,Male,Latino_Hispanic,False\n"
                "val/2.jpg,0-2,Female,Southeast Asian,True\n")


def write_release(base: Path, csv_beside: bool = False, train: str = TRAIN, val: str = VAL,
                  folders=("train", "val")) -> Path:
    """A FairFace release in the real layout; the CSVs inside the image folder, or next to it."""
    root = base / "fairface-img-margin025-trainval"
    for folder in folders:
        (root / folder).mkdir(parents=True)
    for text in (train, val):
        for line in text.splitlines()[1:]:
            name = line.split(",")[0]
            if name.endswith(".jpg") and (root / name).parent.is_dir():
                Image.new("RGB", (224, 224), (120, 90, 60)).save(root / name)
    labels = base if csv_beside else root
    (labels / LABEL_FILES["train"]).write_text(train)
    (labels / LABEL_FILES["val"]).write_text(val)
    return root


@pytest.mark.parametrize("csv_beside", [False, True])
def test_reads_both_layouts(tmp_path, csv_beside):
    root = write_release(tmp_path, csv_beside)
    assert is_fairface_root(root)
    index = read_fairface(root)
    assert index.root == root
    assert index.files == ["train/1.jpg", "train/2.jpg", "train/3.jpg", "val/1.jpg", "val/2.jpg"]
    assert index.split.dtype == np.int8 and index.split.tolist() == [0, 0, 0, 1, 1]
    assert index.age == ["50-59", "30-39", "3-9", "more than 70", "0-2"]
    assert index.gender == ["Male", "Female", "Female", "Male", "Female"]
    assert index.race[0] == "East Asian" and index.race[4] == "Southeast Asian"
    assert index.service_test.dtype == bool and index.service_test.tolist() == [True, False, False, False, True]
    assert index.image_path(3) == root / "val" / "1.jpg" and index.image_path(3).is_file()
    assert index.indices("val").tolist() == [3, 4]
    assert {p.name for p in index.label_files} == set(LABEL_FILES.values())


def test_class_names_in_the_documented_order():
    assert AGE_BINS == ("0-2", "3-9", "10-19", "20-29", "30-39", "40-49", "50-59", "60-69", "more than 70")
    assert GENDERS == ("Male", "Female")
    assert RACES == ("White", "Black", "Latino_Hispanic", "East Asian", "Southeast Asian", "Indian", "Middle Eastern")


def test_tolerates_crlf_a_bom_and_a_blank_last_line(tmp_path):
    train = "\ufeff" + TRAIN.replace("\n", "\r\n") + "\r\n"
    root = write_release(tmp_path, train=train)
    assert read_fairface(root).files[:3] == ["train/1.jpg", "train/2.jpg", "train/3.jpg"]


def test_is_fairface_root_is_false_elsewhere(tmp_path):
    root = write_release(tmp_path, csv_beside=True)
    assert not is_fairface_root(root / "train")
    assert not is_fairface_root(tmp_path / "missing")
    other = tmp_path / "other"
    other.mkdir()
    (other / LABEL_FILES["train"]).write_text("image,label\n")
    assert not is_fairface_root(other)


BAD_INPUTS = [
    ("train", HEADER.replace("race", "ethnicity") + "train/1.jpg,50-59,Male,White,True\n", "line 1"),
    ("train", TRAIN + "train/4.jpg,50-59,Male\n", "line 5"),
    ("val", VAL + "val/3.jpg,20-29,Male,Asian,True\n", "line 4"),
    ("val", VAL + "val/3.jpg,70+,Male,White,True\n", "line 4"),
    ("val", VAL + "val/3.jpg,20-29,male,White,True\n", "line 4"),
    ("train", TRAIN + "train/4.jpg,20-29,Male,White,maybe\n", "line 5"),
    ("train", TRAIN + "../../etc/passwd,20-29,Male,White,True\n", "line 5"),
    ("train", TRAIN + "val/9.jpg,20-29,Male,White,True\n", "line 5"),
]


@pytest.mark.parametrize("split,text,where", BAD_INPUTS)
def test_malformed_label_files_name_the_file_and_line(tmp_path, split, text, where):
    root = write_release(tmp_path, **{split: text})
    with pytest.raises(UserError) as err:
        read_fairface(root)
    message = str(err.value)
    assert LABEL_FILES[split] in message and where in message and "\n" not in message


def test_missing_files_are_one_line_errors(tmp_path):
    root = write_release(tmp_path)
    (root / LABEL_FILES["val"]).unlink()
    with pytest.raises(UserError, match=LABEL_FILES["val"]):
        read_fairface(root)
    with pytest.raises(UserError, match="not found"):
        read_fairface(tmp_path / "nowhere")
    root2 = write_release(tmp_path / "b", folders=("train",))
    with pytest.raises(UserError, match="val"):
        read_fairface(root2)
    # The folder above the release: the error points at the release folder.
    with pytest.raises(UserError, match="fairface-img-margin025-trainval") as err:
        root3 = write_release(tmp_path / "c", csv_beside=True)
        read_fairface(root3.parent)
    assert "\n" not in str(err.value)


def test_demo_set_is_deterministic_in_the_real_layout(tmp_path):
    a = write_demo_fairface(tmp_path / "a", 30, seed=4)
    b = write_demo_fairface(tmp_path / "b", 30, seed=4)
    for name in list(LABEL_FILES.values()) + ["train/1.jpg", "val/5.jpg"]:
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    assert (a / LABEL_FILES["train"]).read_text().startswith(HEADER)
    index = read_fairface(a)
    assert (index.split == 0).sum() == 25 and (index.split == 1).sum() == 5
    assert index.files[0] == "train/1.jpg" and index.files[25] == "val/1.jpg"
    with Image.open(index.image_path(7)) as img:
        assert img.size == (224, 224) and img.format == "JPEG"


def test_demo_labels_follow_fairface_rates():
    race, gender, age = sample_labels(20000, np.random.default_rng(0))
    assert abs((gender == 0).mean() - 0.53) < 0.02
    np.testing.assert_allclose(np.bincount(race, minlength=7) / 20000, RACE_RATES / RACE_RATES.sum(), atol=0.015)
    ages = np.bincount(age, minlength=9) / 20000
    np.testing.assert_allclose(ages, AGE_RATES / AGE_RATES.sum(), atol=0.015)
    assert set(np.argsort(ages)[-2:]) == {AGE_BINS.index("20-29"), AGE_BINS.index("30-39")}


def test_demo_set_is_cached_atomically(tmp_path):
    root, built = ensure_demo_fairface(tmp_path, num_images=12, seed=1)
    assert built and is_fairface_root(root)
    again, built_again = ensure_demo_fairface(tmp_path, num_images=12, seed=1)
    assert again == root and not built_again
    assert [p.name for p in tmp_path.iterdir()] == [root.name]  # no temporary folder left behind


# Seed 001's variant: the same header, `age` in years, files named fairface-labels-{train,val}.csv.
YEARS_TRAIN = HEADER + ("train/1.jpg,59,Male,East Asian,True\n"
                        "train/2.jpg,39,Female,Indian,False\n"
                        "train/3.jpg,11,Female,Black,False\n")
YEARS_VAL = HEADER + ("val/1.jpg,2,Male,Latino_Hispanic,False\n"
                      "val/2.jpg,70,Female,Southeast Asian,True\n")


def write_seed001(folder: Path, train: str = YEARS_TRAIN, val: str = YEARS_VAL, csv_dir: Path | None = None) -> Path:
    """Seed 001's layout: train/ and val/ in `folder`, and fairface-labels-*.csv in it (or in `csv_dir`)."""
    for text in (train, val):
        for line in text.splitlines()[1:]:
            name = line.split(",")[0]
            (folder / name).parent.mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (224, 224), (120, 90, 60)).save(folder / name)
    labels = csv_dir or folder
    (labels / YEARS_LABEL_FILES["train"]).write_text(train)
    (labels / YEARS_LABEL_FILES["val"]).write_text(val)
    return folder


@pytest.mark.parametrize("beside", [False, True])
def test_reads_seed_001s_years_inside_and_beside_the_image_folder(tmp_path, beside):
    """As the seed lays it out (the CSVs next to train/ and val/, `--data` that folder), and with the
    image folder unpacked one level down, the CSVs left beside it."""
    root = tmp_path / "fairface-img-margin025-trainval" if beside else tmp_path
    root.mkdir(exist_ok=True)
    write_seed001(root, csv_dir=tmp_path)
    assert is_fairface_root(root)
    index = read_fairface(root)
    assert index.root == root and index.files[0] == "train/1.jpg" and index.image_path(4).is_file()
    assert index.age_years.dtype == np.float32 and index.age_years.tolist() == [59, 39, 11, 2, 70]
    assert index.age == ["50-59", "30-39", "10-19", "0-2", "more than 70"]  # DATA_FORMATS.md's bins
    assert [p.name for p in index.label_files] == [YEARS_LABEL_FILES["train"], YEARS_LABEL_FILES["val"]]
    assert read_fairface(write_release(tmp_path / "official")).age_years is None


def test_years_fall_in_the_documented_bins():
    years = [0, 2, 2.5, 3, 9, 10, 19, 20, 29, 30, 39, 40, 49, 50, 59, 60, 69, 70, 95, 120]
    bins = ["0-2"] * 3 + ["3-9"] * 2 + ["10-19"] * 2 + ["20-29"] * 2 + ["30-39"] * 2 + ["40-49"] * 2 + \
        ["50-59"] * 2 + ["60-69"] * 2 + ["more than 70"] * 3
    assert [AGE_BINS[k] for k in years_to_bin(years)] == bins


BAD_YEARS = [("-1", "negative"), ("121", "over 120"), ("nan", "not a number"), ("inf", "not a number"),
             ("fifty", "not a number"), ("", "not a number"), ("50-59", "fairface_label_train.csv")]


@pytest.mark.parametrize("age,problem", BAD_YEARS)
def test_malformed_years_are_one_line_errors_naming_file_and_line(tmp_path, age, problem):
    write_seed001(tmp_path, train=YEARS_TRAIN + f"train/4.jpg,{age},Male,White,True\n")
    with pytest.raises(UserError) as err:
        read_fairface(tmp_path)
    message = str(err.value)
    assert f"{YEARS_LABEL_FILES['train']}, line 5: age {age!r}" in message and problem in message
    assert "fix that row" in message and "\n" not in message


def test_years_in_the_official_file_point_at_the_variants_name(tmp_path):
    root = write_release(tmp_path, val=VAL + "val/3.jpg,59,Male,White,True\n")
    with pytest.raises(UserError, match=f"line 4: unknown age '59'.*{YEARS_LABEL_FILES['val']}"):
        read_fairface(root)


def test_a_folder_with_both_pairs_is_refused_naming_both(tmp_path):
    root = write_release(tmp_path)
    write_seed001(root)
    assert is_fairface_root(root)  # detection does not raise; reading says what to do
    with pytest.raises(UserError) as err:
        read_fairface(root)
    message = str(err.value)
    assert LABEL_FILES["train"] in message and YEARS_LABEL_FILES["train"] in message
    assert "move" in message and "\n" not in message


def test_half_a_pair_names_the_missing_file(tmp_path):
    write_seed001(tmp_path)
    (tmp_path / YEARS_LABEL_FILES["val"]).unlink()
    with pytest.raises(UserError, match=f"holds {YEARS_LABEL_FILES['train']} but not {YEARS_LABEL_FILES['val']}"):
        read_fairface(tmp_path)

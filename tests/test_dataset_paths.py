"""Dataset paths stay inside their dataset root, for every reader that builds paths from text: a label
row naming `../../outside/private_photo.jpg` or an absolute path is never packed. Without --strict it
is skipped and reported (file:line and the fix) in metadata.json; with --strict it is refused."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import dataset_writers
from trainables.data.prepare import prepare
from trainables.data.shards import load_metadata
from trainables.errors import UserError

from fake_images import jpeg

PRIVATE = jpeg(999)  # a valid JPEG, so nothing but the path check keeps it out


def private_photo(tmp_path):
    (tmp_path / "outside").mkdir()
    path = tmp_path / "outside" / "private_photo.jpg"
    path.write_bytes(PRIVATE)
    return path


def packed_images(out: str) -> list[bytes]:
    meta = load_metadata(out)
    tables = [pq.read_table(f"{out}/{rel}") for files in meta["splits"].values() for rel in files]
    table = pa.concat_tables(tables, promote_options="default")
    return [b for c in ("image", "image_b") if c in table.column_names for b in table.column(c).to_pylist() if b]


def _celeba(tmp_path, name):
    src = dataset_writers.celeba(tmp_path / "celeba")
    for label in ("list_attr_celeba.txt", "list_eval_partition.txt", "identity_CelebA.txt"):
        path = src / label
        path.write_text(path.read_text().replace("000004.jpg", name))
    return src, "list_attr_celeba.txt line 6"


def _attributes_csv(tmp_path, name):
    src = dataset_writers.attributes_csv(tmp_path / "photos")
    path = src / "labels.csv"
    path.write_text(path.read_text().replace("images/3.jpg", name))
    return src, "labels.csv line 5"


def _fairface(tmp_path, name):
    src = dataset_writers.fairface(tmp_path / "ff")
    path = src / "fairface_label_train.csv"
    path.write_text(path.read_text().replace("train/2.jpg", name))
    return src, "fairface_label_train.csv, line 3"


def _lfw(tmp_path, person):
    """LFW names `person/person_000N.jpg`: with person `../../outside/z` that is outside/z_0001.jpg."""
    src = dataset_writers.lfw(tmp_path / "lfw_src")
    for n in (1, 2):  # the private photos a hostile person name reaches
        target = src / "lfw" / f"{person}/{person}_{n:04d}.jpg"
        (src / "lfw" / person).mkdir(parents=True, exist_ok=True)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(PRIVATE)
    path = src / "pairs.txt"
    path.write_text(path.read_text().replace("Bob_B\t1\t2", f"{person}\t1\t2"))
    return src, "pairs.txt line 3"


LAYOUTS = {"celeba": _celeba, "attributes_csv": _attributes_csv, "fairface": _fairface, "lfw_pairs": _lfw}


def names(layout, private):
    """Names that reach `private` from each layout's image folder: relative with '..', and absolute."""
    up = {"celeba": "../../outside/private_photo.jpg", "attributes_csv": "../outside/private_photo.jpg",
          "fairface": "train/../../outside/private_photo.jpg", "lfw_pairs": "../../outside/z"}[layout]
    return [up, str(private.parent / "z") if layout == "lfw_pairs" else str(private)]


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
@pytest.mark.parametrize("kind", [0, 1], ids=["dotdot", "absolute"])
def test_a_path_outside_the_root_is_skipped_and_reported(tmp_path, layout, kind):
    private = private_photo(tmp_path)
    name = names(layout, private)[kind]
    src, where = LAYOUTS[layout](tmp_path, name)
    out = str(tmp_path / "out")
    info = prepare(layout, src, out)
    reasons = [s["reason"] for s in load_metadata(out)["skipped"]]
    assert any(where in r and ("outside" in r or "inside the image tree" in r or "of the form" in r)
               for r in reasons), reasons
    assert [s["reason"] for s in info.skipped] == reasons
    assert PRIVATE not in packed_images(out)

    with pytest.raises(UserError) as e:
        prepare(layout, src, str(tmp_path / "strict"), strict=True)
    assert "\n" not in str(e.value) and where in str(e.value), str(e.value)
    assert not (tmp_path / "strict").exists()


def test_subfolders_are_paths_like_any_other_but_a_dotdot_part_never_is(tmp_path):
    """A '..' part is refused even where it would come back inside: a hostile name is checked as written."""
    src = dataset_writers.attributes_csv(tmp_path / "photos")
    (src / "images" / "sub").mkdir()
    (src / "images" / "sub" / "x.jpg").write_bytes(jpeg(5))
    path = src / "labels.csv"
    path.write_text(path.read_text().replace("images/3.jpg", "images/sub/../sub/x.jpg"))
    info = prepare("attributes_csv", src, str(tmp_path / "out"))
    assert [s["file"] for s in info.skipped] == ["images/sub/../sub/x.jpg"]
    path.write_text(path.read_text().replace("images/sub/../sub/x.jpg", "images/sub/x.jpg"))
    assert prepare("attributes_csv", src, str(tmp_path / "out2")).skipped == []

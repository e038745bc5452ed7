"""The synthetic face-recognition demo set: determinism, LFW's exact pairs layout, held-out
identities, atomic caching, and a cheap check that identities are recognisable from pixels."""

import re

import numpy as np
import pytest
from PIL import Image
from sklearn.decomposition import PCA

from trainables.data.demo.faces import ensure_demo_faces, identity_params, write_demo_faces
from trainables.tasks.recognition.verification import pair_distances, ten_fold_accuracy

SMALL = dict(num_identities=12, images_per_identity=5, verify_identities=20, pairs_per_fold=6)
MATCHED = re.compile(r"^([A-Za-z0-9_]+)\t(\d+)\t(\d+)$")
MISMATCHED = re.compile(r"^([A-Za-z0-9_]+)\t(\d+)\t([A-Za-z0-9_]+)\t(\d+)$")


@pytest.fixture(scope="module")
def small_set(tmp_path_factory):
    return write_demo_faces(tmp_path_factory.mktemp("faces"), seed=0, **SMALL)


def _files(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _pairs(root):
    """(left path, right path, issame) per pairs.txt line, as an LFW reader resolves them."""
    out = []
    for line in (root / "lfw" / "pairs.txt").read_text().splitlines()[1:]:
        f = line.split("\t")
        a, na, b, nb = (f[0], f[1], f[0], f[2]) if len(f) == 3 else f
        out.append((root / "lfw" / a / f"{a}_{int(na):04d}.jpg", root / "lfw" / b / f"{b}_{int(nb):04d}.jpg",
                    len(f) == 3))
    return out


def test_deterministic_and_seed_dependent(small_set, tmp_path):
    again = write_demo_faces(tmp_path / "again", seed=0, **SMALL)
    assert _files(again) == _files(small_set)
    other = write_demo_faces(tmp_path / "other", seed=1, **SMALL)
    assert _files(other)["train/id00000/000.jpg"] != _files(small_set)["train/id00000/000.jpg"]


def test_layout_and_image_format(small_set):
    train = sorted(p.name for p in (small_set / "train").iterdir())
    assert len(train) == 12 and all(len(list((small_set / "train" / d).glob("*.jpg"))) == 5 for d in train)
    people = sorted(p for p in (small_set / "lfw").iterdir() if p.is_dir())
    assert len(people) == 20
    for person in people:
        assert sorted(p.name for p in person.iterdir()) == [f"{person.name}_{n:04d}.jpg" for n in range(1, 6)]
    img = Image.open(small_set / "train" / train[0] / "000.jpg")
    assert img.format == "JPEG" and img.size == (112, 112) and img.mode == "RGB"


def test_pairs_txt_is_exactly_lfw_layout(small_set):
    text = (small_set / "lfw" / "pairs.txt").read_text()
    lines = text.splitlines()
    assert lines[0] == "10\t6" and text.endswith("\n") and len(lines) == 1 + 10 * 12
    fold_people = []
    for k in range(10):
        block = lines[1 + 12 * k: 1 + 12 * (k + 1)]
        matched = [MATCHED.match(line) for line in block[:6]]
        mismatched = [MISMATCHED.match(line) for line in block[6:]]
        assert all(matched) and all(mismatched), block
        assert len(set(block)) == 12  # no repeated pair
        for m in matched:
            assert 1 <= int(m[2]) < int(m[3]) <= 5
        for m in mismatched:
            assert m[1] != m[3] and 1 <= int(m[2]) <= 5 and 1 <= int(m[4]) <= 5
        fold_people.append({m[1] for m in matched} | {m[1] for m in mismatched} | {m[3] for m in mismatched})
    for k in range(10):  # as in LFW's View 2, folds share no identity
        assert all(not (fold_people[k] & fold_people[j]) for j in range(k))
    assert all(left.is_file() and right.is_file() for left, right, _ in _pairs(small_set))


def test_pair_identities_are_held_out_from_train(small_set):
    train = {p.name for p in (small_set / "train").iterdir()}
    people = {p.name for p in (small_set / "lfw").iterdir() if p.is_dir()}
    assert not train & people
    train_params = {identity_params(0, i) for i in range(12)}
    held_out_params = {identity_params(0, 12 + j) for j in range(20)}
    assert len(held_out_params) == 20 and not train_params & held_out_params


def test_ensure_builds_once_atomically(tmp_path):
    root, created = ensure_demo_faces(tmp_path, seed=0, **SMALL)
    assert created and (root / "DEMO_COMPLETE.json").is_file() and (root / "lfw" / "pairs.txt").is_file()
    again, created_again = ensure_demo_faces(tmp_path, seed=0, **SMALL)
    assert again == root and not created_again
    assert [p.name for p in tmp_path.iterdir()] == [root.name]  # no temporary folder left behind


def test_identities_are_recognisable_from_pixels(tmp_path):
    # PCA of downscaled, per-image standardised pixels (fitted on train identities only) verifies
    # held-out identities far above chance: a small CNN has a real signal to learn.
    root = write_demo_faces(tmp_path, num_identities=30, images_per_identity=6, verify_identities=20,
                            pairs_per_fold=15, seed=0)

    def pixels(path):
        x = np.asarray(Image.open(path).resize((16, 16), Image.Resampling.BILINEAR), dtype=np.float32).ravel()
        return (x - x.mean()) / (x.std() + 1e-6)

    pca = PCA(20, random_state=0).fit(np.stack([pixels(p) for p in sorted((root / "train").rglob("*.jpg"))]))
    pairs = _pairs(root)
    left = pca.transform(np.stack([pixels(a) for a, _, _ in pairs]))
    right = pca.transform(np.stack([pixels(b) for _, b, _ in pairs]))
    accuracy = ten_fold_accuracy(pair_distances(left, right), [s for _, _, s in pairs])["accuracy"]
    assert accuracy > 0.7, accuracy

"""The demo set: CelebA's exact layout, real rates and correlations, identities inside one split,
deterministic, built atomically, and its cues carry the labels (a linear probe on 32x32 pixels)."""

from __future__ import annotations

import re

import numpy as np
import pytest
from PIL import Image
from threadpoolctl import threadpool_limits

from trainables.data.demo import celeba as synthetic
from trainables.data.formats.celeba import ATTRIBUTE_NAMES, read_celeba
from trainables.data.demo.celeba import (CELEBA_POSITIVE_RATES, NO_CUE_ATTRIBUTES, TARGET_CORRELATIONS,
                                              ensure_demo_celeba, reachable_correlations, sample_attributes,
                                              write_demo_celeba)

LABEL_FILES = ("list_attr_celeba.txt", "list_eval_partition.txt", "identity_CelebA.txt",
               "list_landmarks_align_celeba.txt")
# The correlations the brief names, with their sign in real CelebA.
KEY_PAIRS = {
    ("Male", "Heavy_Makeup"): -1, ("Male", "Wearing_Lipstick"): -1, ("Male", "Arched_Eyebrows"): -1,
    ("Male", "Wearing_Earrings"): -1, ("Male", "Attractive"): -1, ("Male", "Goatee"): 1, ("Male", "Mustache"): 1,
    ("Male", "Sideburns"): 1, ("Male", "5_o_Clock_Shadow"): 1, ("Male", "Bald"): 1, ("Male", "Wearing_Necktie"): 1,
    ("Male", "No_Beard"): -1, ("No_Beard", "Goatee"): -1, ("No_Beard", "Mustache"): -1, ("No_Beard", "Sideburns"): -1,
    ("No_Beard", "5_o_Clock_Shadow"): -1, ("Heavy_Makeup", "Wearing_Lipstick"): 1, ("Smiling", "High_Cheekbones"): 1,
    ("Smiling", "Mouth_Slightly_Open"): 1, ("Young", "Gray_Hair"): -1, ("Young", "Bald"): -1,
    ("Young", "Receding_Hairline"): -1, ("Young", "Double_Chin"): -1, ("Young", "Chubby"): -1,
    ("Young", "Attractive"): 1, ("Bald", "Receding_Hairline"): 1, ("Chubby", "Double_Chin"): 1,
    ("Black_Hair", "Blond_Hair"): -1, ("Black_Hair", "Brown_Hair"): -1, ("Blond_Hair", "Brown_Hair"): -1,
    ("Black_Hair", "Gray_Hair"): -1, ("Bald", "Black_Hair"): -1, ("Straight_Hair", "Wavy_Hair"): -1,
}


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """One 600-image set shared by the tests that only read it."""
    return write_demo_celeba(tmp_path_factory.mktemp("demo") / "celeba", 600, seed=1)


@pytest.fixture(scope="module")
def labels():
    return sample_attributes(50_000, np.random.default_rng(0))


def test_tables_cover_the_40_attributes():
    assert set(CELEBA_POSITIVE_RATES) == set(ATTRIBUTE_NAMES)
    assert 4 <= len(NO_CUE_ATTRIBUTES) <= 5 and NO_CUE_ATTRIBUTES <= set(ATTRIBUTE_NAMES)
    assert all(a in ATTRIBUTE_NAMES and b in ATTRIBUTE_NAMES and a != b for a, b in TARGET_CORRELATIONS)
    assert set(KEY_PAIRS) <= set(TARGET_CORRELATIONS)
    assert all(np.sign(TARGET_CORRELATIONS[pair]) == sign for pair, sign in KEY_PAIRS.items())


def test_positive_rates_match_celeba(labels):
    assert labels.dtype == np.uint8 and labels.shape == (50_000, 40) and set(np.unique(labels)) <= {0, 1}
    rates = labels.mean(axis=0)
    for k, name in enumerate(ATTRIBUTE_NAMES):
        assert abs(rates[k] - CELEBA_POSITIVE_RATES[name]) < 0.01, name  # 4.5 standard errors at p=0.5


def test_correlations_have_celeba_sign_and_size(labels):
    phi = np.corrcoef(labels.T.astype(np.float64))
    at = {name: k for k, name in enumerate(ATTRIBUTE_NAMES)}
    for (a, b), reachable in zip(TARGET_CORRELATIONS, reachable_correlations()):
        assert abs(phi[at[a], at[b]] - reachable) < 0.05, (a, b, phi[at[a], at[b]], reachable)
    for (a, b), sign in KEY_PAIRS.items():
        target = TARGET_CORRELATIONS[(a, b)]
        assert np.sign(phi[at[a], at[b]]) == sign, (a, b)
        if abs(target) >= 0.25:  # the strong ones keep most of their real size
            assert abs(phi[at[a], at[b]]) > 0.6 * abs(target), (a, b, phi[at[a], at[b]], target)
    assert np.linalg.eigvalsh(synthetic._latent_model()[1]).min() > 0


def test_writes_the_exact_celeba_layout(demo):
    attr = (demo / "list_attr_celeba.txt").read_text().split("\n")
    assert attr[0] == "600" and attr[1] == " ".join(ATTRIBUTE_NAMES) + " " and attr[-1] == ""
    row = re.compile(r"^\d{6}\.jpg (1|-1)( ( 1|-1)){39}$")  # values right-aligned to width 3
    assert all(row.match(line) for line in attr[2:-1])
    assert {line.split()[1] for line in attr[2:-1]} == {"1", "-1"}  # both first-value widths occur
    assert re.fullmatch(r"000001\.jpg [012]", (demo / "list_eval_partition.txt").read_text().split("\n")[0])
    assert re.fullmatch(r"000001\.jpg \d+", (demo / "identity_CelebA.txt").read_text().split("\n")[0])
    images = sorted(p.name for p in (demo / "img_align_celeba").iterdir())
    assert images == [f"{i:06d}.jpg" for i in range(1, 601)]
    for name in images[:5]:
        with Image.open(demo / "img_align_celeba" / name) as img:
            assert img.format == "JPEG" and img.mode == "RGB" and img.size == (178, 218)


def test_read_back_exactly_and_identities_stay_in_one_split(demo):
    index = read_celeba(demo)
    lines = (demo / "list_attr_celeba.txt").read_text().splitlines()[2:]
    np.testing.assert_array_equal(index.attributes, np.array([[int(v) for v in l.split()[1:]] for l in lines]) > 0)
    assert index.files == [l.split()[0] for l in lines]
    sizes = np.bincount(index.split, minlength=3) / len(index.files)
    assert 0.75 <= sizes[0] <= 0.85 and 0.07 <= sizes[1] <= 0.13 and 0.07 <= sizes[2] <= 0.13
    assert list(index.split) == sorted(index.split)  # train, then val, then test, as in the real file
    for person in np.unique(index.identity):
        assert len(set(index.split[index.identity == person])) == 1
    assert len(np.unique(index.identity)) == 30
    assert index.landmarks.shape == (600, 10)
    assert (index.landmarks[:, 0] < index.landmarks[:, 2]).all()  # left eye left of right eye


def test_same_seed_same_bytes_and_pixels(tmp_path):
    a = write_demo_celeba(tmp_path / "a", 40, seed=3)
    b = write_demo_celeba(tmp_path / "b", 40, seed=3)
    c = write_demo_celeba(tmp_path / "c", 40, seed=4)
    for name in LABEL_FILES:
        assert (a / name).read_bytes() == (b / name).read_bytes()
    assert (a / "list_attr_celeba.txt").read_bytes() != (c / "list_attr_celeba.txt").read_bytes()
    for i in range(1, 41):
        name = f"img_align_celeba/{i:06d}.jpg"
        np.testing.assert_array_equal(np.asarray(Image.open(a / name)), np.asarray(Image.open(b / name)))


def test_ensure_builds_once_atomically(tmp_path, monkeypatch):
    root, created = ensure_demo_celeba(tmp_path, num_images=30, seed=2)
    assert created and root == tmp_path / "celeba_demo-n30-s2-v1" and read_celeba(root).attributes.shape == (30, 40)
    before = (root / "list_attr_celeba.txt").read_bytes()
    assert ensure_demo_celeba(tmp_path, num_images=30, seed=2) == (root, False)
    assert (root / "list_attr_celeba.txt").read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == [root.name]  # no temporary folder left behind

    def interrupted(path, *args, **kwargs):
        (path / "list_attr_celeba.txt").write_text("half")
        raise KeyboardInterrupt

    monkeypatch.setattr(synthetic, "write_demo_celeba", interrupted)
    with pytest.raises(KeyboardInterrupt):
        ensure_demo_celeba(tmp_path / "other", num_images=30, seed=2)
    assert list((tmp_path / "other").iterdir()) == []  # nothing half-written under any name


def test_racing_builder_keeps_the_first_complete_set(tmp_path, monkeypatch):
    real = synthetic.write_demo_celeba
    winner = {}

    def slow_loser(path, *args, **kwargs):
        monkeypatch.setattr(synthetic, "write_demo_celeba", real)
        winner["root"], _ = ensure_demo_celeba(tmp_path, num_images=20, seed=0)  # another process wins
        (winner["root"] / "winner").write_text("")
        return real(path, *args, **kwargs)

    monkeypatch.setattr(synthetic, "write_demo_celeba", slow_loser)
    root, created = ensure_demo_celeba(tmp_path, num_images=20, seed=0)
    assert root == winner["root"] and not created and (root / "winner").exists()
    assert [p.name for p in tmp_path.iterdir()] == [root.name]


def test_cues_carry_the_labels(demo):
    """A linear probe on 32x32 pixels: cued attributes beat the majority rate clearly, a no-cue one does not."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    index = read_celeba(demo)
    pixels = np.stack([np.asarray(Image.open(index.image_path(i)).reduce(2).resize((32, 32)), np.float32).ravel()
                       for i in range(len(index.files))])
    train = np.arange(len(pixels)) < 400
    scaler = StandardScaler().fit(pixels[train])
    x_train, x_test = scaler.transform(pixels[train]), scaler.transform(pixels[~train])

    def probe(name: str) -> tuple[float, float]:
        y = index.attributes[:, index.attribute_names.index(name)]
        with threadpool_limits(1):  # BLAS threads on a busy 2-core machine made each fit 20x slower
            model = LogisticRegression(C=0.01, max_iter=300).fit(x_train, y[train])
        majority = max(y[~train].mean(), 1 - y[~train].mean())
        return float((model.predict(x_test) == y[~train]).mean()), float(majority)

    for name in ("Smiling", "Male", "Wearing_Lipstick", "Mouth_Slightly_Open"):
        accuracy, majority = probe(name)
        assert accuracy > majority + 0.15, (name, accuracy, majority)
    assert "Pointy_Nose" in NO_CUE_ATTRIBUTES
    accuracy, majority = probe("Pointy_Nose")
    assert accuracy < majority + 0.05, ("Pointy_Nose", accuracy, majority)


def test_a_large_set_from_a_few_distinct_faces_has_distinct_valid_files(tmp_path):
    """benchmarks/scale.py's sets: K faces encoded once, every file different, each decoding to its face."""
    from trainables.data.decode import decode_shard_image
    from trainables.data.prepare import check_image

    root = write_demo_celeba(tmp_path / "big", num_images=12, seed=4, distinct=3)
    files = [(root / "img_align_celeba" / name).read_bytes() for name in read_celeba(root).files]
    assert len(set(files)) == 12
    for i, data in enumerate(files):
        check_image(data)  # what prepare checks
        assert Image.open(root / "img_align_celeba" / f"{i + 1:06d}.jpg").size == (178, 218)
        assert np.array_equal(decode_shard_image(data, 32), decode_shard_image(files[i % 3], 32))
    plain = write_demo_celeba(tmp_path / "plain", num_images=12, seed=4)  # the same labels, drawn faces
    for name in LABEL_FILES[:3]:
        assert (root / name).read_bytes() == (plain / name).read_bytes()

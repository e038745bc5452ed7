"""Small valid datasets in each real layout (../shared/DATA_FORMATS.md), one writer per reader, for tests
that break one record of them. Each returns the folder to pass as --src; images are 24x24 JPEGs."""

from __future__ import annotations

import struct
from pathlib import Path

from insightface_writers import write_insightface_bin
from insightface_writers import write_insightface_rec

from fake_images import jpeg

CELEBA_NAMES = ("Male", "Smiling", "Young")


def celeba(root: Path, n: int = 9) -> Path:
    """CelebA's layout with 3 attributes: count line, header line, `name v v v`; splits 0/1/2 in turn."""
    (root / "img_align_celeba").mkdir(parents=True)
    names = [f"{i + 1:06d}.jpg" for i in range(n)]
    rows = [f"{name} " + " ".join(" 1" if (i >> k) & 1 else "-1" for k in range(3)) for i, name in enumerate(names)]
    (root / "list_attr_celeba.txt").write_text("\n".join([str(n), " ".join(CELEBA_NAMES) + " ", *rows]) + "\n")
    (root / "list_eval_partition.txt").write_text("".join(f"{name} {i % 3}\n" for i, name in enumerate(names)))
    (root / "identity_CelebA.txt").write_text("".join(f"{name} {i // 2}\n" for i, name in enumerate(names)))
    for i, name in enumerate(names):
        (root / "img_align_celeba" / name).write_bytes(jpeg(i))
    return root


def attributes_csv(root: Path, n: int = 9) -> Path:
    """One labels.csv (file, two 0/1 attributes, split) beside an images/ folder."""
    (root / "images").mkdir(parents=True)
    lines = ["file,Face,Bright,split"]
    for i in range(n):
        lines.append(f"images/{i}.jpg,{i % 2},{(i // 2) % 2},{('train', 'val', 'test')[i % 3]}")
        (root / "images" / f"{i}.jpg").write_bytes(jpeg(i))
    (root / "labels.csv").write_text("\n".join(lines) + "\n")
    return root


def fairface(root: Path, n: int = 4) -> Path:
    """FairFace's two label CSVs inside the image folder, n rows each."""
    for split in ("train", "val"):
        (root / split).mkdir(parents=True)
        lines = ["file,age,gender,race,service_test"]
        for i in range(1, n + 1):
            lines.append(f"{split}/{i}.jpg,20-29,{('Male', 'Female')[i % 2]},White,True")
            (root / split / f"{i}.jpg").write_bytes(jpeg(i + (100 if split == "val" else 0)))
        (root / f"fairface_label_{split}.csv").write_text("\n".join(lines) + "\n")
    return root


def faces(root: Path, identities: int = 3, per: int = 2) -> Path:
    for k in range(identities):
        (root / f"id{k}").mkdir(parents=True)
        for j in range(per):
            (root / f"id{k}" / f"{j}.jpg").write_bytes(jpeg(10 * k + j))
    return root


def rec(root: Path, n: int = 6) -> Path:
    """train.rec/.idx/property as InsightFace writes them: header record 0, images 1..n."""
    return write_insightface_rec(root, [jpeg(i) for i in range(n)], [i // 2 for i in range(n)], num_classes=n // 2)


def bins(root: Path, pairs: int = 4) -> Path:
    write_insightface_bin(root / "lfw.bin", [jpeg(i) for i in range(2 * pairs)], [i % 2 == 0 for i in range(pairs)])
    return root


def lfw(root: Path) -> Path:
    """pairs.txt with 1 fold of 2 matched + 2 mismatched pairs, and the lfw/ tree it names."""
    people = ["Ann_A", "Bob_B", "Cid_C"]
    for k, person in enumerate(people):
        (root / "lfw" / person).mkdir(parents=True)
        for n in (1, 2):
            (root / "lfw" / person / f"{person}_{n:04d}.jpg").write_bytes(jpeg(10 * k + n))
    lines = ["1\t2", "Ann_A\t1\t2", "Bob_B\t1\t2", "Ann_A\t1\tBob_B\t2", "Cid_C\t1\tAnn_A\t2"]
    (root / "pairs.txt").write_text("\n".join(lines) + "\n")
    return root


WRITERS = {"celeba": celeba, "attributes_csv": attributes_csv, "fairface": fairface, "faces": faces,
           "insightface_rec": rec, "insightface_bin": bins, "lfw_pairs": lfw}


def image_payload(label: float, data: bytes, key: int) -> bytes:
    """One image record's payload as mxnet.recordio.pack writes it: header 'IfQQ' (flag 0), then the JPEG."""
    return struct.pack("<IfQQ", 0, label, key, 0) + data


def rec_from_payloads(root: Path, payloads: list[bytes], num_classes: int, offsets: dict[int, str] | None = None) -> Path:
    """train.rec/.idx/property holding header record 0 (images are 1..n) and `payloads` as records
    1..n, framed as dmlc's RecordIOWriter frames a whole record (none of these holds the magic);
    `offsets` replaces the .idx offset text of some keys."""
    root.mkdir(parents=True, exist_ok=True)
    n = len(payloads)
    header = struct.pack("<IfQQ", 2, 0.0, 0, 0) + struct.pack("<2f", n + 1, n + 1)
    with open(root / "train.rec", "wb") as rec, open(root / "train.idx", "w") as idx:
        for key, payload in enumerate([header, *payloads]):
            idx.write(f"{key}\t{(offsets or {}).get(key, rec.tell())}\n")
            rec.write(struct.pack("<II", 0xCED7230A, len(payload)) + payload + b"\0" * (-len(payload) % 4))
    (root / "property").write_text(f"{num_classes},112,112\n")
    return root

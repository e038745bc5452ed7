"""Reader of a face-recognition image folder: `root/<identity>/<image>.jpg`, aligned 112x112.

Identities are sorted by folder name and numbered 0..K-1 in that order; images are sorted by name
within each identity, so the index is the same on every machine. Every path is an entry listed
under `root`, never text from a file, so no name can lead outside it (a symlink there is followed,
as whoever laid the folders out chose). Only the listing is read here:
images are opened when they are packed or decoded. `os.scandir` keeps a multi-million-file tree
(MS1M-sized) to one system call per folder.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from trainables.data.formats.rejects import Rejects, is_utf8, printable
from trainables.data.plans import Plan, SplitPlan, fetch_files, register_format
from trainables.errors import UserError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


@dataclass(frozen=True)
class FaceFolderIndex:
    """One row per image: its path and its identity's class index into `class_names`."""

    root: Path
    files: list[Path]
    labels: np.ndarray  # int64, (n,)
    class_names: list[str]

    def relative(self, i: int) -> str:
        """The source-relative name of image i, e.g. "Aaron_Peirsol/0001.jpg"."""
        return self.files[i].relative_to(self.root).as_posix()


def _images(folder: str) -> list[str]:
    with os.scandir(folder) as entries:
        return sorted(e.name for e in entries
                      if not e.name.startswith(".") and e.name.lower().endswith(IMAGE_SUFFIXES) and e.is_file())


def is_face_folder_root(root) -> bool:
    """Whether `root` holds identity sub-folders with images in them (checks the first few only)."""
    try:
        with os.scandir(root) as entries:
            folders = sorted(e.path for e in entries if e.is_dir() and not e.name.startswith("."))
        return bool(folders) and all(_images(f) for f in folders[:3])
    except (OSError, TypeError):
        return False


def read_face_folders(root: str | os.PathLike, rejects: Rejects | None = None) -> FaceFolderIndex:
    """List `root/<identity>/<image>` into a `FaceFolderIndex`; identities with no images are left out.
    A folder or image whose name is not UTF-8 (it could not be stored as a name) goes to `rejects`
    (by default: raised)."""
    rejects = rejects if rejects is not None else Rejects()
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"face folder {root} does not exist; pass the folder that holds one "
                        f"sub-folder per identity")
    with os.scandir(root) as entries:
        identities = sorted(e.name for e in entries if e.is_dir() and not e.name.startswith("."))
    if not identities:
        stray = _images(str(root))
        hint = f" (found {len(stray)} images directly in it)" if stray else ""
        raise UserError(f"{root} has no identity sub-folders{hint}; lay the images out as "
                        f"<root>/<identity>/<image>.jpg, one sub-folder per person")
    files: list[Path] = []
    labels: list[int] = []
    class_names: list[str] = []
    for name in identities:
        try:
            images = _images(os.path.join(root, name))
        except OSError as err:
            rejects.add(f"{root / name}: cannot list it ({err.strerror or err}); make it readable, or move it out of "
                        f"{root}", file=printable(name))
            continue
        if images and not is_utf8(name):
            rejects.add(f"{root}: identity folder {printable(name)!r} has a name that is not UTF-8 text; rename it "
                        f"(its {len(images)} images were left out)", file=name)
            continue
        for image in [i for i in images if not is_utf8(i)]:
            rejects.add(f"{root / name}: image {printable(image)!r} has a name that is not UTF-8 text; rename it",
                        file=f"{name}/{image}")
            images.remove(image)
        if not images:
            continue
        files.extend(root / name / image for image in images)
        labels.extend([len(class_names)] * len(images))
        class_names.append(name)
    if not files:
        raise UserError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in the {len(identities)} identity "
                        f"folders of {root}; put each person's aligned images in their folder")
    return FaceFolderIndex(root=root, files=files, labels=np.asarray(labels, dtype=np.int64),
                           class_names=class_names)


@register_format("faces", detect=is_face_folder_root, order=70)
def plan(src: Path, rejects: Rejects) -> Plan:
    """The layout's splits as `prepare` packs them."""
    index = read_face_folders(src, rejects)
    split = SplitPlan([index.relative(i) for i in range(len(index.files))], fetch_files(index.files),
                      {"identity": index.labels.astype(np.int32)})
    return Plan({"train": split}, [], index.files, ["identity"], {"identity": index.class_names},
                {"identity": len(index.class_names)})

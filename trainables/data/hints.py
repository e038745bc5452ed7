"""What each task's `--data` takes, as its one-line errors say it, and the check that the folder is there.

Free of torch and of the tasks' code: `sweep` refuses a `--data` folder that does not exist before its
heavy imports (about 3 s on 2 cores instead of 9), and the tasks' own data checks say the same words."""

from __future__ import annotations

from pathlib import Path

from trainables.data.formats.fairface import LABEL_FILES, YEARS_LABEL_FILES
from trainables.errors import UserError

DATA_HINTS = {  # task name: what to pass instead
    "attributes": ("--data /path/to/celeba (the folder holding list_attr_celeba.txt, with any attribute names on its "
                   "line 2), an image folder holding one label CSV (a `file` column, then one 0/1 column per "
                   "attribute), or their prepared shards"),
    "fairface": (f"--data /path/to/fairface (the image folder with {LABEL_FILES['train']}, or seed 001's "
                 f"{YEARS_LABEL_FILES['train']}, in it or beside it), or its prepared shards"),
    "recognition": ("--data /path/to/identity_folders (one folder per person), an InsightFace train.rec folder, "
                    "or CelebA with identity_CelebA.txt"),
}


def existing_folder(source: str, what: str) -> Path:
    """The local path `source` names (made absolute), or the one-line error that it is not there, with `what`
    to pass instead."""
    raw = Path(source).expanduser().absolute()
    if not raw.exists():
        raise UserError(f"data folder not found: {raw}: pass {what}")
    return raw

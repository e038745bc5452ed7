"""On a cluster of several nodes, the trials read their prepared data where every node can.

A raw `--data` folder and the demo sets are prepared into this node's cache (trainables/data/sources.py),
a path the other nodes do not have: their workers would fail to open it once their trial had started.
Before any trial starts, each such prepared dataset is copied once into the sweep's shared storage, as
`<--storage>/prepared/<its folder name>-<a digest of its metadata.json>`, and the trials read the copy. A
dataset already given as a URI (`--data s3://…` or `file:///…`) is read where it is.

The shard files are copied first and metadata.json, which lists them and is all a reader opens first,
last, in one write: a copy cut short is never taken for a dataset, and the next sweep copies it again.
The digest names the content, so a dataset prepared anew gets a folder of its own, and a copy already
there is used as it is.
"""

from __future__ import annotations

import hashlib
import posixpath
import time
from pathlib import Path
from typing import Callable

import pyarrow.fs as pafs

from trainables.data.shards import METADATA_FILE, load_metadata
from trainables.errors import UserError
from trainables.storage_fs import one_line, resolve

PREPARED_FOLDER = "prepared"


def local_roots(settings: dict) -> list[str]:
    """The prepared roots among the trials' data settings (a value, or an item of a list) that are local paths."""
    values = [v for value in settings.values() for v in (value if isinstance(value, (list, tuple)) else [value])]
    return [v for v in values if isinstance(v, str) and v and "://" not in v]


def share(settings: dict, storage_root: str, say: Callable[[str], None]) -> dict:
    """`settings` with each local prepared root replaced by its copy in the shared storage at `storage_root`."""
    copies = {root: shared_copy(root, storage_root, say) for root in local_roots(settings)}

    def swap(value):
        if isinstance(value, (list, tuple)):
            return type(value)(copies.get(v, v) for v in value)
        return copies.get(value, value)

    return {key: swap(value) for key, value in settings.items()}


def destination(root: str, storage_root: str) -> str:
    """Where the shared copy of the local prepared dataset at `root` goes."""
    digest = hashlib.sha256(Path(root, METADATA_FILE).read_bytes()).hexdigest()[:12]
    return f"{storage_root.rstrip('/')}/{PREPARED_FOLDER}/{Path(root).name}-{digest}"


def shared_copy(root: str, storage_root: str, say: Callable[[str], None]) -> str:
    """The URI of the copy of the local prepared dataset at `root` under `storage_root`, made now if it is
    not there yet (the shard files that metadata.json lists, then metadata.json)."""
    target = destination(root, storage_root)
    fs, path = resolve(target)
    try:
        if fs.get_file_info(posixpath.join(path, METADATA_FILE)).type == pafs.FileType.File:
            return target
        started, local = time.time(), pafs.LocalFileSystem()
        files = [rel for rels in load_metadata(root)["splits"].values() for rel in rels]
        size = 0
        for rel in files:
            fs.create_dir(posixpath.dirname(posixpath.join(path, rel)), recursive=True)
            pafs.copy_files(str(Path(root, rel)), posixpath.join(path, rel), source_filesystem=local,
                            destination_filesystem=fs)
            size += Path(root, rel).stat().st_size
        with fs.open_output_stream(posixpath.join(path, METADATA_FILE)) as out:
            out.write(Path(root, METADATA_FILE).read_bytes())
    except OSError as err:
        raise UserError(f"cannot copy the prepared data at {root} to {target}, where every node of the cluster "
                        f"would read it: {one_line(err)}; make --storage writable, or prepare the data into shared "
                        "storage yourself (`python -m orchestrator prepare FORMAT --src DIR --out s3://…`) and "
                        "pass that as --data") from None
    say(f"Copied the prepared data at {root} to {target} ({len(files)} files, {size / 1e6:.0f} MB, in "
        f"{time.time() - started:.0f}s): this node's cache is not on the cluster's other nodes")
    return target

"""On a cluster of several nodes, the trials read their prepared data where every node can.

A raw `--data` folder and the demo sets are prepared into this node's cache (trainables/data/sources.py),
a path the other nodes do not have: their workers would fail to open it once their trial had started.
Before any trial starts, each such prepared dataset is copied once into the sweep's shared storage, as
`<--storage>/prepared/<its folder name>-<a digest of its metadata.json>`, and the trials read the copy. A
dataset already given as a URI (`--data s3://…` or `file:///…`) is read where it is.

Where every node already reads the prepared folder at the same path (a cache on a filesystem they all
mount, such as an NFS home), nothing is copied: one zero-CPU task pinned to each alive node reads the
digest of metadata.json there, and a folder whose digest every node sees as this one does is read in
place. A node that cannot answer (no such file, another version, a task that fails or takes too long)
gets the copy.

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
from typing import Callable, Collection

import pyarrow.fs as pafs

from trainables.data.shards import METADATA_FILE, load_metadata
from trainables.errors import UserError
from trainables.storage_fs import one_line, resolve

PREPARED_FOLDER = "prepared"
PROBE_TIMEOUT_S = 60.0  # for every node's answer (a worker process to start on each); past it, the data is copied


def local_roots(settings: dict) -> list[str]:
    """The prepared roots among the trials' data settings (a value, or an item of a list) that are local paths."""
    values = [v for value in settings.values() for v in (value if isinstance(value, (list, tuple)) else [value])]
    return [v for v in values if isinstance(v, str) and v and "://" not in v]


def metadata_digest(root: str) -> str | None:
    """A digest of the prepared dataset at the local path `root` (of its metadata.json); None when it has none."""
    try:
        return hashlib.sha256(Path(root, METADATA_FILE).read_bytes()).hexdigest()
    except OSError:
        return None


def _digests_here(roots: list[str]) -> dict[str, str | None]:
    """What one node sees at each path (run there as a Ray task)."""
    return {root: metadata_digest(root) for root in roots}


def read_in_place(roots: list[str], timeout_s: float = PROBE_TIMEOUT_S) -> set[str]:
    """The local prepared roots that every alive node of the connected Ray cluster sees with this node's
    metadata.json: a zero-CPU task pinned to each node (it runs beside busy workers) reads it there."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    mine = _digests_here(roots)
    probe = ray.remote(num_cpus=0, max_retries=0)(_digests_here)
    nodes = [node["NodeID"] for node in ray.nodes() if node.get("Alive")]
    if not nodes:
        return set()
    calls = [probe.options(scheduling_strategy=NodeAffinitySchedulingStrategy(node, soft=False)).remote(roots)
             for node in nodes]
    done, waiting = ray.wait(calls, num_returns=len(calls), timeout=timeout_s)
    try:
        for call in waiting:
            ray.cancel(call, force=True)
        seen = ray.get(done) if not waiting else []
    except Exception:  # a node that cannot run the probe (our package missing there, a node lost): copy
        seen = []
    return {root for root in roots if seen and mine[root] and all(view.get(root) == mine[root] for view in seen)}


def share(settings: dict, storage_root: str, say: Callable[[str], None], in_place: Collection[str] = ()) -> dict:
    """`settings` with each local prepared root replaced by its copy in the shared storage at `storage_root`,
    except those in `in_place`, which every node of the cluster reads where they are (read_in_place)."""
    roots = local_roots(settings)
    for root in sorted(set(roots) & set(in_place)):
        say(f"The prepared data at {root} is read in place: every node of the cluster sees it there")
    copies = {root: shared_copy(root, storage_root, say) for root in roots if root not in in_place}

    def swap(value):
        if isinstance(value, (list, tuple)):
            return type(value)(copies.get(v, v) for v in value)
        return copies.get(value, value)

    return {key: swap(value) for key, value in settings.items()}


def destination(root: str, storage_root: str) -> str:
    """Where the shared copy of the local prepared dataset at `root` goes."""
    digest = (metadata_digest(root) or "")[:12]
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

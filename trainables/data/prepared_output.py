"""Writing a prepared dataset into OUT atomically, and deleting only files that a prepare wrote.

A prepare writes a new generation beside whatever OUT holds: shard files named
`<split>/part-<generation>-NNNNN.parquet`, and a marker `.prepare-<generation>` saying which process
is writing them. `metadata.json`, which lists every shard file and is all a reader opens first, is
switched last and in one step: a rename on a local disk, a single PUT (which an object store shows
whole or not at all) elsewhere. A reader therefore sees the old dataset or the new one, never a mix,
and a prepare that fails or is killed leaves the old one as it was. Only after the switch are the
files that the old metadata.json listed deleted, and only those: a file a user keeps in OUT
survives every re-prepare. A failed prepare deletes its own generation; one killed outright leaves
it with its marker, and the next prepare into OUT removes it once that process is gone.
"""

from __future__ import annotations

import errno
import json
import os
import posixpath
import re
import uuid

import pyarrow.fs as pafs

from trainables.data.shards import METADATA_FILE, resolve
from trainables import process_owner
from trainables.errors import UserError
from trainables.storage_fs import read_all

MARKER_PREFIX = ".prepare-"
LEGACY_MARKER = ".prepare-in-progress"  # written at OUT by earlier prepares on object stores
_SHARD = re.compile(r"part-(?:[0-9a-f]{8}-)?\d{5}\.parquet")  # the names SplitWriter gives, old and new
_SPACE = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC), errno.EFBIG}


def write_error(out: str, err: OSError) -> UserError:
    """The one line for an OSError while writing OUT: a full disk and a permission error read alike."""
    reason = os.strerror(err.errno) if err.errno else str(err).splitlines()[0][:200]
    fix = "free some space there" if err.errno in _SPACE else "make it writable"
    return UserError(f"cannot write the prepared dataset to {out}: {reason}; {fix}, or pass another --out "
                     f"(the dataset there, if any, was left as it was)")


class PreparedOutput:
    """One generation being written into OUT: `check`, `begin`, shards under `prefix`, then `commit`
    (or `abort`). `out` is a local path or a pyarrow URI."""

    def __init__(self, out: str):
        self.out = str(out)
        self.fs, self.root = resolve(self.out)
        self.generation = uuid.uuid4().hex[:8]
        self.prefix = f"{self.generation}-"
        self.local = self.fs.type_name in ("local", "subtree")  # a rename replaces a file in one step
        self._created_root, self._before = False, set()

    def _entries(self, path: str) -> list[pafs.FileInfo]:
        return self.fs.get_file_info(pafs.FileSelector(path, allow_not_found=True))

    def check(self, prepared: bool) -> None:
        """Refuse, before anything is read or written, an OUT that is not a folder we may write into:
        one under a regular file, a file, or a folder holding something else than a prepared dataset."""
        if self.local:
            parent = self.root
            while True:
                found = self.fs.get_file_info(parent).type
                if found != pafs.FileType.NotFound or posixpath.dirname(parent) == parent:
                    break
                parent = posixpath.dirname(parent)
            if found == pafs.FileType.File and parent != self.root:
                raise UserError(f"--out {self.out} is under {parent}, which is a file, not a folder; pass a folder "
                                f"path for --out (nothing was changed)")
        found = self.fs.get_file_info(self.root).type
        if found == pafs.FileType.File:
            raise UserError(f"--out {self.out} is a file, not a folder; pass a new or empty folder as --out "
                            f"(nothing was changed)")
        if found == pafs.FileType.Directory and not prepared:
            names = {posixpath.basename(e.path) for e in self._entries(self.root)}
            if names and not any(n.startswith(MARKER_PREFIX) for n in names):
                raise UserError(f"{self.out} exists and is not a prepared dataset; pass a new or empty folder as "
                                f"--out (nothing was changed)")

    def begin(self) -> None:
        """Create OUT if needed, remove the generations of prepares that were killed, and mark ours."""
        if self.fs.get_file_info(self.root).type == pafs.FileType.NotFound:
            self.fs.create_dir(self.root, recursive=True)
            self._created_root = True
        self._before = {posixpath.basename(e.path) for e in self._entries(self.root)}
        live = set(_listed(self._metadata()))  # a prepare killed after its switch left its marker
        for name in sorted(self._before):
            if name.startswith(MARKER_PREFIX) and name != LEGACY_MARKER and self._is_stale(name):
                self._delete_generation(name[len(MARKER_PREFIX):], keep=live)
        with self.fs.open_output_stream(self._marker(self.generation)) as f:
            f.write(json.dumps(process_owner.owner()).encode())

    def commit(self, meta: dict) -> None:
        """Switch metadata.json to this generation, then delete the files the replaced one listed."""
        old = self._metadata()
        target = posixpath.join(self.root, METADATA_FILE)
        data = json.dumps(meta, indent=1).encode()
        if self.local:
            staged = posixpath.join(self.root, f".{METADATA_FILE}.{self.generation}")
            with self.fs.open_output_stream(staged) as f:
                f.write(data)
            self.fs.move(staged, target)
        else:
            with self.fs.open_output_stream(target) as f:
                f.write(data)
        self._delete(self._marker(self.generation))
        keep = set(_listed(meta))
        folders = set()
        for rel in _listed(old):
            if rel not in keep:
                self._delete(posixpath.join(self.root, rel))
                folders.add(posixpath.dirname(rel))
        for folder in folders:
            self._remove_if_empty(posixpath.join(self.root, folder))
        if LEGACY_MARKER in self._before:
            self._delete(posixpath.join(self.root, LEGACY_MARKER))

    def abort(self) -> None:
        """Delete this generation's files (and OUT, if this prepare made it and it is empty again).
        Never raises: the error that caused the abort is the one to report."""
        try:
            self._delete_generation(self.generation)
            self._delete(posixpath.join(self.root, f".{METADATA_FILE}.{self.generation}"))
            if self._created_root and not self._entries(self.root):
                self.fs.delete_dir(self.root)
        except OSError:
            pass

    def _marker(self, generation: str) -> str:
        return posixpath.join(self.root, f"{MARKER_PREFIX}{generation}")

    def _metadata(self) -> dict:
        try:
            found = json.loads(read_all(self.fs, posixpath.join(self.root, METADATA_FILE)))
            return found if isinstance(found, dict) else {}
        except (OSError, ValueError):
            return {}

    def _is_stale(self, marker: str) -> bool:
        """Whether the prepare that wrote `marker` is gone: it ran on this host and its process is not alive."""
        try:
            owner = json.loads(read_all(self.fs, posixpath.join(self.root, marker)))
        except (OSError, ValueError):
            return False
        return isinstance(owner, dict) and process_owner.on_this_host(owner) and not process_owner.alive_here(owner)

    def _delete_generation(self, generation: str, keep: set[str] = frozenset()) -> None:
        """Delete the shard files of `generation` in OUT's split folders (but those in `keep`), then
        the folders this prepare created and left empty."""
        name = re.compile(rf"part-{re.escape(generation)}-\d{{5}}\.parquet")
        for folder in self._entries(self.root):
            if folder.type != pafs.FileType.Directory:
                continue
            for entry in self._entries(folder.path):
                rel = posixpath.relpath(entry.path, self.root)
                if entry.type == pafs.FileType.File and name.fullmatch(posixpath.basename(rel)) and rel not in keep:
                    self._delete(entry.path)
            if posixpath.basename(folder.path) not in self._before:
                self._remove_if_empty(folder.path)
        self._delete(self._marker(generation))

    def _delete(self, path: str) -> None:
        try:
            self.fs.delete_file(path)
        except FileNotFoundError:
            pass

    def _remove_if_empty(self, path: str) -> None:
        info = self.fs.get_file_info(path)
        if info.type == pafs.FileType.Directory and not self._entries(path):
            self.fs.delete_dir(path)


def _listed(meta: dict) -> list[str]:
    """The shard files a metadata.json lists, kept only when each is `<split>/<a name SplitWriter
    gives>`: a damaged or hand-edited metadata.json can never make a prepare delete anything else."""
    found = []
    splits = meta.get("splits") if isinstance(meta, dict) else None
    for split, files in (splits.items() if isinstance(splits, dict) else []):
        for rel in files if isinstance(files, list) else []:
            if (isinstance(rel, str) and rel.count("/") == 1 and rel.split("/")[0] == split
                    and split not in ("", ".", "..") and _SHARD.fullmatch(rel.split("/")[1])):
                found.append(rel)
    return found

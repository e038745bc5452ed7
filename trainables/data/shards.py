"""Parquet shards of a prepared dataset: the writer, and the reader that DDP ranks train from.

Layout: `ROOT/metadata.json` and `ROOT/<split>/part-<generation>-NNNNN.parquet` (older prepares
wrote `part-NNNNN.parquet`); metadata.json lists every file, and readers open only those, so the
files of a newer prepare can be written beside them before metadata.json is switched. Each row
holds one image's encoded bytes (`image`, and `image_b` for verification pairs), its names and its
labels. ROOT may be a local path or any pyarrow filesystem URI (`s3://`, `gs://`, `file://`).

Work is dealt in row slices `(shard, row group, start, stop)`, not whole row groups, so that ranks
get exactly equal training shares (n // world rows, seeded permutation of the row groups per epoch)
and evaluation shares cover each row exactly once, so each example is counted exactly once.
A slice costs one row-group read; at most two per rank per epoch are partial. Per epoch, a rank does:

    split = ShardSplit(root, "train", label_columns=[...])
    ds = ShardDataset(split, split.train_row_groups(rank, world, epoch, seed), size, augment=augment,
                      shuffle_seed=(seed, epoch), label_dtype=torch.float32)
    loader = DataLoader(ds, batch_size=b, num_workers=w, drop_last=True)  # same steps on every rank
"""

from __future__ import annotations

import json
import posixpath
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Iterator, NamedTuple, Sequence

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import torch
from torch.utils.data import IterableDataset, get_worker_info

from trainables import storage_fs
from trainables.data.decode import decode_shard_image
from trainables.data.decoded_cache import DecodedCache
from trainables.errors import UserError

METADATA_FILE = "metadata.json"
IMAGE_COLUMNS = ("image", "image_b")
PAIR_LABELS = ("issame", "fold")


def resolve(root: str) -> tuple[pafs.FileSystem, str]:
    """(filesystem, path) of a local path or a pyarrow URI such as s3://bucket/x or file:///data/x; an
    S3 store's endpoint and credentials come from the AWS environment, its requests retry for a bounded
    time (trainables/storage_fs.py)."""
    return storage_fs.resolve(root)


class SplitWriter:
    """Appends rows to `<out>/<split>/part-<prefix>NNNNN.parquet`: row groups of `row_group_rows`, files
    closed once they pass `max_file_bytes`. Image columns are stored uncompressed and without statistics
    (on the demo JPEGs zstd saved 4% of the size and cost 10% more read time); the rest zstd."""

    def __init__(self, fs: pafs.FileSystem, out: str, split: str, schema: pa.Schema,
                 row_group_rows: int = 1000, max_file_bytes: int = 64 << 20, prefix: str = ""):
        if row_group_rows < 1 or max_file_bytes < 1:
            raise ValueError("row_group_rows and max_file_bytes must be at least 1")
        self.fs, self.out, self.split, self.schema, self.prefix = fs, out, split, schema, prefix
        self.row_group_rows, self.max_file_bytes = row_group_rows, max_file_bytes
        self.buffer: dict[str, list] = {name: [] for name in schema.names}
        self.groups: list[tuple[str, int, int]] = []  # (relative path, row group, rows)
        self._writer, self._file_bytes, self._file_groups, self._parts = None, 0, 0, 0
        fs.create_dir(posixpath.join(out, split), recursive=True)

    def add_batch(self, columns: dict) -> None:
        """Append rows given column-wise (lists or numpy arrays, all of one length)."""
        for name, values in self.buffer.items():
            values.extend(columns[name].tolist() if isinstance(columns[name], np.ndarray) else columns[name])
        while len(self.buffer["image"]) >= self.row_group_rows:
            self._flush(self.row_group_rows)

    def _flush(self, rows: int) -> None:
        if not rows:
            return
        batch = {name: values[:rows] for name, values in self.buffer.items()}
        self.buffer = {name: values[rows:] for name, values in self.buffer.items()}
        size = sum(len(b) for name in IMAGE_COLUMNS if name in batch for b in batch[name])
        if self._writer is not None and self._file_bytes + size > self.max_file_bytes:
            self._close_file()
        if self._writer is None:
            rel = f"{self.split}/part-{self.prefix}{self._parts:05d}.parquet"
            self._rel, self._parts = rel, self._parts + 1
            plain = [n for n in self.schema.names if n not in IMAGE_COLUMNS]
            self._writer = pq.ParquetWriter(
                posixpath.join(self.out, rel), self.schema, filesystem=self.fs,
                compression={n: ("none" if n in IMAGE_COLUMNS else "zstd") for n in self.schema.names},
                use_dictionary=plain, write_statistics=plain)
        self._writer.write_table(pa.Table.from_pydict(batch, schema=self.schema), row_group_size=rows)
        self.groups.append((self._rel, self._file_groups, rows))
        self._file_groups += 1
        self._file_bytes += size

    def _close_file(self) -> None:
        self._writer.close()
        self._writer, self._file_bytes, self._file_groups = None, 0, 0

    def close(self) -> list[tuple[str, int, int]]:
        self._flush(len(self.buffer["image"]))
        if self._writer is not None:
            self._close_file()
        return self.groups


def load_metadata(root: str) -> dict:
    fs, path = resolve(root)
    try:
        found = json.loads(storage_fs.read_all(fs, posixpath.join(path, METADATA_FILE)))
    except FileNotFoundError:
        raise UserError(f"{root} is not a prepared dataset (no {METADATA_FILE}); make one with "
                        f"`python -m orchestrator prepare FORMAT --src DIR --out {root}`") from None
    except OSError as err:
        raise unreadable(root, METADATA_FILE, err) from None
    except ValueError as err:  # cut short or edited by hand
        raise UserError(f"{root}/{METADATA_FILE} is not valid JSON ({err}); prepare the dataset again with "
                        f"`python -m orchestrator prepare FORMAT --src DIR --out {root}`") from None
    if not isinstance(found, dict) or not isinstance(found.get("splits"), dict):
        raise UserError(f"{root}/{METADATA_FILE} does not describe a prepared dataset; prepare it again with "
                        f"`python -m orchestrator prepare FORMAT --src DIR --out {root}`")
    return found


def unreadable(root: str, rel: str, err: OSError) -> UserError:
    """A shard or metadata file that could not be read, after the store's bounded retries, as one line."""
    return UserError(f"cannot read {storage_fs.without_userinfo(str(root))}/{rel}: {storage_fs.one_line(err)}; "
                     "check that the store answers (a trial is retried from its last checkpoint, and "
                     "--resume continues the sweep)")


class RowSlice(NamedTuple):
    path: str  # relative to the dataset root
    group: int
    start: int
    stop: int


class ShardSplit:
    """One split of a prepared dataset: its row groups, read by rank."""

    def __init__(self, root: str, split: str, label_columns: Sequence[str] | None = None,
                 image_columns: Sequence[str] | None = None):
        self.root, self.split = str(root), split
        self.metadata = load_metadata(self.root)
        if split not in self.metadata["splits"]:
            raise UserError(f"{root} has no split {split!r}; it has {', '.join(self.metadata['splits'])}")
        self.pairs = split in self.metadata.get("pair_splits", [])
        self.label_columns = list(label_columns if label_columns is not None else
                                  (PAIR_LABELS if self.pairs else self.metadata["label_columns"]))
        self.image_columns = tuple(image_columns or (IMAGE_COLUMNS if self.pairs else IMAGE_COLUMNS[:1]))
        self.row_groups: list[tuple[str, int, int]] = [tuple(g) for g in self.metadata["row_groups"][split]]
        self.num_rows = sum(rows for _, _, rows in self.row_groups)
        self._fs, self._path = resolve(self.root)

    def open(self, rel: str) -> pq.ParquetFile:
        return self.reader(*self.source(rel))

    def source(self, rel: str) -> tuple[pa.NativeFile, pq.FileMetaData]:
        """Shard `rel` opened for reading, and its footer (read once)."""
        try:
            source = self._fs.open_input_file(posixpath.join(self._path, rel))
            return source, pq.read_metadata(source)
        except OSError as err:
            raise unreadable(self.root, rel, err) from None

    @staticmethod
    def reader(source: pa.NativeFile, metadata: pq.FileMetaData) -> pq.ParquetFile:
        """A reader of an opened shard, its footer given (no request). Each read of one pre-buffers the column
        chunks it needs in one coalesced request (what keeps `s3://` fast), and the reader holds those bytes
        until it is dropped: a reader kept open per shard held a row group's bytes for each of them, 13 MB
        each, 203 MiB of Arrow memory over an epoch of 100,000 CelebA images (benchmarks/scale.py)."""
        return pq.ParquetFile(source, metadata=metadata, pre_buffer=True)

    def schema(self) -> pa.Schema | None:
        """The Arrow schema of this split's shards (one footer read), None when it has no rows."""
        return self.open(self.row_groups[0][0]).schema_arrow if self.row_groups else None

    def labels(self) -> pd.DataFrame:
        """The label columns of every row, in row-group order (no image bytes are read)."""
        return self.columns(self.label_columns)

    def columns(self, names: Sequence[str]) -> pd.DataFrame:
        """These non-image columns of every row, in row-group order."""
        files = dict.fromkeys(rel for rel, _, _ in self.row_groups)
        tables = [self.open(rel).read(columns=list(names)) for rel in files]
        if not tables:
            return pd.DataFrame(columns=list(names))
        return pa.concat_tables(tables).to_pandas()

    def _cut(self, order: Sequence[int], lo: int, hi: int) -> list[RowSlice]:
        """Rows lo..hi of the row groups laid end to end in `order`, as slices."""
        out, at = [], 0
        for g in order:
            rel, group, rows = self.row_groups[g]
            start, stop = max(lo - at, 0), min(hi - at, rows)
            if start < stop:
                out.append(RowSlice(rel, group, start, stop))
            at += rows
            if at >= hi:
                break
        return out

    def train_row_groups(self, rank: int, world: int, epoch: int, seed: int) -> list[RowSlice]:
        """This rank's n // world rows of a seeded per-epoch permutation of the row groups."""
        order = np.random.default_rng([seed, epoch]).permutation(len(self.row_groups))
        per_rank = self.num_rows // world
        return self._cut(order, rank * per_rank, (rank + 1) * per_rank)

    def eval_row_groups(self, rank: int, world: int) -> list[RowSlice]:
        """Contiguous, disjoint shares in file order; together they hold every row once, no padding."""
        bounds = np.cumsum([0] + [len(p) for p in np.array_split(np.arange(self.num_rows), world)])
        return self._cut(range(len(self.row_groups)), int(bounds[rank]), int(bounds[rank + 1]))


def _share(slices: Sequence[RowSlice], lo: int, hi: int) -> list[RowSlice]:
    out, at = [], 0
    for s in slices:
        rows = s.stop - s.start
        start, stop = max(lo - at, 0), min(hi - at, rows)
        if start < stop:
            out.append(RowSlice(s.path, s.group, s.start + start, s.start + stop))
        at += rows
    return out


class ShardDataset(IterableDataset):
    """Streams (uint8 CHW image, labels) for `row_groups` (slices from ShardSplit), decoded at `size`.

    Labels are one 1-D tensor per row of `label_columns`: int64 when every column is integer or
    bool, float32 when any is floating (cast in the loss as needed, e.g. `.float()` for BCE); pass
    `label_dtype` to choose. With `shuffle_seed` (e.g. (seed, epoch)), rows are shuffled within a
    buffer spanning several row groups. `targets` maps each row group's (rows, columns) label array to
    the task's targets (a picklable callable, e.g. class ids to contiguous ones); `square` keeps the
    centred square of non-square images; `cache` keeps decoded images for the next epochs (it must only
    ever see one split at one size and crop), and beside it this process keeps each row group's labels, so
    an epoch the cache serves whole reads nothing from the store (an `s3://` epoch makes no request). With `limit`, exactly the first `limit` rows of the slices
    are yielded, so ranks with the same limit take the same number of steps. DataLoader workers
    split the rows between them (contiguous, equal to within one row).
    """

    def __init__(self, split: ShardSplit, row_groups: Sequence[RowSlice], size: int,
                 label_columns: Sequence[str] | None = None, augment: Callable | None = None,
                 shuffle_seed=None, limit: int | None = None, shuffle_buffer: int = 4096,
                 label_dtype: torch.dtype | None = None, targets: Callable | None = None, square: bool = False,
                 cache: DecodedCache | None = None):
        self.split, self.size, self.augment = split, size, augment
        self.targets, self.square, self.cache = targets, square, cache
        self.label_columns = list(label_columns if label_columns is not None else split.label_columns)
        self.shuffle_seed, self.shuffle_buffer = shuffle_seed, shuffle_buffer
        total = sum(s[3] - s[2] for s in row_groups)
        if limit is not None and limit > total:
            raise ValueError(f"limit {limit} is more than the {total} rows of these row groups")
        self.num_rows = total if limit is None else limit
        self.slices = self._limited(row_groups)
        if label_dtype is None:
            schema = split.schema()
            floating = schema is not None and any(pa.types.is_floating(schema.field(c).type)
                                                  for c in self.label_columns)
            label_dtype = torch.float32 if floating else torch.int64
        self.label_dtype = label_dtype
        self._files: dict[str, tuple[pa.NativeFile, pq.FileMetaData]] = {}  # each shard opened, and its footer
        self._labels: dict[tuple[str, int], np.ndarray] = {}  # a row group's labels, kept beside a decoded cache

    def __len__(self) -> int:
        return self.num_rows

    def _limited(self, row_groups: Sequence[RowSlice]) -> list[RowSlice]:
        """The first `num_rows` rows of `row_groups`, as slices."""
        return _share([RowSlice(*s) for s in row_groups], 0, self.num_rows)

    def __getstate__(self):
        return {**self.__dict__, "_files": {}, "_labels": {}}  # open files stay in the process that opened them

    def _read(self, s: RowSlice):
        keys = [(s.path, s.group, row) for row in range(s.start, s.stop)]
        columns = self.split.image_columns
        cached = self.cache is not None and self.cache.holds((*key, j) for key in keys for j in range(len(columns)))
        group_labels = self._labels.get((s.path, s.group)) if cached else None
        if group_labels is None:
            table = self._read_group(s.path, s.group, [*([] if cached else columns), *self.label_columns])
            group_labels = self._label_array(table)
            if self.cache is not None:  # with the images cached, a later epoch makes no request at all
                self._labels[(s.path, s.group)] = group_labels
            table = table.slice(s.start, s.stop - s.start)
        images = ([[None] * len(keys) for _ in columns] if cached
                  else [table.column(c).to_pylist() for c in columns])
        labels = group_labels[s.start:s.stop].copy()  # rows handed on never alias the kept array
        if self.targets is not None:
            labels = self.targets(labels)
        return list(zip(keys, *images, labels))

    def _read_group(self, path: str, group: int, columns: list[str]) -> pa.Table:
        opened = self._files.get(path) or self._files.setdefault(path, self.split.source(path))
        try:  # a reader for this read only: see ShardSplit.reader
            return self.split.reader(*opened).read_row_group(group, columns=columns)
        except OSError as err:
            self._files.pop(path, None)  # its connection may be gone: the next read reopens it
            raise unreadable(self.split.root, path, err) from None

    def _label_array(self, table: pa.Table) -> np.ndarray:
        """The label columns of `table` as one (rows, columns) array of the dataset's label type."""
        dtype = np.float32 if self.label_dtype.is_floating_point else np.int64
        labels = np.empty((table.num_rows, len(self.label_columns)), dtype=dtype)
        for j, c in enumerate(self.label_columns):
            labels[:, j] = table.column(c).to_numpy(zero_copy_only=False)
        return labels

    def _rows(self, slices: list[RowSlice], rng) -> Iterator[tuple]:
        """Rows of `slices` in order, or through a shuffle buffer; the next row group is read
        in a thread while this one is decoded."""
        buffer: list = []
        with ThreadPoolExecutor(1) as pool:
            pending = pool.submit(self._read, slices[0]) if slices else None
            for k in range(len(slices)):
                rows = pending.result()
                pending = pool.submit(self._read, slices[k + 1]) if k + 1 < len(slices) else None
                if rng is None:
                    yield from rows
                    continue
                buffer.extend(rows)
                while len(buffer) > self.shuffle_buffer:
                    i = int(rng.integers(len(buffer)))
                    buffer[i], buffer[-1] = buffer[-1], buffer[i]
                    yield buffer.pop()
        if rng is not None:
            for i in rng.permutation(len(buffer)):
                yield buffer[i]

    def _emit(self, row):
        key, *images, labels = row
        out = []
        for j, data in enumerate(images):
            img = self.cache.get((*key, j)) if self.cache is not None else None
            if img is None:
                img = decode_shard_image(data, self.size, f"a row of {self.split.root} split {self.split.split}",
                                         square=self.square)
                if self.cache is not None:
                    self.cache.put((*key, j), img)
            out.append(self.augment(img) if self.augment is not None else img)
        return (*out, torch.as_tensor(labels).to(self.label_dtype))

    def __iter__(self):
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info else (0, 1)
        bounds = np.cumsum([0] + [len(p) for p in np.array_split(np.arange(self.num_rows), workers)])
        mine = _share(self.slices, int(bounds[worker]), int(bounds[worker + 1]))
        rng = None
        if self.shuffle_seed is not None:
            rng = np.random.default_rng([*np.atleast_1d(self.shuffle_seed).tolist(), worker])
        for row in self._rows(mine, rng):
            yield self._emit(row)


class PairShardDataset(ShardDataset):
    """Streams (left, right, issame) uint8 images and a bool from a verification split."""

    def __init__(self, split: ShardSplit, row_groups: Sequence[RowSlice], size: int, **kwargs):
        kwargs.setdefault("label_columns", ["issame"])
        super().__init__(split, row_groups, size, label_dtype=torch.bool, **kwargs)

    def _emit(self, row):
        left, right, labels = super()._emit(row)
        return left, right, labels[0]

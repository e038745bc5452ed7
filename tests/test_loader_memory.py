"""The shard loader holds no row group's bytes once it has handed its rows on. A Parquet reader keeps the
column chunks it pre-buffered for its last read until the reader is dropped; one reader kept open per shard
file held a row group for each file, 209 MiB of peak RSS over an epoch of 100,000 CelebA images in 16 files
(benchmarks/scale.py). Checked with Arrow's own count of the bytes it has allocated."""

from __future__ import annotations

import pyarrow as pa

from trainables.data.demo.celeba import write_demo_celeba
from trainables.data.prepare import prepare
from trainables.data.shards import ShardDataset, ShardSplit


def test_an_epoch_over_many_shard_files_keeps_no_row_group_in_memory(tmp_path):
    raw = write_demo_celeba(tmp_path / "raw", num_images=240, seed=3)
    # 16-row groups, a new file after every group or two: many files, each read from in turn.
    prepare("celeba", raw, str(tmp_path / "shards"), row_group_rows=16, max_file_bytes=64 << 10)
    split = ShardSplit(str(tmp_path / "shards"), "train", label_columns=["Smiling"])
    files = {path for path, _, _ in split.row_groups}
    assert len(files) >= 6, files
    dataset = ShardDataset(split, split.eval_row_groups(0, 1), 32, ["Smiling"])

    before = pa.total_allocated_bytes()
    rows = sum(1 for _ in dataset)
    held = pa.total_allocated_bytes() - before
    assert rows == split.num_rows
    assert len(dataset._files) == len(files)  # every file stays open (its footer read once)...
    path, group, _ = split.row_groups[0]
    one_group = split.open(path).read_row_group(group, columns=["image", "Smiling"]).nbytes
    # ...but no reader holds a row group now: not one group per file (the old loader held about len(files)).
    assert held < one_group, (held, one_group, len(files))

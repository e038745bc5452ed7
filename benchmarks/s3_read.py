"""Reading a whole checkpoint file from S3: `storage_fs.read_all` (one ranged GET) against pyarrow's input-stream
`read()` (256 KiB per GET), which `export`, the sweep's logged model and the state file used before.

A ResNet-18 state_dict (the demo's and the smoke sweep's checkpoint weights, about 45 MB) is written into a
bucket of moto's S3 server on loopback, started in this process as the tests start it (tests/s3_server.py).
The two reads alternate, REPEAT times each, in one run, since these machines are shared and noisy; each read
is checked to return the file's bytes, and the server's access log counts its GET requests. On loopback a
request costs no network round trip, so a real store adds its latency (tens of ms) to every GET the stream
makes; moto also copies the object for each ranged GET, which is why the stream is slower here than on S3.

The last line is

    stream_s=A read_all_s=B stream_vs_read_all=C gets_stream=D gets_read_all=E

(medians of the seconds; C = A / B).

    python benchmarks/s3_read.py [--repeat 3]
"""

from __future__ import annotations

import argparse
import io
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def checkpoint_bytes() -> bytes:
    import timm
    import torch

    buffer = io.BytesIO()
    torch.save(timm.create_model("resnet18", num_classes=40).state_dict(), buffer)
    return buffer.getvalue()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    sys.path.insert(0, str(ROOT / "tests"))
    from s3_server import S3Server, access_log, apply_env, restore_env

    from trainables import storage_fs

    data = checkpoint_bytes()
    server = S3Server()
    server.start()
    saved = apply_env(server)
    try:
        bucket = server.create_bucket("bench-read")
        fs, path = storage_fs.resolve(f"s3://{bucket}/train_runs/checkpoint_000001/model.pt")
        with fs.open_output_stream(path) as out:
            out.write(data)

        def stream() -> bytes:
            with fs.open_input_stream(path) as handle:
                return handle.read()

        times: dict[str, list[float]] = {"stream": [], "read_all": []}
        requests: dict[str, int] = {}
        for _ in range(args.repeat):
            for name, read in (("stream", stream), ("read_all", lambda: storage_fs.read_all(fs, path))):
                with access_log() as lines:
                    start = time.perf_counter()
                    got = read()
                    times[name].append(time.perf_counter() - start)
                requests[name] = sum("GET /" in line for line in lines)
                assert got == data, f"{name} returned other bytes"
    finally:
        restore_env(saved)
        server.stop()
    stream_s, read_all_s = statistics.median(times["stream"]), statistics.median(times["read_all"])
    print(f"a {len(data) / 1e6:.1f} MB ResNet-18 state_dict from moto on loopback, {args.repeat} reads each, alternating:")
    for name in times:
        print(f"  {name:9s} {', '.join(f'{t:.2f}' for t in times[name])} s  ({requests[name]} GET requests)")
    print(f"stream_s={stream_s:.3f} read_all_s={read_all_s:.3f} stream_vs_read_all={stream_s / read_all_s:.1f} "
          f"gets_stream={requests['stream']} gets_read_all={requests['read_all']}")


if __name__ == "__main__":
    main()

"""Does Ray Serve keep up with in-process `predict`, and what does request batching buy?

In one run, on one local Ray, the same export folder and the same photos (one per request):

1. in-process: `trainables.inference.run_model` on the photos' files, batched as `predict` does;
2. served with batching: `orchestrator serve`'s application (max_batch_size 16), 16 client threads each
   sending a fixed number of POST /predict requests, one photo each;
3. served without batching: the same application with max_batch_size 1, the same clients.

For each served mode it prints p50 and p99 latency and requests/s; for in-process, photos/s. The replica
gets 1 CPU, and the in-process run 1 torch thread, so both use one core's worth of compute. The last line is

    serve_vs_inprocess=R batching_gain=G

R being batched requests/s over in-process photos/s and G batched over unbatched requests/s.
Targets: R >= 0.5, G >= 1.5 at 16 clients.

    python benchmarks/serve.py [--model EXPORT_DIR] [--clients 16] [--requests 20] [--image-size 112]

Without --model it writes an untrained resnet18 attribute model (40 outputs) at --image-size as an export
folder: throughput does not depend on what the weights learned. The default, 112 px, is the aligned face of
face recognition (ArcFace, MobileFaceNet). On one CPU the two ratios pull apart at the ends: at 64 px Ray
Serve's fixed cost per request outweighs the forward pass (R falls), at 128 px a batch is barely cheaper per
photo than one photo on one thread (G falls); the README gives the figures at 64, 96, 112 and 128 px.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def untrained_export(folder: Path, size: int) -> Path:
    """An export folder (as `orchestrator export` writes one) of an untrained resnet18 attribute model."""
    from safetensors.torch import save_file

    from trainables.config import TrainConfig
    from trainables.data.formats.celeba import ATTRIBUTE_NAMES
    from trainables.artifacts import THRESHOLDS
    from trainables.inference import CONFIG_FILE, LABELS_FILE, MODEL_FILE
    from trainables.models import build_model

    cfg = TrainConfig.from_dict({"task": "attributes", "model.name": "resnet18", "data.image_size": size})
    folder.mkdir(parents=True, exist_ok=True)
    save_file(build_model(cfg.model, len(ATTRIBUTE_NAMES)).state_dict(), str(folder / MODEL_FILE))
    (folder / CONFIG_FILE).write_text(json.dumps(cfg.to_flat_dict()))
    (folder / LABELS_FILE).write_text(json.dumps({"outputs": list(ATTRIBUTE_NAMES)}))
    (folder / THRESHOLDS).write_text(json.dumps({"fixed": {n: 0.5 for n in ATTRIBUTE_NAMES}}))
    return folder


def photos(folder: Path, n: int, size: int) -> list[Path]:
    """n distinct noise JPEGs at 2x the model's size (decoding and resizing are part of the work)."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        path = folder / f"{i:03d}.jpg"
        Image.fromarray(rng.integers(0, 256, (2 * size, 2 * size, 3), dtype=np.uint8)).save(path, quality=90)
        paths.append(path)
    return paths


def in_process(model: Path, paths: list[Path], total: int) -> float:
    """Photos/s of `run_model` over `total` photos (the list repeated), one torch thread."""
    import torch

    from trainables import inference

    torch.set_num_threads(1)
    exported = inference.load_exported(model, device="cpu")
    files = [paths[i % len(paths)] for i in range(total)]
    inference.run_model(exported, files[:16])  # warm-up
    start = time.perf_counter()
    inference.run_model(exported, files)
    return total / (time.perf_counter() - start)


def load(url: str, paths: list[Path], clients: int, per_client: int) -> tuple[float, float, float]:
    """(p50 s, p99 s, requests/s) of `clients` threads each sending `per_client` one-photo requests."""
    import requests

    # Each photo's multipart body is encoded once, so the 16 client threads (in this process, on the server's
    # cores) spend as little as they can: the figures are the server's, not the client library's.
    forms = [requests.Request("POST", url, files=[("image", ("face.jpg", io.BytesIO(p.read_bytes()), "image/jpeg"))]
                              ).prepare() for p in paths]
    forms = [(form.body, {"Content-Type": form.headers["Content-Type"]}) for form in forms]
    latencies: list[float] = []
    failures: list[str] = []
    lock = threading.Lock()

    def client(k: int) -> None:
        with requests.Session() as session:
            for j in range(per_client):
                body, headers = forms[(k * per_client + j) % len(forms)]
                began = time.perf_counter()
                answer = session.post(url, data=body, headers=headers, timeout=120)
                took = time.perf_counter() - began
                with lock:
                    (latencies.append(took) if answer.status_code == 200 else failures.append(answer.text[:200]))

    for warm in range(2):  # the replica's first requests pay for imports and allocations
        client(warm)
    latencies.clear()
    threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    if failures:
        raise SystemExit(f"{len(failures)} requests failed, e.g. {failures[0]}")
    return float(np.percentile(latencies, 50)), float(np.percentile(latencies, 99)), len(latencies) / wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="an export folder (default: an untrained resnet18 attribute model)")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--requests", type=int, default=20, help="requests per client")
    parser.add_argument("--image-size", type=int, default=112,
                        help="the model's input in pixels (default 112, recognition's aligned face)")
    parser.add_argument("--port", type=int, default=8123)
    args = parser.parse_args()

    from ray import serve

    from orchestrator.commands.serve import model_files, start

    with tempfile.TemporaryDirectory() as tmp:
        model = Path(args.model) if args.model else untrained_export(Path(tmp) / "model", args.image_size)
        paths = photos(Path(tmp) / "photos", 32, args.image_size)
        total = args.clients * args.requests
        print(f"{args.clients} clients x {args.requests} requests of one {2 * args.image_size} px JPEG; "
              f"model {model}", flush=True)
        rates = {}
        try:
            for name, batch in (("batched", 16), ("unbatched", 1)):
                url, _ = start(model_files(model), name, port=args.port, name=name, route_prefix=f"/{name}",
                               max_batch_size=batch)
                p50, p99, rate = load(f"{url}predict", paths, args.clients, args.requests)
                rates[name] = rate
                print(f"serve {name:<9} (max_batch_size {batch:>2}): p50 {p50 * 1000:7.1f} ms  p99 {p99 * 1000:7.1f} ms  "
                      f"{rate:7.1f} requests/s", flush=True)
                serve.delete(name)
        finally:
            serve.shutdown()
        local = in_process(model, paths, total)
        print(f"in-process run_model (1 thread, batch 64): {local:7.1f} photos/s", flush=True)
    print(f"serve_vs_inprocess={rates['batched'] / local:.2f} batching_gain={rates['batched'] / rates['unbatched']:.2f}")


if __name__ == "__main__":
    main()

"""Models served on Ray Serve for the serve tests: tiny exports made the way the export tests make them
(tests/trial_fixtures.py), one Serve instance per test module, and a multipart client."""

from __future__ import annotations

import contextlib

import requests

from mlflow_server import free_port
from trial_fixtures import fake_trial

SMALL_LIMIT = 64 * 1024  # the tests' upload limit, so an oversized request stays small


def fairface_export(tmp, mlflow_uri: str):
    """(export folder, dataset root) of a one-epoch multi-head FairFace trial at 32 px."""
    from orchestrator.export import export_run
    from trainables.data.demo.fairface import write_demo_fairface

    root = write_demo_fairface(tmp / "fairface", num_images=60, seed=5)
    trial = fake_trial(tmp, mlflow_uri, {"task": "fairface", "data.root": str(root), "data.image_size": 32,
                                         "model.name": "resnet18"}, 1, "serve-fairface")
    export_run(trial["child"], tmp / "model", tracking_uri=trial["uri"])
    return tmp / "model", root


# 16 photos each of 8 people in steps of 4: 32 steps, enough for the batch norms' running statistics to leave
# their initial values. After 2 steps the eval-mode network mapped every face to one embedding (verification
# accuracy 0.5, every pair's distance under 1e-5), and tests comparing distances compared rounding noise.
TINY = dict(num_identities=8, images_per_identity=16, verify_identities=20, pairs_per_fold=2, seed=5)
TINY_EMBEDDING = 32


def recognition_export(tmp, mlflow_uri: str):
    """(export folder, the trial, the demo faces' root, export's summary) of a one-epoch MobileFaceNet trial at
    112 px with 32-dimensional embeddings, verified on the demo's 40 LFW-style pairs: it tells the demo faces
    apart (verification accuracy about 0.7), so its distances and its pairs' Grad-CAM carry signal."""
    from orchestrator.export import export_run
    from trainables.data.demo.faces import write_demo_faces

    root = write_demo_faces(tmp / "faces", **TINY)
    trial = fake_trial(tmp, mlflow_uri, {"task": "recognition", "model.name": "mobilefacenet",
                                         "data.root": str(root / "train"), "data.image_size": 112,
                                         "eval.targets": [str(root / "lfw")], "head.embedding_size": TINY_EMBEDDING,
                                         "optim.batch_size": 4},
                       1, "recognition-export")
    summary = export_run(trial["child"], tmp / "model", tracking_uri=trial["uri"])
    return tmp / "model", trial, root, summary


def dense_cam_export(folder, out):
    """A copy of the export `folder` of `recognition_export` with a seeded fresh network's weights in place of the
    trial's, for the tests of Grad-CAM's maths. The briefly trained network's pairs of different people often
    have no positive evidence at all, so the ReLU leaves one photo's map all zero; the fresh network's maps are
    dense for every pair (cosines about 0.6 to 0.96), so each map shows whether the code computed it right."""
    import shutil

    import torch
    from safetensors.torch import save_file

    from trainables.models.embedding import EmbeddingNet

    shutil.copytree(folder, out)
    torch.manual_seed(0)
    save_file(EmbeddingNet("mobilefacenet", TINY_EMBEDDING).eval().state_dict(), str(out / "model.safetensors"))
    return out


@contextlib.contextmanager
def serving(models: dict, **options):
    """Each {name: export folder} as its own application under /name/ of one Serve instance on a free port;
    yields the base URL, and shuts Serve down at the end, whatever happened."""
    from ray import serve

    from orchestrator.commands.serve import model_files, start

    port = free_port()
    try:
        for name, folder in models.items():
            start(model_files(folder), name, port=port, name=name, route_prefix=f"/{name}",
                  cpus_per_replica=0.25, max_upload_bytes=SMALL_LIMIT, **options)
        yield f"http://127.0.0.1:{port}"
    finally:
        serve.shutdown()


def post(url: str, photos: list[tuple[str, bytes]], field: str = "image", timeout: float = 60, **data):
    files = [(field, (name, content, "application/octet-stream")) for name, content in photos]
    return requests.post(url, files=files, data=data, timeout=timeout)


@contextlib.contextmanager
def serve_command(*args: str, seconds: float = 300, env: dict | None = None, stop: int | None = None):
    """`python -m orchestrator serve ARGS --port P` as a person runs it (on its own local Ray unless ARGS name
    an --address; `env` is its environment, this one's by default); yields the page's URL once it says it is
    serving, then stops it with `stop` (Ctrl-C's SIGINT by default) and checks that it said so and exited 0."""
    import signal
    import subprocess
    import sys
    import threading

    from waiting import wait_until

    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "orchestrator", "serve", *args, "--port", str(port)],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(process.stdout.readline, "")), daemon=True)
    reader.start()
    try:
        said = wait_until(lambda: next((l for l in lines if l.startswith("serving")), None) or process.poll() is not None,
                          seconds, "`serve` to say it is serving")
        assert said is not True and process.poll() is None, f"serve exited {process.returncode}: {lines[-5:]}"
        assert f"http://127.0.0.1:{port}/" in said, said
        yield f"http://127.0.0.1:{port}/"
        process.send_signal(signal.SIGINT if stop is None else stop)
        assert process.wait(timeout=120) == 0
        reader.join(timeout=10)
        assert "stopped serving\n" in lines, lines[-3:]
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()

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

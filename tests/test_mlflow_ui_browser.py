"""The MLflow UI as a person opens it: a real `mlflow server` and headless Chromium on the link that a
sweep prints. It must land on the experiment's training runs, with the dataset input shown, not on
MLflow 3's empty GenAI overview. Skipped where no Chromium is installed (Debian's `chromium`)."""

from __future__ import annotations

import subprocess
import sys
import time
import urllib.request


from browser import BROWSER, needs_browser
from mlflow_server import free_port, server_env
from orchestrator.tracking import DatasetRecord, Tracking

pytestmark = needs_browser


def _wait_healthy(url: str, server: subprocess.Popen, seconds: float = 90) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert server.poll() is None, "mlflow server exited"
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2):
                return
        except OSError:
            time.sleep(0.5)  # polling for a condition (the server answering), not waiting a fixed time
    raise AssertionError("mlflow server did not become healthy")


def test_the_printed_link_opens_the_training_runs(tmp_path):
    store = f"sqlite:///{tmp_path}/mlflow.db"
    tracking = Tracking(store)
    experiment = tracking.experiment_id("celeba_backbones")
    run_id, _ = tracking.find_or_create_run(experiment, {"orchestrator.sweep_path": str(tmp_path)}, "my-sweep", {})
    tracking.log_dataset(run_id, DatasetRecord(str(tmp_path / "celeba-shards"), "feedc0de12345678", "celeba",
                                               {"train": 8, "val": 1, "test": 1}))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = subprocess.Popen([sys.executable, "-m", "mlflow", "server", "--backend-store-uri", store,
                               "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
                              env=server_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_healthy(url, server)
        served = Tracking.__new__(Tracking)
        served.uri = url
        link = served.runs_url(experiment)
        dom = subprocess.run([BROWSER, "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=15000",
                              "--dump-dom", link], capture_output=True, text=True, timeout=120).stdout
    finally:
        server.terminate()
        server.wait(timeout=30)
    assert "Training runs" in dom and "my-sweep" in dom
    assert "celeba-shards (feedc0de12345678)" in dom

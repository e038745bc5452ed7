"""Shared fixtures: one local Ray per session for tests marked `ray`, a shared demo-data cache, the
one CLI smoke sweep that crashes and resumes, one trained and exported attribute trial for the export
tests, one trained and exported face-recognition trial, skipping of `gpu` tests where there is no CUDA
device, which tests share one of pytest-xdist's two processes, and which run with the other one waiting."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Every process the tests start (a CLI sweep, `ray start`, Ray's workers) imports this checkout's code,
# whichever copy of the project pip installed in editable mode.
ROOT = Path(__file__).resolve().parents[1]
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))


@pytest.fixture(scope="session", autouse=True)
def one_torch_thread():
    """Unit tests train tiny models: one thread each, because multi-threaded kernels collapse
    (10-20x slower) when the 2 cores are shared with Ray workers or other processes."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="session", autouse=True)
def work_in_a_temporary_folder(tmp_path_factory):
    """MLflow's own client puts a sqlite store's artifacts under the working folder (./mlruns) when it makes
    an experiment (the product's Tracking puts them beside the database): the tests that make theirs with
    MLflow's client (tests/trial_fixtures.py) would leave them in the checkout. The session works in a
    temporary folder instead (the CLI stories run in their own)."""
    here = os.getcwd()
    os.chdir(tmp_path_factory.mktemp("cwd"))
    yield
    os.chdir(here)


@pytest.fixture(scope="session")
def demo_cache(tmp_path_factory):
    """One demo-data cache for the whole session (the demo set is deterministic)."""
    path = os.environ.get("FACE_ORCHESTRATOR_TEST_CACHE") or str(tmp_path_factory.mktemp("demo-cache"))
    os.environ["FACE_ORCHESTRATOR_CACHE"] = path
    return path


@pytest.fixture(scope="session")
def local_ray(demo_cache):
    """A local Ray of 2 CPUs shared by every `ray` test; never attaches to a running cluster."""
    import ray

    from orchestrator import cluster, local_ray

    os.environ.pop("RAY_ADDRESS", None)
    cluster.local_ray_env()
    # Workers' output stays in Ray's log folder, as a command's does by default: printed here, it arrived
    # whenever Ray forwarded it, in whichever test was then capturing this process's output.
    # No dashboard either, as a command's local Ray has none by default: tests read Ray's tables from the GCS.
    # A start that times out on the busy machine gets the command's second try.
    local_ray.start_local_ray(dict(address="local", num_cpus=2, include_dashboard=cluster.dashboard_wanted(),
                                 logging_level="ERROR", log_to_driver=cluster.worker_logs_shown()))
    assert ray.is_initialized()
    cluster.connect(None)  # a no-op now: run_sweep finds this Ray
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def crashed_smoke_sweep(demo_cache, tmp_path_factory):
    """`sweep celeba_backbones --smoke` through the CLI, crashed twice and resumed (tests/crash_story.py).

    Every trial start costs Ray Train about 15 s here, so one sweep serves two kinds of test: the
    fault-tolerance tests judge what the crashes left, and the sweep tests judge the finished sweep,
    which must be as complete as one that never crashed.
    """
    from crash_story import crash_and_resume

    return crash_and_resume(tmp_path_factory.mktemp("crashed-smoke"))


# Session fixtures that cost a minute or more: the tests that use one run in the same pytest process
# (`--dist loadgroup`), so that it is built once. Any other test stays with the rest of its file, whose
# module fixtures are built once too.
SHARED_ONCE = ("crashed_smoke_sweep", "recognition_exported")


def xdist_group(item) -> str:
    """The group of tests that one pytest-xdist worker runs, one after another, for this test."""
    shared = [name for name in SHARED_ONCE if name in item.fixturenames]
    return shared[0] if shared else item.nodeid.split("::", 1)[0]


@pytest.fixture(autouse=True)
def alone_when_marked(request, tmp_path_factory):
    """A test marked `alone` runs while the other pytest-xdist worker waits between its tests; every other
    test shares the machine. A reader-writer lock of two files in the workers' common temporary folder: the
    turnstile keeps a waiting `alone` test from being starved by the other worker's next tests."""
    if "PYTEST_XDIST_WORKER" not in os.environ:
        yield
        return
    import fcntl

    common = tmp_path_factory.getbasetemp().parent
    alone = request.node.get_closest_marker("alone") is not None
    with open(common / "alone.turnstile", "a") as turnstile, open(common / "alone.lock", "a") as lock:
        fcntl.flock(turnstile, fcntl.LOCK_EX)
        fcntl.flock(lock, fcntl.LOCK_EX if alone else fcntl.LOCK_SH)
        if not alone:
            fcntl.flock(turnstile, fcntl.LOCK_UN)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
            if alone:
                fcntl.flock(turnstile, fcntl.LOCK_UN)


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist's own hook reads the xdist_group marks
def pytest_collection_modifyitems(config, items):
    for item in items:
        item.add_marker(pytest.mark.xdist_group(xdist_group(item)))
    try:
        import torch

        has_gpu = torch.cuda.is_available()
    except ImportError:
        has_gpu = False
    if has_gpu:
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


# ---- a trained, recorded and exported attribute trial, shared by the export tests ----------------

@pytest.fixture(scope="session")
def smiling_train_split(tmp_path_factory):
    """The train split of a 120-image CelebA-format set in row groups of 16, read for its Smiling label:
    for the training loader's own tests."""
    from trainables.data.demo.celeba import write_demo_celeba
    from trainables.data.prepare import prepare
    from trainables.data.shards import ShardSplit

    tmp = tmp_path_factory.mktemp("smiling")
    prepare("celeba", write_demo_celeba(tmp / "raw", num_images=120, seed=2), str(tmp / "shards"), row_group_rows=16)
    return ShardSplit(str(tmp / "shards"), "train", label_columns=["Smiling"])


@pytest.fixture(scope="session")
def mlflow_uri(tmp_path_factory):
    """One MLflow database for the export tests: creating one costs seconds."""
    from mlflow import MlflowClient

    uri = f"sqlite:///{tmp_path_factory.mktemp('mlflow')}/mlflow.db"
    MlflowClient(uri).search_experiments(max_results=1)
    return uri


@pytest.fixture(scope="session")
def celeba_trial(tmp_path_factory, mlflow_uri):
    """A two-epoch attribute trial, checkpointed and recorded (tests/trial_fixtures.py)."""
    from trial_fixtures import fake_trial

    from trainables.data.demo.celeba import write_demo_celeba

    tmp = tmp_path_factory.mktemp("celeba_trial")
    root = write_demo_celeba(tmp / "celeba", num_images=120, seed=5)
    config = {"data.root": str(root), "data.image_size": 32, "model.name": "resnet18"}
    return fake_trial(tmp, mlflow_uri, config, 2, "celeba")


@pytest.fixture(scope="session")
def exported(celeba_trial):
    from orchestrator.export import export_run

    out = celeba_trial["tmp"] / "export"
    summary = export_run(celeba_trial["child"], out, tracking_uri=celeba_trial["uri"])
    return out, summary


@pytest.fixture(scope="session")
def recognition_exported(tmp_path_factory, mlflow_uri):
    """(export folder, the trial, the demo faces' root, export's summary) of one trained and exported
    MobileFaceNet trial (tests/serve_fixtures.py), shared by the recognition export, Grad-CAM and serve tests."""
    from serve_fixtures import recognition_export

    return recognition_export(tmp_path_factory.mktemp("recognition"), mlflow_uri)


# ---- a real S3 API on loopback (tests/s3_server.py) ----------------------------------------------

@pytest.fixture(scope="session")
def s3_server():
    """moto's S3 server on a free loopback port, with this process's AWS environment pointing at it
    (subprocesses and local Ray workers inherit it). A test may stop and start it: buckets are kept."""
    from s3_server import S3Server, apply_env, restore_env

    server = S3Server()
    server.start()
    saved = apply_env(server)
    yield server
    restore_env(saved)
    server.stop()

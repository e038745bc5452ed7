"""benchmarks/suite_cpu.py: the CPU a command's processes spend is counted, under the kind of each process's
latest title (Ray renames a worker when it becomes an actor), and a process alive before counts only what it
spends after."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import threading
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "suite_cpu.py"
BURN = "import time\nstart = time.process_time()\nwhile time.process_time() - start < {s}: pass\n{after}"


def _bench():
    spec = importlib.util.spec_from_file_location("suite_cpu", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_titles_name_their_kind():
    bench = _bench()
    assert bench.kind_of("ray::RayTrainWorker") == "train_workers"
    assert bench.kind_of("ray::TrainController.run") == "actor_chain"
    assert bench.kind_of("ray::ImplicitFunc.train") == "actor_chain"
    assert bench.kind_of("ray::DashboardAgent") == "ray_system"
    assert bench.kind_of("/usr/lib/python3/site-packages/ray/core/src/ray/gcs/gcs_server --log_dir=/tmp") == "ray_system"
    assert bench.kind_of("python -m orchestrator sweep celeba_backbones --smoke") == "drivers"
    assert bench.kind_of("python -c import sys;exec(eval(sys.stdin.readline()))") == "pytest"
    assert bench.kind_of("ray::ServeReplica:faces:FaceModel") == "serve"
    assert bench.kind_of("sleep 1") == "other"


def test_a_childs_cpu_is_counted_and_an_older_process_counts_only_what_it_spends_after(tmp_path):
    bench = _bench()
    # Alive before the sampler starts: it has spent 0.6 s, then spends 0.4 s more once told to go on.
    go = tmp_path / "go"
    older = subprocess.Popen([sys.executable, "-c", BURN.format(s=0.6, after=(
        f"import os\nwhile not os.path.exists({str(go)!r}): time.sleep(0.05)\n" + BURN.format(s=0.4, after="")))])
    while bench.read_stat(str(older.pid))[0] < 0.6:
        threading.Event().wait(0.05)
    sampler = bench.Sampler()
    thread = threading.Thread(target=sampler.run, daemon=True)
    thread.start()
    go.touch()
    # A new child titled as a driver spends 1.0 s, then idles long enough for a sample to see all of it.
    child = subprocess.Popen([sys.executable, "-c", BURN.format(s=1.0, after="time.sleep(1.5)"), "-m orchestrator"])
    assert child.wait() == 0
    older.wait()  # reaped only now: until then its /proc entry kept what it spent, for the sampler to read
    sampler.stopped.set()
    thread.join()
    spent = {key[0]: sampler.last[key] - sampler.first[key] for key in sampler.last}
    assert 0.3 <= spent[str(older.pid)] <= 0.55, spent[str(older.pid)]  # not the 0.6 s from before
    # The sampler reads every process of the machine: another test's command may be a driver too, so the child is
    # found by its pid, and its kind by the title the sampler kept.
    (key,) = [key for key in sampler.last if key[0] == str(child.pid)]
    assert 0.9 <= spent[str(child.pid)] <= 1.3 and bench.kind_of(sampler.title[key]) == "drivers", spent
    kinds = sampler.by_kind()
    assert kinds["drivers"][0] >= 0.9 and kinds["drivers"][1] >= 1, kinds


"""The suite runs in two pytest-xdist processes (tests/conftest.py): a nested pytest run of small tests,
with this suite's conftest, shows that a test marked `alone` runs while the other process waits, and that
every test using one of the expensive session fixtures runs in one process, where it is built once."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

TIMES = '''
import json, os, time
from pathlib import Path
import pytest

def record(name, started):
    log = Path(os.environ["SHARING_LOG"])
    with open(log, "a") as out:
        out.write(json.dumps({"name": name, "worker": os.environ.get("PYTEST_XDIST_WORKER"),
                              "start": started, "end": time.time()}) + "\\n")
'''

BUILT = '''

@pytest.fixture(scope="session")
def recognition_exported():
    import json, time
    with open(os.environ["SHARING_LOG"], "a") as out:
        out.write(json.dumps({"name": "built", "worker": os.environ.get("PYTEST_XDIST_WORKER")}) + "\\n")
'''

ALONE = TIMES + '''
@pytest.mark.alone
def test_alone():
    started = time.time()
    time.sleep(3)
    record("alone", started)

@pytest.mark.parametrize("n", range(4))
def test_uses_the_shared_fixture(recognition_exported, n):
    record(f"user{n}", time.time())
'''

SHARED = TIMES + '''
@pytest.mark.parametrize("n", range(16))
def test_shared(n):
    started = time.time()
    time.sleep(0.4)
    record(f"shared{n}", started)

def test_another_user(recognition_exported):
    record("user4", time.time())
'''


def outer_free(env: dict) -> dict:
    """This process's environment without what the outer pytest run (and its xdist worker) put there."""
    return {k: v for k, v in env.items() if not k.startswith(("PYTEST_XDIST_", "PYTEST_ADDOPTS"))}


def test_an_alone_test_runs_while_the_other_worker_waits_and_shared_fixtures_are_built_once(tmp_path):
    # The suite's conftest, its expensive fixture replaced by one that records where it is built
    (tmp_path / "conftest.py").write_text(Path(__file__).with_name("conftest.py").read_text() + BUILT)
    (tmp_path / "test_a.py").write_text(ALONE)
    (tmp_path / "test_b.py").write_text(SHARED)
    log = tmp_path / "log.jsonl"
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-n", "2",
                          "--dist", "loadgroup", "-o", "addopts=", "-o", "markers=alone: runs alone",
                          "--rootdir", str(tmp_path), "-c", "/dev/null", "--basetemp", str(tmp_path / "temp"),
                          str(tmp_path / "test_a.py"), str(tmp_path / "test_b.py")],
                         cwd=tmp_path, capture_output=True, text=True, timeout=300,
                         env={**outer_free(os.environ), "SHARING_LOG": str(log)})
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    records = [json.loads(line) for line in log.read_text().splitlines()]
    alone = next(r for r in records if r["name"] == "alone")
    shared = [r for r in records if r["name"].startswith("shared")]
    assert len(shared) == 16 and {r["worker"] for r in shared} != {alone["worker"]}, records
    overlapping = [r["name"] for r in shared if r["start"] < alone["end"] and r["end"] > alone["start"]]
    assert overlapping == [], overlapping
    users = [r for r in records if r["name"].startswith("user")]
    assert len(users) == 5 and len({r["worker"] for r in users}) == 1, users
    assert sum(r["name"] == "built" for r in records) == 1, records

"""How long a command takes to end once its work is done: Python's own exit against `orchestrator.__main__.leave`.

Each run is a fresh process that imports what a sweep's driver imports (torch, timm, Ray, MLflow and our
modules), starts and stops nothing else, prints the time, and ends either with `sys.exit(0)` (Python's
teardown: every object of the interpreter freed one by one) or with `leave(0)` (the atexit handlers and the
other threads' work, then `os._exit`). The two are run in turns, REPEAT times each, in one run, since these
machines are shared and noisy; the exit time is the process's end (seen by this script) minus the time it
printed last.

The last line is

    exit_s_python=A exit_s_leave=B saved_s=C

(medians). Every CLI invocation that imports torch saves C seconds; the test suite runs dozens.

    python benchmarks/cli_exit.py [--repeat 5]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

CHILD = """
import sys, time
import torch, timm, mlflow, ray
import orchestrator.sweep, orchestrator.export, orchestrator.logged_model
from orchestrator.__main__ import leave
print(time.time(), flush=True)
sys.exit(0) if sys.argv[1] == "python" else leave(0)
"""


def exit_seconds(how: str) -> float:
    proc = subprocess.Popen([sys.executable, "-c", CHILD, how], stdout=subprocess.PIPE, text=True)
    printed = float(proc.stdout.readline())
    proc.wait()
    ended = time.time()
    if proc.returncode != 0:
        raise SystemExit(f"the child ({how}) exited {proc.returncode}")
    return ended - printed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    times: dict[str, list[float]] = {"python": [], "leave": []}
    for round_ in range(args.repeat):
        for how in times:
            times[how].append(exit_seconds(how))
            print(f"round {round_ + 1}: {how:6s} exit {times[how][-1]:.2f} s", flush=True)
    python, leave = statistics.median(times["python"]), statistics.median(times["leave"])
    print(f"exit_s_python={python:.2f} exit_s_leave={leave:.2f} saved_s={python - leave:.2f}")


if __name__ == "__main__":
    main()

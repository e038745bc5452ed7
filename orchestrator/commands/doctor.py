"""`orchestrator doctor NAME|FILE.yaml [options]`: the checks `sweep` runs before any trial, each printed with
its fix, and nothing run. It takes `sweep`'s options, and leaves no new store or run folder behind
(orchestrator/leftovers.py)."""

from __future__ import annotations

from orchestrator.commands import EXIT_USER_ERROR
from orchestrator.commands.sweep import add_sweep_arguments


def add_doctor_parser(commands) -> None:
    doctor = commands.add_parser(
        "doctor", help="check a sweep's set-up without running it",
        description="Run the checks that `sweep` runs before any trial (names, MLflow, storage, data, Ray, "
                    "resources) and print each with its fix.")
    add_sweep_arguments(doctor)


def cmd_doctor(args) -> int:
    from orchestrator.leftovers import doctor_paths, removed_if_new
    from orchestrator.preflight import Preflight
    from orchestrator.sweep import SweepOptions

    from orchestrator.logged_model import registration

    options = SweepOptions(**{k: v for k, v in vars(args).items() if k != "command"})
    registration(options.register, options.register_if)  # a bad --register-if is a one-line error here too
    with removed_if_new(doctor_paths(options.tracking_uri, options.storage)):
        ok = Preflight(options).report()
    print("all checks passed: `sweep` would start" if ok else "fix the ✗ lines above, then run the sweep")
    return 0 if ok else EXIT_USER_ERROR

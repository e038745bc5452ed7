"""Placement groups left behind by ended trials, and the one line for a worker group that cannot be placed.

Ray sometimes leaves a Train worker group's placement group behind after its trial ended (seen after
ASHA stopped a trial; ray#58515, ray#61756, ray#65447), and the next trial's workers then wait for
CPUs that nothing will free. A Train run's group carries no name; what ties it to its trial is who
made it: the TrainController actor (the group's `creator_actor_id`), which `TorchTrainer.fit()`
starts from the trial's own actor (the controller's owner). So the sweep's driver records each
trial's actor when it starts and, when the trial ends for any reason, removes every group made by a
TrainController that actor owned. Groups of other trials, of Tune itself (made by the driver's job)
or of anything else are never touched.

Ray's public tables leave out the two links (`placement_group_table()` has no creator,
`list_actors()` no owner), so the GCS tables are read raw; the matching is a pure function.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable

from ray import tune

from orchestrator.cluster import START_TIMEOUT_ENV

CONTROLLER = "TrainController"  # the class of Ray Train V2's controller actor
REMOVED = "REMOVED"
TIMEOUT_ENV = START_TIMEOUT_ENV
LINE_LIMIT = 480  # the progress line shows an error's first 500 characters (trial_runs.error_line)
KV_NAMESPACE = "face_orchestrator.trial_runs"  # trial actor id -> its Train run's name

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Group:
    id: str
    state: str  # PENDING, PREPARED, CREATED, RESCHEDULING or REMOVED
    creator_actor: str  # "" when a job's driver made it (as Tune does for each trial's actor)
    creator_job: str
    bundles: tuple[dict, ...]


@dataclass(frozen=True)
class Actor:
    id: str
    class_name: str
    state: str
    worker: str  # the worker process it runs in; "" until it is placed
    owner_worker: str  # the worker process that created it
    resources: dict
    group: str  # the placement group it runs in, "" for none


def groups_of_trial(trial_actor: str, actors: dict[str, Actor], groups: list[Group]) -> list[Group]:
    """The groups, not yet removed, that the Train controllers started by `trial_actor` made."""
    trial = actors.get(trial_actor)
    if trial is None or not trial.worker:
        return []
    controllers = {a.id for a in actors.values() if a.class_name == CONTROLLER and a.owner_worker == trial.worker}
    return [g for g in groups if g.creator_actor in controllers and g.state != REMOVED]


def read_groups() -> list[Group]:
    """Every placement group Ray knows, with its creator."""
    from ray._private.state import state
    from ray.core.generated import gcs_pb2

    out = []
    for raw in state._connect_and_get_accessor().get_placement_group_table():
        g = gcs_pb2.PlacementGroupTableData.FromString(raw)
        out.append(Group(
            id=g.placement_group_id.hex(),
            state=gcs_pb2.PlacementGroupTableData.PlacementGroupState.Name(g.state),
            creator_actor=_hex(g.creator_actor_id), creator_job=_hex(g.creator_job_id),
            bundles=tuple(dict(b.unit_resources) for b in g.bundles),
        ))
    return out


def read_actors() -> dict[str, Actor]:
    """Every actor Ray knows (dead ones too), with the worker it runs in and the worker that owns it."""
    from ray._private.state import state
    from ray.core.generated import gcs_pb2

    out = {}
    for raw in state._connect_and_get_accessor().get_actor_table(None, None):
        a = gcs_pb2.ActorTableData.FromString(raw)
        actor = Actor(
            id=a.actor_id.hex(), class_name=a.class_name,
            state=gcs_pb2.ActorTableData.ActorState.Name(a.state),
            worker=_hex(a.address.worker_id), owner_worker=_hex(a.owner_address.worker_id),
            resources=dict(a.required_resources), group=_hex(a.placement_group_id),
        )
        out[actor.id] = actor
    return out


def _hex(binary: bytes) -> str:
    """A Ray id in hex, or "" for an unset (empty or all-0xff "nil") id."""
    return "" if not binary or set(binary) == {0xFF} else binary.hex()


def remove_groups(groups: list[Group]) -> list[str]:
    """Remove these placement groups; returns the ids of those removed."""
    from ray.util.placement_group import PlacementGroup, remove_placement_group
    import ray

    removed = []
    for group in groups:
        try:
            remove_placement_group(PlacementGroup(ray.PlacementGroupID.from_hex(group.id)))
            removed.append(group.id)
        except Exception as err:  # removed meanwhile by Ray itself: nothing left to do
            log.debug("placement group %s not removed: %s", group.id, err)
    return removed


class PlacementGroupCleanup(tune.Callback):
    """When a trial ends (completed, stopped by the scheduler, failed, or failed and to be retried),
    remove the placement groups its Train runs left behind; look again whenever a trial starts (a
    group can outlive the moment its trial ended) and when the sweep ends."""

    def __init__(self):
        self._actors: dict[str, str] = {}  # trial id -> the id of its current actor
        self._ended: dict[str, str] = {}  # trial id -> the actor of its ended attempt, still to check

    def _actor(self, trial) -> str:
        handle = trial.temporary_state.ray_actor
        if handle is not None:
            self._actors[trial.trial_id] = handle._actor_id.hex()
        return self._actors.get(trial.trial_id, "")

    def on_trial_start(self, iteration, trials, trial, **info):
        self._sweep()
        self._actor(trial)

    def _end(self, trial) -> None:
        actor = self._actor(trial)
        if actor:
            self._ended[trial.trial_id + "@" + actor] = actor
        self._sweep()

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._end(trial)

    def on_trial_error(self, iteration, trials, trial, **info):
        self._end(trial)

    def on_trial_recover(self, iteration, trials, trial, **info):
        self._end(trial)

    def on_experiment_end(self, trials, **info):
        self._sweep()

    def _sweep(self) -> None:
        """Remove the groups of every ended attempt; forget an attempt once its controllers are gone."""
        if not self._ended:
            return
        try:
            actors, groups = read_actors(), read_groups()
        except Exception as err:  # the GCS briefly unreachable: the next trial start or the sweep's end looks again
            log.warning("could not read Ray's placement groups: %s", err)
            return
        for key, actor in list(self._ended.items()):
            left = groups_of_trial(actor, actors, groups)
            alive = _controllers_alive(actor, actors)
            if left:
                # A live controller's group is freed early (a stopped trial's actor takes a while to go);
                # a dead one's would never be: Ray's leak, worth a line in the log.
                say = log.debug if alive else log.warning
                say("removing placement group(s) %s left by trial %s", ", ".join(g.id for g in left), key.split("@")[0])
                remove_groups(left)
            elif not alive:
                del self._ended[key]


def _controllers_alive(trial_actor: str, actors: dict[str, Actor]) -> bool:
    trial = actors.get(trial_actor)
    if trial is None or not trial.worker:
        return False
    return any(a.class_name == CONTROLLER and a.owner_worker == trial.worker and a.state != "DEAD"
               for a in actors.values())


# ---- the one line for a worker group that could not be placed -------------------------------------

def _amount(resources: dict) -> str:
    return "{" + ", ".join(f"{k}: {v:g}" for k, v in sorted(resources.items())) + "}"


def _bundles(bundles: tuple[dict, ...] | list[dict]) -> str:
    plain = [_plain(b) for b in bundles]
    if plain and all(b == plain[0] for b in plain):
        return f"{len(plain)} x {_amount(plain[0])}"
    return " + ".join(_amount(b) for b in plain)


def _plain(resources: dict) -> dict:
    """A bundle's resources without Ray's internal `..._group_<id>` and `bundle` keys."""
    return {k: v for k, v in resources.items() if "_group_" not in k and k != "bundle"}


def _holds(group: Group, wanted: set[str]) -> float:
    return sum(v for b in group.bundles for k, v in _plain(b).items() if k in wanted)


def describe_holders(wanted: dict, actors: dict[str, Actor], groups: list[Group],
                     run_of: Callable[[str], str] = lambda actor: "") -> list[str]:
    """Who holds the resources named in `wanted`, largest first: the placement groups that hold them
    (with the TrainController and trial, or the job, that made each) and the actors outside any group.
    `run_of` names the Train run of a trial's actor, "" where unknown."""
    keys = set(wanted)
    parts = []  # (amount held, text)
    for g in groups:
        if g.state != "CREATED" or _holds(g, keys) <= 0:
            continue
        maker = actors.get(g.creator_actor)
        tenant = next((a for a in actors.values() if a.group == g.id and a.state == "ALIVE" and run_of(a.id)), None)
        if maker is None and tenant is not None:  # Tune's own group for a trial's actor
            by = f"Tune for {run_of(tenant.id)}"
        elif maker is None:
            by = f"job {g.creator_job}'s driver" if g.creator_job else "an unknown creator"
        else:
            owner = next((a for a in actors.values() if a.worker and a.worker == maker.owner_worker), None)
            run = run_of(owner.id) if owner is not None else ""
            if run:
                by = f"{run}'s {maker.class_name} ({maker.state.lower()})"
            else:
                by = f"{maker.class_name} {maker.id[:8]} ({maker.state.lower()})"
                if owner is not None:
                    by += f" of {owner.class_name} {owner.id[:8]} ({owner.state.lower()})"
        parts.append((_holds(g, keys), f"group {g.id[:12]} ({_bundles(g.bundles)}) of {by}"))
    for a in actors.values():  # actors outside any group that hold some of it
        amount = {k: a.resources[k] for k in sorted(keys) if a.resources.get(k, 0) > 0}
        if a.state == "ALIVE" and not a.group and amount:
            parts.append((sum(amount.values()), f"{a.class_name} actor {a.id[:8]} ({_amount(amount)})"))
    return [text for _, text in sorted(parts, key=lambda p: -p[0])]


def unplaced_line(run: str, num_workers: int, per_worker: dict, bound_s: float, free: dict, total: dict,
                  holders: list[str], limit: int = LINE_LIMIT) -> str:
    """The one line a trial fails with when its workers could not be placed in time: as many holders,
    largest first, as keep it within `limit` characters (at least one)."""
    have = ", ".join(f"{k} {free.get(k, 0):g} of {total.get(k, 0):g}" for k in sorted(per_worker))
    head = (f"{run}: its {num_workers} workers ({num_workers} x {_amount(per_worker)}) were not placed within "
            f"{TIMEOUT_ENV}={bound_s:g}s (free: {have}); held by: ")
    tail = "; free them (ray.util.remove_placement_group) or lower --max-concurrent / --num-workers"
    if not holders:
        return head + "nothing Ray can name (tasks, or a node that left)" + tail
    for shown in range(len(holders), 0, -1):
        more = f" and {len(holders) - shown} more" if shown < len(holders) else ""
        line = head + "; ".join(holders[:shown]) + more + tail
        if len(line) <= limit:
            break
    return line


def record_run(run: str) -> None:
    """Note, in Ray's key-value store, which Train run this trial's actor fits, so that another trial's
    `explain_unplaced` can name it."""
    import ray
    from ray.experimental import internal_kv

    actor = ray.get_runtime_context().get_actor_id()
    if actor:
        internal_kv._internal_kv_put(actor, run, namespace=KV_NAMESPACE)


def run_of(actor: str) -> str:
    from ray.experimental import internal_kv

    value = internal_kv._internal_kv_get(actor, namespace=KV_NAMESPACE)
    return value.decode() if value else ""


def explain_unplaced(run: str, num_workers: int, per_worker: dict, bound_s: float) -> str:
    """`unplaced_line` from the cluster's state now (called from the trial whose workers waited)."""
    import ray

    try:
        actors, groups = read_actors(), read_groups()
        me = ray.get_runtime_context().get_actor_id() or ""
        mine = actors.get(me)
        own = {a.id for a in actors.values() if mine and a.class_name == CONTROLLER and a.owner_worker == mine.worker}
        groups = [g for g in groups if g.creator_actor not in own and not (mine and g.id == mine.group)]
        holders = describe_holders(per_worker, actors, groups, run_of)
        free, total = ray.available_resources(), ray.cluster_resources()
    except Exception as err:  # the line still names the wait and the bound
        holders, free, total = [f"(unknown: {type(err).__name__}: {err})".replace("\n", " ")[:200]], {}, {}
    return unplaced_line(run, num_workers, per_worker, bound_s, free, total, holders)

"""The checks that run before any trial spends compute: `sweep` stops at the first failure,
`doctor` runs them all and prints each with ✓ or ✗ and the fix.

Cheap checks come first (names and values, a TCP probe of a cluster's address, then the data,
MLflow and storage), Ray last, so a typo never waits for a cluster, and a mistake found before MLflow
and the storage are opened leaves neither behind. Each check records what later steps need (the
sweep, the tracking store, the run folder, the data summary, the trial resources).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import search_spaces
from orchestrator import budget, cluster, driver_lease, extend, shared_data, state, sweep_settings
from orchestrator.space import (apply_overrides, batch_sizes, check_space, count_trials, grid_note, grids_as_choices,
                                is_domain)
from orchestrator.tracking import DatasetRecord, Tracking, redact
from trainables.config import TrainConfig
from trainables.data.sources import is_demo
from trainables.errors import UserError
from trainables.tasks import DataSummary, get_task


@dataclass
class Preflight:
    opts: object
    sweep: search_spaces.Sweep | None = None
    space: dict = field(default_factory=dict)
    base: TrainConfig | None = None
    tracking: Tracking | None = None
    run: state.SweepRun | None = None
    data: DataSummary | None = None
    resources: cluster.TrialResources | None = None
    notes: list[str] = field(default_factory=list)  # what the checks changed, for the sweep's header
    budget_s: float | None = None  # this invocation's budget in trial-seconds (budget.py)
    extension: extend.Extension | None = None  # --extend: the earlier sweep whose trials count as run
    points: list | None = None      # ... for a grid: the points still to run (None: the whole space)
    evaluated: tuple | None = None  # ... for Optuna: the (points, values) its study starts from
    storage: str | None = None      # the absolute --storage location (check_storage)
    nodes: int = 1                  # the cluster's alive nodes (check_ray)
    copy_data: bool = False         # a sweep copies data its cluster's nodes cannot read (doctor only says so)
    asked: dict = field(default_factory=dict)  # the space as the command asks for it (sweep_settings.py)

    def check_sweep(self) -> str:
        opts = self.opts
        cluster.check_shape_options(opts.num_workers, opts.gpus_per_worker, opts.max_concurrent)
        if opts.max_failures < 0:
            raise UserError(f"--max-failures cannot be negative, got {opts.max_failures}")
        if getattr(opts, "budget", None) is not None:
            budget.parse_budget(opts.budget)
        # The demo's settings for the demo set wherever its shards are (a bucket, a folder, the cache).
        self.sweep = search_spaces.with_options(search_spaces.get(opts.name)(real_data=not is_demo(opts.data),
                                                                             smoke=opts.smoke),
                                                getattr(opts, 'metric', None), getattr(opts, 'mode', None),
                                                getattr(opts, 'seed', None))
        if self.sweep.runner != "train":
            return f"sweep {self.sweep.name} ({self.sweep.runner} runner)"
        space = dict(self.sweep.param_space)
        if self.sweep.source:  # the file's own names first, so its mistakes name the file
            try:
                check_space(space)
            except UserError as err:
                raise UserError(f"{opts.name}: {err}") from None
        if opts.data:
            space["data.root"] = opts.data
        self.space = apply_overrides(space, opts.overrides)  # paths made absolute here, once
        check_space(self.space)
        self.space = grids_as_choices(self.space, self.sweep.search)
        self.asked = dict(self.space)  # before --smoke fits the batch to the workers, which a resume may change
        self.base = TrainConfig.from_dict({k: v for k, v in self.space.items() if not is_domain(v)})
        note = grid_note(self.space)
        known = f"sweep {self.sweep.name}: every backbone, loss, optimizer and key is known"
        return f"{known}; {note}" if note else known

    def check_tracking(self) -> str:
        self.tracking = Tracking(self.opts.tracking_uri)
        self.tracking.check_writable(self.sweep.name)
        return f"MLflow at {redact(self.tracking.uri)} is reachable and writable"

    def check_storage(self) -> str:
        root = self.storage = state.check_writable(self.opts.storage)
        named = f"{root}/{self.opts.run_name or self.sweep.name}"  # its driver may still run it: a second is refused
        driver_lease.check_free(named, driver_lease.then_words(self.opts.resume))
        self.run = state.locate(root, self.sweep.name, self.opts.run_name, self.opts.resume)
        if self.tracking is not None:
            self.run.check_tracking(self.tracking.uri, redact(self.tracking.uri))
        self.budget_s = budget.budget_for(getattr(self.opts, "budget", None), self.run, self.opts.resume)
        verb = "resumes" if self.opts.resume else "will write"
        return f"storage {redact(root)} is writable; this sweep {verb} {redact(self.run.path)}"

    def check_data(self) -> str:
        self.data = get_task(self.base.task).prepare(self.base, lambda text: print(text, flush=True))
        sizes = ", ".join(f"{name} {rows}" for name, rows in self.data.splits.items())
        return f"data at {redact(self.data.root)} is present and readable ({sizes})"

    def check_ray_address(self) -> str:
        """A TCP probe of the cluster named by --address or RAY_ADDRESS, before the data, MLflow or the storage
        are opened: a mistyped address leaves no mlflow.db or run folder behind, and never waits for the data."""
        target = cluster.address_to_dial(self.opts.address)
        cluster.check_reachable(target)
        return f"a Ray cluster answers at {target}"

    def check_ray(self) -> str:
        cluster.connect(self.opts.address)
        nodes = self.nodes = cluster.node_count()
        if nodes > 1 and self.run is not None and not state.is_uri(self.run.path):
            raise UserError(f"a {nodes}-node cluster needs shared storage, but --storage is the local path "
                            f"{redact(self.run.path)}: pass s3://…, gs://…, or file:///path on a filesystem every node mounts")
        return f"Ray is reachable ({nodes} node{'s' if nodes > 1 else ''})"

    def check_data_on_nodes(self) -> str:
        """On several nodes, data prepared into this node's cache is read in place where every node sees it (a
        shared mount), and otherwise copied into the shared storage, which check_ray has made sure of, for the
        trials to read (orchestrator/shared_data.py)."""
        nodes = self.nodes
        local = shared_data.local_roots(self.data.settings)
        if nodes == 1:
            return "one node: the trials read the data where it was prepared"
        if not local:
            return f"the data is in shared storage, which all {nodes} nodes read"
        everywhere = shared_data.read_in_place(local)
        copied = [root for root in local if root not in everywhere]
        said = [f"all {nodes} nodes read the prepared data at {', '.join(map(redact, sorted(everywhere)))} where it "
                "is"] if everywhere else []
        if self.copy_data:
            self.data.settings = shared_data.share(self.data.settings, self.storage,
                                                   lambda text: print(redact(text), flush=True), in_place=everywhere)
            self.data.root = self.data.settings.get("data.root", self.data.root)
        if copied:
            where = f"{redact(self.storage)}/{shared_data.PREPARED_FOLDER}/"
            said.append(f"the trials read the data from {where} on all {nodes} nodes" if self.copy_data else
                        f"the prepared data at {', '.join(map(redact, copied))} is on this node only: the sweep "
                        f"copies it into {where} for the cluster's {nodes} nodes")
        return "; ".join(said)

    def check_resources(self) -> str:
        # Never more trials at once than the sweep has: a one-trial sweep gets the whole cluster.
        trials = self.trial_count()
        concurrent = min(self.opts.max_concurrent or trials, trials)
        self.resources = cluster.plan_resources(cluster.cluster_nodes(), self.opts.num_workers, self.opts.gpus_per_worker,
                                                concurrent, self.sweep.workers_per_trial)
        if self.data is not None:
            self.check_batch(self.data.train_rows, self.resources.num_workers)
        return "; ".join([f"resources fit: {self.resources.describe()}", *self.notes])

    def check_extend(self) -> str:
        """--extend RUN_ID: the earlier sweep is a finished one, and this one has something new to run."""
        opts = self.opts
        self.extension = extend.earlier_sweep(self.tracking, opts.extend)
        space = {**self.space, **self.data.settings}
        trials = self.extension.trials
        if self.sweep.search:
            self.evaluated = extend.evaluated_points(space, trials, self.sweep.objectives)
            new = f"its Optuna study starts from {len(self.evaluated[0])} of them and draws {self.sweep.num_samples} more"
        else:
            self.points = extend.new_points(space, trials, self.sweep.num_samples)
            if not self.points:
                raise UserError(f"--extend {opts.extend}: that sweep already ran every point of this grid "
                                f"({len(trials)} trials), so there is nothing new to train: add a value to a grid, "
                                "e.g. --set model.name=A,B,NEW")
            new = f"{len(self.points)} new trial{'s' if len(self.points) != 1 else ''} to run"
        return f"extends sweep {opts.extend}: {len(trials)} earlier trials count as run; {new}"

    def check_comparable(self) -> str:
        """--extend RUN_ID: the earlier sweep trained this task on the same data with the same fixed settings
        (after --smoke fitted the batch: check_batch), unless --extend-anyway."""
        if self.opts.extend_anyway:
            return f"--extend-anyway: the trials of sweep {self.opts.extend} are compared as they are"
        extend.check_comparable(self.extension, self.tracking, self.base.task, {**self.space, **self.data.settings},
                                DatasetRecord.of(self.data).digest, locations=tuple(self.data.settings))
        return f"sweep {self.opts.extend} trained this task on the same data with the same fixed settings"

    def settings(self) -> dict[str, str]:
        """What this sweep runs with, as its state file keeps it for a resume to match (sweep_settings.py)."""
        sweep = self.sweep
        return sweep_settings.settings_of(self.asked, ("data.root", *self.data.settings),
                                          DatasetRecord.of(self.data).digest, self.opts.smoke, sweep.objectives,
                                          sweep.seed, sweep.num_samples, self.opts.early_stopping)

    def check_resumed_settings(self) -> str:
        """--resume: the same settings the sweep started with (Tune would go on with those whatever is given)."""
        sweep_settings.check_same(self.run.settings, self.settings(), redact(self.run.path), self.run.command,
                                  sweep_settings.command_that_resumes())
        return ("the same settings the sweep started with" if self.run.settings else
                "the sweep records no settings (it started before they were kept): resumed as it is")

    def check_resumed_runs(self) -> str:
        """--resume: the sweep's MLflow runs are there to record into. A parent run deleted in the UI refuses every
        write (MLflow's traceback, before), and a deleted trial's run would be found no more and started anew,
        without its earlier epochs."""
        parent, uri = self.run.parent_run_id, redact(self.tracking.uri)
        if not parent:
            return "the sweep made no MLflow run before it stopped: its runs start now"
        deleted = self.tracking.deleted_of_sweep(parent)
        if deleted is None:
            raise UserError(f"--resume: the sweep's parent run {parent} is no longer in MLflow at {uri} (deleted for "
                            "good), so its records cannot go on: start a new sweep with --name NEW_NAME")
        if deleted:
            shown = ", ".join(deleted[:3]) + (f" and {len(deleted) - 3} more" if len(deleted) > 3 else "")
            runs, were, them = ("runs", "were", "them") if len(deleted) > 1 else ("run", "was", "it")
            raise UserError(f"--resume: {len(deleted)} MLflow {runs} of this sweep {were} deleted ({shown}), and a "
                            f"resumed sweep records into {them}: restore {them} (MLFLOW_TRACKING_URI={uri} mlflow runs "
                            f"restore --run-id ID, or the UI's deleted runs) and resume again, or start a new sweep "
                            "with --name NEW_NAME")
        return f"the sweep's MLflow runs are there to go on with (parent run {parent})"

    def trial_count(self) -> int:
        """The trials this invocation's search produces: an extended grid runs only its new points."""
        if self.points is not None:
            return len(self.points)
        return count_trials(self.space, self.sweep.num_samples)

    def check_batch(self, train_rows: int, workers: int) -> None:
        """A batch larger than a worker's share of the training rows would run no step at all. A `--smoke` run
        exists to exercise every part, so there the batch is fitted to the data instead (and the header says so)."""
        share = train_rows // workers
        too_big = [b for b in batch_sizes(self.space) if b > share]
        if too_big and self.opts.smoke and share >= 1:
            self.space["optim.batch_size"] = share
            self.base.optim.batch_size = share
            self.notes.append(f"--smoke fits optim.batch_size to {share} (was {max(too_big)}): {train_rows} training "
                              f"rows over {workers} workers")
        elif too_big:
            raise UserError(f"optim.batch_size={max(too_big)} is larger than a worker's share of the training data "
                            f"({train_rows} rows over {workers} workers = {share} each), so no training step would "
                            f"run: the largest batch that fits is {share}; pass --set optim.batch_size={share} "
                            f"(or less), or fewer --num-workers")

    def checks(self) -> list[tuple[str, Callable[[], str], tuple[str, ...]]]:
        """(name, check, the checks it needs) in the order they run."""
        needs_sweep = ("sweep and settings",)
        # A cluster's address is dialled first (a TCP connect, seconds at most), and Ray's own check waits for it.
        probe = [("Ray address", self.check_ray_address, ())] if cluster.address_to_dial(self.opts.address) else []
        ray = ("Ray", self.check_ray, tuple(name for name, _, _ in probe))
        if self.sweep is not None and self.sweep.runner != "train":
            return [*probe, ("MLflow", self.check_tracking, needs_sweep), ray]
        # The data next: a mistyped --data is the commonest mistake, and found before MLflow and the storage
        # are opened it leaves no mlflow.db or runs/ behind (a real dataset packed here stays in the cache).
        return [*probe, ("data", self.check_data, needs_sweep),
                ("MLflow", self.check_tracking, needs_sweep), ("storage", self.check_storage, needs_sweep),
                *([("resumed settings", self.check_resumed_settings, ("data", "storage")),
                   ("resumed runs", self.check_resumed_runs, ("MLflow", "storage"))] if self.opts.resume else []),
                *([("extended sweep", self.check_extend, needs_sweep + ("MLflow", "data"))]
                  if getattr(self.opts, "extend", None) else []),
                ray,
                ("data on every node", self.check_data_on_nodes, ("data", "storage", "Ray")),
                ("resources", self.check_resources, needs_sweep + ("Ray", "data")),
                *([("comparable results", self.check_comparable, ("extended sweep", "resources"))]
                  if getattr(self.opts, "extend", None) else [])]

    def run_all(self) -> None:
        """For `sweep`: every check, raising the first failure."""
        self.copy_data = True
        self.check_sweep()
        for _, check, _ in self.checks():
            check()

    def report(self, out=print) -> bool:
        """For `doctor`: every check, each printed with ✓ or ✗ and its fix; a check that needs a failed
        one is skipped. Returns whether all passed."""
        failed: set[str] = set()
        for name, check, needs in [("sweep and settings", self.check_sweep, ())] + self.checks():
            if failed & set(needs):
                out(f"- {name}: skipped until the failure above is fixed")
                failed.add(name)
                continue
            try:
                out(redact(f"✓ {check()}"))
            except UserError as err:  # its text may quote a library's exception, which may quote a URI
                out(redact(f"✗ {name}: {err}"))
                failed.add(name)
        return not failed

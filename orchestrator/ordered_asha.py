"""ASHA whose decisions do not depend on how many trials run at once.

Ray's ASHA judges a trial at a rung (epoch 2, 6, ...) against whatever other trials happened to record
there first. With one trial at a time that is the trials created before it; with several at once it is
a race: on the demo sweep, two trials started together reached epoch 2 in the same second, and had the
weaker one reported first it would have been compared with nothing and run on to the next rung.

`OrderedASHA` makes the decisions of one-trial-at-a-time ASHA, with trials running at once. A trial's
result at a rung is judged only once every trial created before it has been judged at that rung, or
has ended; until then the trial keeps training, and when its turn comes it is judged on the value it
reported at the rung, against the same records as in a sequential run, and stopped then if it falls
below the cutoff. So which trials ASHA stops, and the sweep's winner, are the same whatever the
concurrency, and `benchmarks/asha_efficiency.py`'s sequential replay predicts them.

What a trial spends waiting for its turn is the one cost: it may train a part of an epoch past its
rung. And a trial that ends before its turn comes cannot be stopped any more; its result is still
recorded at the rung, for the trials after it.

A trial stopped this way is stopped while it trains: Tune discards its running call, which then fails as
its workers go, and Ray would log that failure, unread, as an "Unhandled error" with a traceback.
`QuietDiscardedTrialCalls` drops exactly those lines (a trial call's failure that Tune did read is
reported as before).

It keeps Ray's rung records (`_brackets[i]._rungs`), so `rungs.RungKeeper` saves and restores them as
for Ray's own scheduler.
"""

from __future__ import annotations

import logging

from ray.tune.experiment import Trial
from ray.tune.schedulers import AsyncHyperBandScheduler, TrialScheduler

# Where Ray logs an error that no one retrieved: a trial stopped while it trains had its running call's
# result discarded by Tune (the trial ended, as decided), and that call then failed with its worker group.
UNRETRIEVED_LOG = "ray._private.worker"


class OrderedASHA(AsyncHyperBandScheduler):
    """AsyncHyperBandScheduler, judging each rung in the order the trials were created."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self._rank: dict[str, int] = {}  # trial id -> its place in creation order
        self._bracket_of: dict[str, object] = {}
        self._trials: dict[str, object] = {}  # trial id -> Trial, to stop a trial whose turn came later
        self._waiting: dict[str, list[tuple[float, float]]] = {}  # results not judged yet: (time, signed metric)
        self._ended: set[str] = set()
        self._stopped: set[str] = set()
        self._settling = False

    def on_trial_add(self, tune_controller, trial) -> None:
        super().on_trial_add(tune_controller, trial)
        tid = trial.trial_id
        self._rank.setdefault(tid, len(self._rank))
        self._bracket_of[tid] = self._trial_info[tid]
        self._trials[tid] = trial
        if trial.status in (Trial.TERMINATED, Trial.ERROR):  # restored by --resume as it ended
            self._ended.add(tid)
        else:
            self._ended.discard(tid)  # a trial retried, or restored to run again

    def on_trial_result(self, tune_controller, trial, result: dict) -> str:
        if self._time_attr not in result or self._metric not in result:
            return TrialScheduler.CONTINUE
        tid = trial.trial_id
        if tid in self._stopped:
            return TrialScheduler.STOP
        if result[self._time_attr] >= self._max_t and self._stop_last_trials:
            self._num_stopped += 1
            return TrialScheduler.STOP
        self._wait(tid, result)
        return TrialScheduler.STOP if tid in self._settle(tune_controller, current=tid) else TrialScheduler.CONTINUE

    def on_trial_complete(self, tune_controller, trial, result: dict) -> None:
        tid = trial.trial_id
        if tid not in self._stopped and self._time_attr in result and self._metric in result:
            self._wait(tid, result)  # its last result counts at a rung it reached, as in Ray's ASHA
        self._end(tune_controller, tid)

    def on_trial_error(self, tune_controller, trial) -> None:
        self._end(tune_controller, trial.trial_id)

    def on_trial_remove(self, tune_controller, trial) -> None:
        self._end(tune_controller, trial.trial_id)

    def _wait(self, tid: str, result: dict) -> None:
        self._waiting.setdefault(tid, []).append((result[self._time_attr], self._metric_op * result[self._metric]))

    def _end(self, tune_controller, tid: str) -> None:
        self._ended.add(tid)
        self._trial_info.pop(tid, None)
        self._settle(tune_controller)

    def _settle(self, tune_controller, current: str | None = None) -> set[str]:
        """Judge every waiting result whose turn has come; stop the trials that fall below a cutoff (the
        one reporting now, `current`, by the returned set: Tune stops it on our answer)."""
        if self._settling:  # stopping a trial calls back into on_trial_complete
            return set()
        self._settling = True
        stopped: set[str] = set()
        try:
            judged = True
            while judged:
                judged = False
                for tid in sorted(self._waiting, key=self._rank.__getitem__):
                    judged |= self._judge_waiting(tid, stopped)
            for tid in stopped:
                if tid != current and tid not in self._ended:
                    tune_controller.stop_trial(self._trials[tid])
        finally:
            self._settling = False
        return stopped

    def _judge_waiting(self, tid: str, stopped: set[str]) -> bool:
        """Judge `tid`'s waiting results, oldest first, up to the first whose turn has not come."""
        queue, bracket, judged = self._waiting[tid], self._bracket_of[tid], False
        while queue:
            time_value, reward = queue[0]
            milestone = rung_due(bracket, tid, time_value)
            if milestone is not None and not self._earlier_judged(tid, milestone):
                break
            queue.pop(0)
            if milestone is None:
                continue
            judged = True
            if bracket.on_result(self._trials[tid], time_value, reward) == TrialScheduler.STOP:
                queue.clear()
                self._stopped.add(tid)
                self._num_stopped += 1
                stopped.add(tid)
        if not queue:
            del self._waiting[tid]
        return judged

    def _earlier_judged(self, tid: str, milestone: float) -> bool:
        """Has every trial created before `tid` (in its bracket) recorded at `milestone`, or ended with
        nothing left to judge?"""
        bracket, rank = self._bracket_of[tid], self._rank[tid]
        recorded = dict(bracket._rungs)[milestone]
        for other, other_rank in self._rank.items():
            if other_rank >= rank or self._bracket_of.get(other) is not bracket or other in recorded:
                continue
            ended = other in self._ended or other in self._stopped  # stopped: Tune ends it on our answer
            if not ended or self._waiting.get(other):
                return False
        return True


def rung_due(bracket, trial_id: str, time_value: float) -> float | None:
    """The rung at which Ray's `_Bracket.on_result` would judge this result: the highest milestone it has
    reached and not yet recorded at; None when there is none."""
    for milestone, recorded in bracket._rungs:  # highest milestone first
        if time_value >= milestone and trial_id not in recorded:
            return milestone
    return None


class QuietDiscardedTrialCalls(logging.Filter):
    """Drops Ray's "Unhandled error" line for a trial's `train()` call that Tune discarded when it stopped
    the trial: Tune reads every call it still waits for, so an unread failure of one was not wanted."""

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        return not (text.startswith("Unhandled error") and "ImplicitFunc.train()" in text)

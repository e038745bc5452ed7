"""`ObjectivesOptunaSearch`: Tune's OptunaSearch over one objective or several, kept through Tune's set-up,
and able to start from trials evaluated before (`sweep --extend`).

Tune hands every searcher the single metric of its `TuneConfig` (`set_search_properties`), which would
turn a multi-objective study back into a single-objective one; this searcher keeps the lists it was
built with. Ray adds `evaluated_rewards` to the study as completed trials with one value; for several
objectives this adds them with all their values. An earlier trial outside the new space (another
choice, a value out of range) is left out of the study: Optuna cannot hold it. A module of its own so
that Tune can pickle it (its state is saved for `--resume`).
"""

import optuna
from ray.tune.search.optuna import OptunaSearch


class ObjectivesOptunaSearch(OptunaSearch):
    skipped = 0  # earlier trials the study could not take

    def set_search_properties(self, metric, mode, config, **spec):
        return super().set_search_properties(self._metric or metric, self._mode or mode, config, **spec)

    def add_evaluated_point(self, parameters, value, error=False, pruned=False, intermediate_values=None):
        several = isinstance(value, (list, tuple))
        try:
            trial = optuna.trial.create_trial(state=optuna.trial.TrialState.COMPLETE, params=parameters,
                                              distributions=self._space,
                                              **({"values": list(value)} if several else {"value": value}))
        except ValueError:  # a value outside the new space's distributions
            self.skipped += 1
            return
        self._ot_study.add_trial(trial)

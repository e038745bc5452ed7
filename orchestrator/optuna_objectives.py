"""`ObjectivesOptunaSearch`: Tune's OptunaSearch over several objectives, kept through Tune's set-up.

Tune hands every searcher the single metric of its `TuneConfig` (`set_search_properties`), which would
turn a multi-objective study back into a single-objective one; this searcher keeps the lists it was
built with. A module of its own so that Tune can pickle it (its state is saved for `--resume`).
"""

from ray.tune.search.optuna import OptunaSearch


class ObjectivesOptunaSearch(OptunaSearch):
    def set_search_properties(self, metric, mode, config, **spec):
        return super().set_search_properties(self._metric or metric, self._mode or mode, config, **spec)

"""What runs on a Ray Train worker: config, data, models, losses, metrics and the training loop.

Nothing in this package imports Ray Tune, MLflow or `orchestrator`; only `worker.py` talks to
`ray.train`, so everything else is plain PyTorch that unit tests can run without Ray.

The package root is also where the leaf `config_sections` learns how to find the tasks' config sections:
no `config*.py` module imports a task, and each task registers its sections there when its folder is imported.
"""

from trainables.config_sections import TASK_SECTIONS as _TASK_SECTIONS


def _load_all_tasks() -> None:
    from trainables.tasks import TASKS

    TASKS.names()  # imports every task folder; each registers its sections


def _import_task(name: str) -> None:
    from trainables.tasks import import_task

    import_task(name)


_TASK_SECTIONS.load_with(_load_all_tasks, find=_import_task)

"""What runs on a Ray Train worker: config, data, models, losses, metrics and the training loop.

Nothing in this package imports Ray Tune, MLflow or `orchestrator`; only `worker.py` talks to
`ray.train`, so everything else is plain PyTorch that unit tests can run without Ray.
"""

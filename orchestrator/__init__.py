"""The orchestrator: the CLI and everything that knows about Ray Tune, the cluster and MLflow."""

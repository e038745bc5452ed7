"""Ray Train's fixed-size scaling policy without its requests to an autoscaler, for a local Ray.

Train 2.60's controller registers every run's workers with Ray Data's `AutoscalingCoordinator` (a detached
actor, created by the first run that asks) and asks again every 20 s, so that an autoscaling cluster adds
nodes for them. A local Ray has no autoscaler to add any: there the first trial's controller waited 2.6 s
for that actor's process to start and import Ray Data, which then cost about 3 CPU-seconds, for nothing.
A trial on a local Ray (`cluster.local_ray_env` says so to every process of that Ray) gets this policy
instead; on a cluster the stock policy keeps asking, as its autoscaler needs.

Train's controller unpickles the policy, so imports this module: it imports no torch.
"""

from __future__ import annotations

import os

from ray.train.v2._internal.execution.scaling_policy.fixed import FixedScalingPolicy

from orchestrator.cluster import LOCAL_RAY_ENV


class NoAutoscalerPolicy(FixedScalingPolicy):
    """The same fixed worker group, with no autoscaler requests to send, repeat or cancel."""

    def after_controller_start(self, train_run_context) -> None:
        pass

    def _maybe_send_resource_request(self) -> None:
        pass

    def _send_resource_request(self) -> None:
        pass

    def _cancel_resource_request(self) -> None:
        pass


def for_this_ray(policy):
    """`policy`, or on a local Ray the same fixed policy without autoscaler requests."""
    if os.environ.get(LOCAL_RAY_ENV) == "1" and type(policy) is FixedScalingPolicy:
        return NoAutoscalerPolicy(policy.scaling_config)
    return policy

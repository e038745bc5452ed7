"""A trial's Tune actor and Train's controller start without torch: the process-group configuration they
build and unpickle imports none, and carries what Ray's own TorchConfig would."""

import subprocess
import sys

import pytest

from orchestrator import cluster, runners
from trainables.process_group import ProcessGroup


def _run(code: str) -> str:
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout.strip()


def test_the_trials_actor_and_trains_controller_import_no_torch(tmp_path):
    pickled = tmp_path / "config.pkl"
    # The trial's actor: imports the module of train_driver_fn and builds the trainer's arguments.
    built = _run(
        "import sys, ray.cloudpickle as cp\n"
        "from orchestrator import cluster, runners\n"
        "group = runners.worker_group(cluster.TrialResources(num_workers=2, cpus_per_worker=1, gpus_per_worker=0,"
        " max_concurrent=1, start_timeout_s=30))\n"
        f"open({str(pickled)!r}, 'wb').write(cp.dumps(group['backend_config']))\n"
        "print('torch' in sys.modules)")
    assert built == "False"
    # Train's controller: unpickles the configuration and asks it for its backend.
    unpickled = _run(
        "import sys, pickle\n"
        f"config = pickle.loads(open({str(pickled)!r}, 'rb').read())\n"
        "print(type(config).__name__, config.backend, config.backend_cls.__name__, 'torch' in sys.modules)")
    assert unpickled == "ProcessGroup gloo _Backend False"


@pytest.mark.parametrize("gpus,backend", [(0, "gloo"), (1, "nccl")])
def test_the_configuration_is_what_rays_torch_config_holds(gpus, backend):
    from ray.train.torch import TorchConfig

    group = runners.worker_group(cluster.TrialResources(num_workers=2, cpus_per_worker=1, gpus_per_worker=gpus,
                                                        max_concurrent=1, start_timeout_s=30))
    config = group["backend_config"]
    assert isinstance(config, ProcessGroup)
    assert config.to_dict() == TorchConfig(backend=backend).to_dict()
    assert config.framework == TorchConfig().framework
    assert config.backend_cls.share_cuda_visible_devices is TorchConfig().backend_cls.share_cuda_visible_devices

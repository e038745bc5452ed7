#!/usr/bin/env bash
# The GPU checks in one run, for a machine with a CUDA GPU lent for minutes (README, *On a GPU*):
#   1. what the machine has: the GPU, the driver, torch's CUDA and NCCL;
#   2. the `gpu` tests (bf16 autocast and channels_last in an epoch, pinned batches from loader workers,
#      two quarter-GPU trials at once on a local Ray);
#   3. benchmarks/gpu_throughput.py: our trial (DDP over NCCL) against a bare loop, and the loader alone.
# Each step has its own time limit, so one that hangs leaves the others their minutes. Everything it prints
# goes to $OUT (the device tool's folder that comes back) or ./gpu_check, and its last lines are each
# step's verdict. Without a GPU the tests skip and the benchmark says so: the script still ends 0.
#
#   bash benchmarks/gpu_check.sh [IMAGES]      # IMAGES: the benchmark's demo set (default 6000, 80% train)
set -u
cd "$(dirname "$0")/.."
out="${OUT:-gpu_check}"
mkdir -p "$out"
images="${1:-6000}"

{
    date -u
    nvidia-smi || echo "nvidia-smi: not found"
    python -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'available', torch.cuda.is_available()); print('devices', [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]); print('nccl', torch.cuda.nccl.version() if torch.cuda.is_available() else None); print('bf16', torch.cuda.is_available() and torch.cuda.is_bf16_supported())"
    python -c "import ray, timm, mlflow; print('ray', ray.__version__, 'timm', timm.__version__, 'mlflow', mlflow.__version__)"
} > "$out/machine.txt" 2>&1
echo "machine: $(grep -E '^(torch|devices)' "$out/machine.txt" | tr '\n' ' ')"

# -n 0: one process (xdist's two would share the one GPU); the verdicts (passed / skipped) are pytest's last line.
timeout 240 python -m pytest -m gpu -n 0 -p no:cacheprovider -q -rs --durations=0 > "$out/gpu_tests.txt" 2>&1
echo "gpu tests (exit $?): $(tail -n 1 "$out/gpu_tests.txt")"

timeout 330 python benchmarks/gpu_throughput.py --images "$images" > "$out/gpu_throughput.txt" 2>&1
echo "gpu_throughput (exit $?): $(tail -n 1 "$out/gpu_throughput.txt")"
exit 0

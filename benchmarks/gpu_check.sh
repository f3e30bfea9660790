#!/usr/bin/env bash
# The prepared GPU check (see benchmarks/gpu_check.py): CUDA tests, AMP training throughput,
# exact k-NN on the GPU vs the CPU, export on CUDA. Under 8 minutes on one GPU; on a machine
# without CUDA it says what it skipped. Usage: bash benchmarks/gpu_check.sh [--quick]
set -euo pipefail
cd "$(dirname "$0")/.."
exec python benchmarks/gpu_check.py "$@"

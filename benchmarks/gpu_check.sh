#!/usr/bin/env bash
# One command for a fresh GPU machine (see lightning_rnn/bench/gpu_check.py):
#   benchmarks/gpu_check.sh OUT_DIR [--dry-run]
set -euo pipefail
cd "$(dirname "$0")/.."
exec "${PYTHON:-python}" -m lightning_rnn.bench.gpu_check "$@"

#!/usr/bin/env bash
# The GPU row of benchmarks/README.md ("A team's own images at scale"): at most 8 minutes on one H100; prints its
# figures (JSON, then the table row). See benchmarks/gpu_scale.py for what is measured.
#   benchmarks/gpu.sh             # on a CUDA machine, from anywhere in the repo
#   benchmarks/gpu.sh --smoke     # seconds on a CPU: proves it starts and runs end to end (numbers mean nothing)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
exec timeout 480 "$PY" benchmarks/gpu_scale.py "$@"

#!/usr/bin/env bash
# GPU self-check wrapper (see benchmarks/README.md, "GPU self-check").
#   benchmarks/gpu_check.sh download      fill wheels/ with pycuda's source distribution and its dependencies'
#                                         wheels for the GPU machine's Python 3.12 (run where PyPI is reachable)
#   benchmarks/gpu_check.sh [ARGS...]     run benchmarks/gpu_check.py --require-gpu ARGS under an 8-minute cap
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"

if [ "${1:-}" = "download" ]; then
    mkdir -p wheels
    # pycuda ships no wheels: its sdist is built on the GPU machine with that machine's nvcc. --no-build-isolation
    # keeps pip from fetching setuptools/numpy source builds just to read its metadata here.
    "$PY" -m pip download --no-deps --no-binary pycuda --no-build-isolation -d wheels pycuda==2026.1
    "$PY" -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d wheels \
        pytools==2026.1.1 platformdirs==4.14.9 mako==1.4.3 markupsafe==3.0.4 siphash24==1.9 typing_extensions==4.16.0
    ls -l wheels
    exit 0
fi

export PYTHONPATH=".${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
exec timeout 480 "$PY" benchmarks/gpu_check.py --require-gpu "$@"

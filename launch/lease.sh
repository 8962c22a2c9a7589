#!/usr/bin/env bash
# On a lent GPU machine, after the part commands that `python -m distill_step_by_step.kit prepare <profile>`
# printed: install what the machine lacks, run <workers> budgeted workers of the grid at once on its GPU,
# and pack the finished cells and the run logs into $OUT (README "Scale-out": a short GPU lease).
#   launch/lease.sh <profile> <budget, e.g. 8m> [workers (default 4)] [--bench]
set -euo pipefail
profile=${1:?usage: launch/lease.sh <profile> <budget> [workers] [--bench]}
budget=${2:?a time budget for the workers, e.g. 8m}
workers=${3:-4}
shift $(( $# < 3 ? $# : 3 ))
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
exec python3 -m distill_step_by_step.kit lease "$profile" --budget "$budget" --workers "$workers" --out "${OUT:-out}" "$@"

#!/usr/bin/env bash
# Several workers of a grid on this host, each in its own clone, all at once:
#   launch/workers.sh <profile> <remote> <I-J/N> [grid work options]
# e.g. workers 1-4 of 8 here and 5-8/8 on a second host, both reaching the same remote. With DSS_GPUS set
# (and DSS_JOBS_PER_GPU for several cells per GPU) each cell takes a GPU slot (gpu.py). Waits for all;
# exits non-zero if any worker failed. Each worker's output goes to .workers/<profile>-<I>.log.
set -uo pipefail
profile=${1:?usage: launch/workers.sh <profile> <remote> <I-J/N> [grid work options]}
remote=${2:?a DVC remote URL or folder every worker reaches}
range=${3:?I-J/N: the workers to run here, of N}
shift 3
here=$(cd "$(dirname "$0")" && pwd)
total=${range##*/}; span=${range%/*}; first=${span%-*}; last=${span#*-}
logs=${DSS_WORKDIR:-$here/../.workers}; mkdir -p "$logs"
pids=()
for i in $(seq "$first" "$last"); do
  "$here/worker.sh" "$profile" "$remote" "$i/$total" "$@" >"$logs/$profile-$i.log" 2>&1 &
  pids+=($!)
done
status=0
for pid in "${pids[@]}"; do wait "$pid" || status=1; done
for i in $(seq "$first" "$last"); do tail -n 1 "$logs/$profile-$i.log"; done
exit $status

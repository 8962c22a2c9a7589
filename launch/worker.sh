#!/usr/bin/env bash
# One worker of a grid, in its own clone of this repository:
#   launch/worker.sh <profile> <remote> <I/N> [more `grid work` options, e.g. --budget 2h]
# The clone lives in $DSS_WORKDIR/<profile>-<I> (default: .workers/ beside this checkout's files), so a
# worker started again with the same I after a kill or a preemption finds the cell it was training and
# resumes it. It runs this checkout's commit with this checkout's environment ($DSS_VENV, default .venv).
set -euo pipefail
profile=${1:?usage: launch/worker.sh <profile> <remote> <I/N> [grid work options]}
remote=${2:?a DVC remote URL or folder every worker reaches}
share=${3:?I/N: the share of this worker}
shift 3
repo=$(cd "$(dirname "$0")/.." && pwd)
venv=${DSS_VENV:-$repo/.venv}
# a relative remote folder is resolved once, here, where the command was given (not in each clone)
case "$remote" in *://*) ;; *) remote=$(realpath -m -- "$remote") ;; esac
work=${DSS_WORKDIR:-$repo/.workers}/$profile-${share%%/*}
if [ ! -d "$work/.git" ]; then
  git clone -q "$repo" "$work"
fi
git -C "$work" fetch -q "$repo" HEAD
carried=$work/.dvc/tmp/carried_cell_times.json force=()
if [ "$(git -C "$work" rev-parse HEAD)" != "$(git -C "$work" rev-parse FETCH_HEAD)" ]; then
  # to newer code, over the files an earlier run changed here: the cells it finished stay in this clone's
  # run-cache (the worker records and pushes them again: grid.adopt) and its measured cell times are carried over
  times=grids/$profile/cell_times.json
  if [ -f "$work/$times" ]; then
    mkdir -p "$(dirname "$carried")" && cp "$work/$times" "$carried"
    git -C "$work" show "HEAD:$times" >"${carried%.json}.base.json" 2>/dev/null || rm -f "${carried%.json}.base.json"
  fi
  force=(-f)
fi
git -C "$work" checkout -q "${force[@]}" --detach FETCH_HEAD
carry=(); [ ! -f "$carried" ] || carry=(--carry-times "$carried")
# ../shared beside the clones (workers started at once may race to make it: -n, and a loser checks it is there)
[ -e "$work/../shared" ] || [ ! -e "$repo/../shared" ] || ln -sn "$repo/../shared" "$work/../shared" 2>/dev/null \
  || [ -e "$work/../shared" ]
cd "$work"
export PATH="$venv/bin:$PATH" PYTHONPATH="$work/src" TOKENIZERS_PARALLELISM=false
exec python -m distill_step_by_step.grid work "$profile" --remote "$remote" --worker "$share" "${carry[@]}" "$@"

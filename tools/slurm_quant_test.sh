#!/usr/bin/env bash
# quant_test on a Slurm cluster (mmdet's tools/slurm_test.sh habits; needs CUDA GPUs on the nodes):
#   GPUS=16 bash tools/slurm_quant_test.sh PARTITION JOB_NAME CONFIG CHECKPOINT [quant_test.py options...]
# CHECKPOINT '-' runs with random weights.
set -euo pipefail
if [[ $# -lt 4 ]]; then
    echo "usage: $0 PARTITION JOB_NAME CONFIG CHECKPOINT [quant_test.py options...]" >&2
    exit 2
fi
PARTITION=$1
JOB_NAME=$2
CONFIG=$3
CHECKPOINT=$4
shift 4
GPUS=${GPUS:-8}
GPUS_PER_NODE=${GPUS_PER_NODE:-8}
CPUS_PER_TASK=${CPUS_PER_TASK:-5}
SRUN_ARGS=${SRUN_ARGS:-""}
PYTHON=${PYTHON:-python}
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CKPT_ARGS=()
[[ $CHECKPOINT != "-" ]] && CKPT_ARGS=("$CHECKPOINT")
# shellcheck disable=SC2086
PYTHONPATH="$ROOT:${PYTHONPATH:-}" srun -p "$PARTITION" --job-name="$JOB_NAME" --gres=gpu:"$GPUS_PER_NODE" \
    --ntasks="$GPUS" --ntasks-per-node="$GPUS_PER_NODE" --cpus-per-task="$CPUS_PER_TASK" --kill-on-bad-exit=1 \
    $SRUN_ARGS "$PYTHON" -u "$ROOT/tools/quant_test.py" "$CONFIG" "${CKPT_ARGS[@]}" --launcher=slurm "$@"

#!/usr/bin/env bash
# Distributed quant_test with torchrun (mmdet's tools/dist_test.sh habits):
#   bash tools/dist_quant_test.sh CONFIG CHECKPOINT NPROC [quant_test.py options...]
# CHECKPOINT '-' runs with random weights. Without CUDA the processes use the gloo backend on CPU.
# Calibration runs on every rank over the same images; rank 0's quantizer state is then broadcast, so every rank
# evaluates the identical quantized model and the metrics equal a single-process run.
set -euo pipefail
if [[ $# -lt 3 ]]; then
    echo "usage: $0 CONFIG CHECKPOINT NPROC [quant_test.py options...]" >&2
    exit 2
fi
CONFIG=$1
CHECKPOINT=$2
NPROC=$3
shift 3
NNODES=${NNODES:-1}
NODE_RANK=${NODE_RANK:-0}
PORT=${PORT:-29500}
MASTER_ADDR=${MASTER_ADDR:-127.0.0.1}
PYTHON=${PYTHON:-python}
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CKPT_ARGS=()
[[ $CHECKPOINT != "-" ]] && CKPT_ARGS=("$CHECKPOINT")
PYTHONPATH="$ROOT:${PYTHONPATH:-}" exec "$PYTHON" -m torch.distributed.run \
    --nnodes="$NNODES" --node_rank="$NODE_RANK" --master_addr="$MASTER_ADDR" --nproc_per_node="$NPROC" \
    --master_port="$PORT" "$ROOT/tools/quant_test.py" "$CONFIG" "${CKPT_ARGS[@]}" --launcher pytorch "$@"

#!/usr/bin/env bash
# Data-parallel meta-training with torchrun. Every process samples the same task batch and takes its share;
# optim.batch_size and optim.n_validation_tasks must be divisible by the total number of processes.
# Only rank 0 writes the run directory (checkpoints, history, W&B); re-running the same command resumes.
#
# One node, several processes (CPU: gloo, one thread each; GPU: nccl, one GPU per process):
#   scripts/launch_distributed.sh 2 experiment=cpu run.dir=runs/cpu_ddp
#   scripts/launch_distributed.sh 4 experiment=paper run.device=cuda run.dir=runs/paper_ddp
#
# Several nodes (run on every node; NODE_RANK 0..NNODES-1, MASTER_ADDR = address of node 0):
#   NNODES=2 NODE_RANK=0 MASTER_ADDR=10.0.0.1 scripts/launch_distributed.sh 8 experiment=paper run.device=cuda \
#       run.dir=/shared/runs/paper_ddp
# (run.dir must be on a file system that every node sees, so that a restart resumes from rank 0's checkpoint)
set -euo pipefail
NPROC=${1:?usage: $0 PROCESSES_PER_NODE [overrides...]}
shift
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
if [[ -n "${NNODES:-}" && "${NNODES}" != 1 ]]; then
  exec torchrun --nnodes "$NNODES" --node_rank "${NODE_RANK:?set NODE_RANK}" --nproc_per_node "$NPROC" \
    --rdzv_backend c10d --rdzv_endpoint "${MASTER_ADDR:?set MASTER_ADDR}:${MASTER_PORT:-29500}" \
    -m eprop_l2l.cli train "$@"
fi
exec torchrun --standalone --nproc_per_node "$NPROC" -m eprop_l2l.cli train "$@"

#!/usr/bin/env bash
# Data-parallel meta-training with torchrun. Every process samples the same task batch and takes its share;
# optim.batch_size and optim.n_validation_tasks must be divisible by the total number of processes.
# Only rank 0 writes the run directory (checkpoints, history, W&B) and prints errors that every process meets
# alike; re-running the same command resumes.
#
# One node, several processes (CPU: gloo, one thread each; GPU: nccl, one GPU per process):
#   scripts/launch_distributed.sh 2 experiment=cpu run.dir=runs/cpu_ddp
#   scripts/launch_distributed.sh 4 experiment=paper run.device=cuda run.dir=runs/paper_ddp
#
# Several nodes: run it once on every node. The nodes meet through torchrun's c10d rendezvous at
# MASTER_ADDR:MASTER_PORT (a host every node reaches, e.g. the first node). By hand:
#   NNODES=2 NODE_RANK=0 MASTER_ADDR=10.0.0.1 scripts/launch_distributed.sh 8 experiment=paper run.device=cuda \
#       run.dir=/shared/runs/paper_ddp
# Under SLURM, one task per node (`srun --ntasks-per-node=1 scripts/launch_distributed.sh ...`, as
# scripts/slurm/ddp.sbatch does): NNODES, NODE_RANK and the rendezvous id come from SLURM_NNODES, SLURM_NODEID and
# SLURM_JOB_ID. (run.dir must be on a file system that every node sees, so that a restart resumes from rank 0's
# checkpoint.)
#
# `--script FILE ARGS...` in place of the overrides runs another torchrun program the same way (the tests launch
# their meta-gradient worker so, on the path a SLURM job takes).
set -euo pipefail
NPROC=${1:?usage: $0 PROCESSES_PER_NODE [overrides... | --script FILE [args...]]}
shift
PROGRAM=(-m eprop_l2l.cli train)
if [[ "${1:-}" == "--script" ]]; then
  PROGRAM=("${2:?usage: $0 PROCESSES_PER_NODE --script FILE [args...]}")
  shift 2
fi
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
NNODES=${NNODES:-${SLURM_NNODES:-1}}
if [[ "$NNODES" != 1 ]]; then
  NODE_RANK=${NODE_RANK:-${SLURM_NODEID:?set NODE_RANK (0 .. NNODES-1) on every node}}
  exec torchrun --nnodes "$NNODES" --node_rank "$NODE_RANK" --nproc_per_node "$NPROC" \
    --rdzv_backend c10d --rdzv_endpoint "${MASTER_ADDR:?set MASTER_ADDR}:${MASTER_PORT:-29500}" \
    --rdzv_id "${RDZV_ID:-${SLURM_JOB_ID:-eprop-l2l}}" "${PROGRAM[@]}" "$@"
fi
exec torchrun --standalone --nproc_per_node "$NPROC" "${PROGRAM[@]}" "$@"

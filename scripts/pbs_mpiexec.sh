#!/bin/bash
# Pretrain with scifm on a PBS Pro machine with mpiexec (Aurora / Polaris style at ALCF).
# scifm reads PMI_RANK / PMI_SIZE (MPICH / Cray PALS, local rank from PALS_LOCAL_RANKID)
# and agrees on the rendezvous host from PBS_NODEFILE (port derived from the job id).
#
#   qsub -v RECIPE=recipes/llama-1b.yaml,OVERRIDES="--parallel.dp_shard 12" scripts/pbs_mpiexec.sh
#
# Long jobs: `scifm launch` restarts a failed or hung attempt (the trainer resumes from its
# newest complete checkpoint) and forwards PBS's SIGTERM at the walltime, on which every
# rank saves and exits; the step watchdog names a stalled rank instead of hanging.
# Edit the #PBS lines for your allocation (queue, project, filesystems, walltime).
#PBS -N scifm
#PBS -l select=2
#PBS -l walltime=02:00:00
#PBS -l filesystems=home:flare
#PBS -q debug
#PBS -A YOUR_PROJECT
#PBS -j oe

set -euo pipefail
cd "${PBS_O_WORKDIR}"
source .venv/bin/activate            # the venv `make install` created on the shared filesystem

NNODES=$(sort -u "${PBS_NODEFILE}" | wc -l)
PPN=${PPN:-12}                       # ranks per node: 12 GPU tiles on Aurora, 4 GPUs on Polaris
NRANKS=$((NNODES * PPN))
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-8}

# --cpu-bind: adjust to your node's layout (Aurora example: list of cores per rank).
python -m scifm.cli launch --max-restarts 3 --idle-timeout 1800 -- \
  mpiexec -n "${NRANKS}" --ppn "${PPN}" --cpu-bind depth -d "${OMP_NUM_THREADS}" \
  python -m scifm.cli train --config "${RECIPE:?set RECIPE=...}" \
  --train.watchdog.step_timeout_s 900 ${OVERRIDES:-}

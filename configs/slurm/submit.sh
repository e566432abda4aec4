#!/usr/bin/env bash
# Submit a precompute as a Slurm array of NUM_SHARDS shard jobs plus a dependent finalize job.
#   configs/slurm/submit.sh DATASET OUT NUM_SHARDS [CONFIG]
# Extra sbatch options (partition, account, gres) go in SBATCH_EXTRA, e.g. SBATCH_EXTRA="-p gpu".
set -euo pipefail
if [[ $# -lt 3 ]]; then
  echo "usage: $0 DATASET OUT NUM_SHARDS [CONFIG]" >&2
  exit 2
fi
DATASET=$1 OUT=$2 NUM_SHARDS=$3 CONFIG=${4:-configs/precompute/default.yaml}
here="$(cd "$(dirname "$0")" && pwd)"
mkdir -p logs
vars="ALL,DATASET=$DATASET,OUT=$OUT,CONFIG=$CONFIG,NUM_SHARDS=$NUM_SHARDS"
# shellcheck disable=SC2086
jid=$(sbatch --parsable ${SBATCH_EXTRA:-} --array="0-$((NUM_SHARDS - 1))" --export="$vars" \
      "$here/precompute.sbatch")
# shellcheck disable=SC2086
fid=$(sbatch --parsable ${SBATCH_EXTRA:-} --dependency="afterany:${jid%%;*}" \
      --job-name=videocfr-finalize --export="$vars,FINALIZE=1" "$here/precompute.sbatch")
echo "shard array $jid (${NUM_SHARDS} tasks), finalize $fid after it"

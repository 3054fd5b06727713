#!/usr/bin/env bash
# Deletes a TPU VM or pod slice made by create.sh. Data on GCS (checkpoints, TFDS) is kept.
set -euo pipefail

usage() {
  cat >&2 <<'EOF'
Usage: delete.sh NAME ZONE [--queued] [--dry-run]

  --queued   the TPU was made with create.sh --queued: delete the queued resource and its TPU
  --dry-run  print the gcloud command instead of running it

A TPU is billed for as long as it exists, busy or idle: delete it when done. Delete a preempted
one too before creating it again under the same name.
EOF
  exit "${1:-2}"
}


# shellcheck source=experiments/tpu/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

DRY_RUN=0 QUEUED=0
pos=()
while (($#)); do
  case $1 in
    --queued) QUEUED=1 ;;
    --dry-run) DRY_RUN=1 ;;
    -h | --help) usage 0 ;;
    -*) echo "delete.sh: unknown option $1" >&2; usage ;;
    *) pos+=("$1") ;;
  esac
  shift
done
((${#pos[@]} == 2)) || usage
NAME=${pos[0]} ZONE=${pos[1]}
require_gcloud

# --quiet answers the confirmation prompt; --force also deletes the queued resource's TPU.
if ((QUEUED)); then
  run gcloud compute tpus queued-resources delete "$NAME" --zone="$ZONE" --force --quiet
else
  run gcloud compute tpus tpu-vm delete "$NAME" --zone="$ZONE" --quiet
fi

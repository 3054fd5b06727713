#!/usr/bin/env bash
# Creates a Cloud TPU VM (v3-8, v4-8) or a pod slice (v3-32, v4-32, ...). Guide: experiments/tpu/README.md
set -euo pipefail

usage() {
  cat >&2 <<'EOF'
Usage: create.sh NAME ZONE ACCELERATOR_TYPE [--spot | --preemptible] [--runtime VERSION] [--queued]
                 [--dry-run] [-- GCLOUD_FLAGS...]

  NAME              a name for the TPU, e.g. byol-v3-32
  ZONE              e.g. europe-west4-a or us-central1-a (v3), us-central2-b (v4)
  ACCELERATOR_TYPE  e.g. v3-8, v3-32, v4-8, v4-32
  --spot            Spot TPU: far cheaper, but can be preempted at any time
  --preemptible     the older preemptible model; prefer --spot
  --runtime VERSION TPU software version (default: tpu-ubuntu2204-base for v2, v3 and v4)
  --queued          ask through a queued resource: waits for capacity instead of failing
  --dry-run         print the gcloud command instead of running it
  -- FLAGS          passed on to gcloud, e.g. -- --service-account=SA --labels=project=byol

The project's gcloud default is used; set CLOUDSDK_CORE_PROJECT to pick another project.
EOF
  exit "${1:-2}"
}


# shellcheck source=experiments/tpu/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

# The TPU software version that the Cloud TPU docs give for JAX on each TPU generation.
default_runtime() {
  case $1 in
    v2-* | v3-* | v4-*) echo tpu-ubuntu2204-base ;;
    v5litepod-* | v5e-*) echo v2-alpha-tpuv5-lite ;;
    v5p-*) echo v2-alpha-tpuv5 ;;
    v6e-*) echo v2-alpha-tpuv6e ;;
    *) return 1 ;;
  esac
}

DRY_RUN=0 SPOT=0 PREEMPTIBLE=0 QUEUED=0 RUNTIME=""
pos=() extra=()
while (($#)); do
  case $1 in
    --spot) SPOT=1 ;;
    --preemptible) PREEMPTIBLE=1 ;;
    --runtime) { (($# >= 2)) && [[ $2 != -* ]]; } || usage; RUNTIME=$2; shift ;;
    --runtime=*) RUNTIME=${1#*=} ;;
    --queued) QUEUED=1 ;;
    --dry-run) DRY_RUN=1 ;;
    -h | --help) usage 0 ;;
    --) shift; extra=("$@"); break ;;
    -*) echo "create.sh: unknown option $1" >&2; usage ;;
    *) pos+=("$1") ;;
  esac
  shift
done
((${#pos[@]} == 3)) || usage
NAME=${pos[0]} ZONE=${pos[1]} ACCEL=${pos[2]}

[[ $ACCEL =~ ^[a-z][a-z0-9]*-[0-9]+$ ]] || die "ACCELERATOR_TYPE '$ACCEL' is not of the form v3-8, v4-32, ..."
((SPOT + PREEMPTIBLE <= 1)) || die "choose one of --spot and --preemptible"
((QUEUED && PREEMPTIBLE)) && die "queued resources take --spot, not --preemptible"
if [[ -z $RUNTIME ]]; then
  RUNTIME=$(default_runtime "$ACCEL") || die "no default runtime for $ACCEL; give --runtime VERSION"
fi
require_gcloud

if ((QUEUED)); then
  cmd=(gcloud compute tpus queued-resources create "$NAME" --node-id="$NAME" --zone="$ZONE"
    --accelerator-type="$ACCEL" --runtime-version="$RUNTIME")
else
  cmd=(gcloud compute tpus tpu-vm create "$NAME" --zone="$ZONE" --accelerator-type="$ACCEL"
    --version="$RUNTIME")
fi
((SPOT)) && cmd+=(--spot)
((PREEMPTIBLE)) && cmd+=(--preemptible)
cmd+=(${extra[@]+"${extra[@]}"})
run "${cmd[@]}"
if ((QUEUED && !DRY_RUN)); then
  echo "Queued. The TPU exists once this says ACTIVE:" >&2
  echo "  gcloud compute tpus queued-resources describe $NAME --zone=$ZONE" >&2
fi

#!/usr/bin/env bash
# Starts BYOL training on every worker of a TPU VM or pod slice at once, detached from ssh.
# Guide: experiments/tpu/README.md
set -euo pipefail

usage() {
  cat >&2 <<'EOF'
Usage: launch.sh NAME ZONE CONFIG WORKDIR DATA_DIR [--config.KEY=VALUE ...] [--resume-loop] [--dry-run]
       launch.sh NAME ZONE --stop [--dry-run]

  CONFIG         config file in the repo, e.g. configs/byol_gn_ws.py
  WORKDIR        e.g. gs://BUCKET/runs/NAME (shared by all workers; an existing one is resumed)
  DATA_DIR       TFDS data dir, e.g. gs://BUCKET/tensorflow_datasets
  --config.K=V   overrides passed on to byol_jax.main, e.g. --config.batch_size=1024
  --resume-loop  on each worker, run again after exit status 143 (stopped by SIGTERM, checkpoint
                 saved) until the run exits with any other status
  --stop         ask a running job to save a checkpoint and exit (SIGTERM); no relaunch follows
  --dry-run      print the gcloud command instead of running it

Each worker runs `python -m byol_jax.main --config=CONFIG --workdir=WORKDIR
--config.data_dir=DATA_DIR ...` in tmux session 'byol' (nohup if tmux is missing) from ~/byol_jax,
logging to ~/byol_runs/RUN.log, where RUN is the last part of WORKDIR; the exit status goes to
~/byol_runs/RUN.exit. Watch it with: gcloud compute tpus tpu-vm ssh NAME --zone=ZONE --worker=0
--command='tail -f ~/byol_runs/RUN.log'
EOF
  exit "${1:-2}"
}


# shellcheck source=experiments/tpu/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

DRY_RUN=0 RESUME_LOOP=0 STOP=0
pos=() overrides=()
while (($#)); do
  case $1 in
    --resume-loop) RESUME_LOOP=1 ;;
    --stop) STOP=1 ;;
    --dry-run) DRY_RUN=1 ;;
    -h | --help) usage 0 ;;
    --config.*=*) overrides+=("$1") ;;
    --config.*) die "write overrides as $1=VALUE (one argument)" ;;
    -*) echo "launch.sh: unknown option $1" >&2; usage ;;
    *) pos+=("$1") ;;
  esac
  shift
done
for a in ${pos[@]+"${pos[@]}"} ${overrides[@]+"${overrides[@]}"}; do
  [[ $a != *$'\n'* ]] || die "arguments must not contain newlines"
done
need_gcloud() {
  require_gcloud
}

if ((STOP)); then
  ((${#pos[@]} == 2 && ${#overrides[@]} == 0 && !RESUME_LOOP)) || usage
  need_gcloud
  # The STOP file tells a --resume-loop not to start the run again. Expanded on the workers:
  # shellcheck disable=SC2016
  remote='mkdir -p ~/byol_runs && touch ~/byol_runs/STOP
if [ -f ~/byol_runs/train.pid ] && kill -TERM "$(cat ~/byol_runs/train.pid)" 2>/dev/null; then
  echo "$(hostname): sent SIGTERM; the run saves a checkpoint and exits with status 143"
else
  echo "$(hostname): no run going"
fi'
  run gcloud compute tpus tpu-vm ssh "${pos[0]}" --zone="${pos[1]}" --worker=all --command="$remote"
  exit 0
fi

((${#pos[@]} == 5)) || usage
need_gcloud
NAME=${pos[0]} ZONE=${pos[1]} CONFIG=${pos[2]} WORKDIR=${pos[3]} DATA_DIR=${pos[4]}
for d in "$WORKDIR" "$DATA_DIR"; do
  [[ $d == gs://* ]] || echo "launch.sh: warning: $d is not on GCS; on a pod slice every worker" \
    "must see the same WORKDIR and DATA_DIR (a local path only works on a single-host TPU)" >&2
done
RUN=$(basename "$WORKDIR")
RUN=${RUN//[^A-Za-z0-9._-]/_}

train=(python -m byol_jax.main --multihost_tpu "--config=$CONFIG" "--workdir=$WORKDIR" "--config.data_dir=$DATA_DIR"
  ${overrides[@]+"${overrides[@]}"})
train_line=""
for a in "${train[@]}"; do train_line+="$(q "$a") "; done
train_line=${train_line% }

# The script each worker runs. Training runs in the background so that its pid can be recorded
# for --stop; `wait` then gives its exit status.
worker_script="#!/usr/bin/env bash
# Written by experiments/tpu/launch.sh; the same on every worker.
set -uo pipefail
runs=\$HOME/byol_runs
log=\$runs/$RUN.log
resume_loop=$RESUME_LOOP
train=($train_line)
echo \$\$ > \"\$runs/loop.pid\"
cd \"\$HOME/byol_jax\" || exit 1
export PATH=\"\$HOME/byol_jax/.venv/bin:\$PATH\"
attempt=0
while :; do
  attempt=\$((attempt + 1))
  # printf %q, not echo in double quotes: an argument's \$(...) or backquotes must not run here.
  { printf '== %s %s attempt %s:' \"\$(date -u +%Y-%m-%dT%H:%M:%SZ)\" \"\$(hostname)\" \"\$attempt\"
    printf ' %q' \"\${train[@]}\"; echo; } >> \"\$log\"
  \"\${train[@]}\" >> \"\$log\" 2>&1 &
  pid=\$!
  echo \"\$pid\" > \"\$runs/train.pid\"
  wait \"\$pid\"
  rc=\$?
  echo \"== \$(date -u +%Y-%m-%dT%H:%M:%SZ) exit status \$rc\" >> \"\$log\"
  if [ \"\$rc\" -eq 143 ] && [ \"\$resume_loop\" -eq 1 ] && [ ! -e \"\$runs/STOP\" ]; then
    echo \"== stopped with a checkpoint (143); starting again to resume\" >> \"\$log\"
    sleep \"\${BYOL_RELAUNCH_DELAY:-30}\"
    continue
  fi
  break
done
echo \"\$rc\" > \"\$runs/$RUN.exit\"
rm -f \"\$runs/train.pid\" \"\$runs/loop.pid\"
exit \"\$rc\""

remote="set -eu
mkdir -p ~/byol_runs
if [ -f ~/byol_runs/loop.pid ] && kill -0 \"\$(cat ~/byol_runs/loop.pid)\" 2>/dev/null; then
  echo \"\$(hostname): a run is already going (see ~/byol_runs); stop it first with launch.sh --stop\" >&2
  exit 1
fi
rm -f ~/byol_runs/STOP ~/byol_runs/$RUN.exit
cat > ~/byol_runs/$RUN.sh <<'BYOL_WORKER_EOF'
$worker_script
BYOL_WORKER_EOF
if command -v tmux >/dev/null; then
  tmux kill-session -t byol 2>/dev/null || true
  tmux new-session -d -s byol \"bash ~/byol_runs/$RUN.sh\"
else
  nohup bash ~/byol_runs/$RUN.sh > /dev/null 2>&1 < /dev/null &
fi
echo \"\$(hostname): started; log ~/byol_runs/$RUN.log\""

run gcloud compute tpus tpu-vm ssh "$NAME" --zone="$ZONE" --worker=all --command="$remote"

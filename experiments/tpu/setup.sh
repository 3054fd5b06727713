#!/usr/bin/env bash
# Installs byol_jax in ~/byol_jax/.venv on every worker of a TPU VM or pod slice.
# Guide: experiments/tpu/README.md
set -euo pipefail

usage() {
  cat >&2 <<'EOF'
Usage: setup.sh NAME ZONE [--repo-url URL] [--python PYTHON] [--dry-run]

  (default)        copy this checkout (without .git, .venv and caches) to ~/byol_jax on every worker
  --repo-url URL   git clone URL into ~/byol_jax on every worker instead (pull if already cloned)
  --python PYTHON  interpreter on the workers that makes the venv (default: python3); if it is
                   older than 3.11 (the TPU images' Ubuntu 22.04 has 3.10), uv makes the venv with
                   its own CPython 3.11 instead, so the workers get the jax that CI tests
  --dry-run        print the commands instead of running them

On every worker: apt-get python3-venv and tmux, make ~/byol_jax/.venv (Python >= 3.11), pip
install -e . and then jax[tpu] at the jax version that pip chose. Safe to run again after changing
the code; a venv left by an older run on Python < 3.11 is made anew.
EOF
  exit "${1:-2}"
}


# shellcheck source=experiments/tpu/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

DRY_RUN=0 REPO_URL="" PYTHON=python3
pos=()
while (($#)); do
  case $1 in
    --repo-url) { (($# >= 2)) && [[ $2 != -* ]]; } || usage; REPO_URL=$2; shift ;;
    --repo-url=*) REPO_URL=${1#*=} ;;
    --python) { (($# >= 2)) && [[ $2 != -* ]]; } || usage; PYTHON=$2; shift ;;
    --python=*) PYTHON=${1#*=} ;;
    --dry-run) DRY_RUN=1 ;;
    -h | --help) usage 0 ;;
    -*) echo "setup.sh: unknown option $1" >&2; usage ;;
    *) pos+=("$1") ;;
  esac
  shift
done
((${#pos[@]} == 2)) || usage
NAME=${pos[0]} ZONE=${pos[1]}
require_gcloud
REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
TARBALL=byol_jax_src.tgz  # In the workers' home directories.

if [[ -n $REPO_URL ]]; then
  get_code="if [ -d ~/byol_jax/.git ]; then git -C ~/byol_jax pull --ff-only
else rm -rf ~/byol_jax && git clone $(q "$REPO_URL") ~/byol_jax; fi"
else
  # Replace the code but keep the venv, so that a second run only reinstalls what changed.
  get_code="mkdir -p ~/byol_jax
find ~/byol_jax -mindepth 1 -maxdepth 1 ! -name .venv -exec rm -rf {} +
tar -xzf ~/$TARBALL -C ~/byol_jax && rm -f ~/$TARBALL"
fi

remote="set -eu
sudo apt-get -o DPkg::Lock::Timeout=600 -qq update
sudo DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 -qq install -y python3-venv tmux git
$get_code
cd ~/byol_jax
new_enough=\"import sys; sys.exit(sys.version_info < (3, 11))\"
if ! { [ -x .venv/bin/python ] && .venv/bin/python -c \"\$new_enough\"; }; then
  rm -rf .venv
  if $(q "$PYTHON") -c \"\$new_enough\"; then
    $(q "$PYTHON") -m venv .venv
  else
    # jax >= 0.7 needs Python 3.11; uv downloads a standalone CPython 3.11 for the venv.
    $(q "$PYTHON") -m venv ~/.byol_uv && ~/.byol_uv/bin/pip install -q uv
    ~/.byol_uv/bin/uv venv --seed --python 3.11 .venv
  fi
fi
.venv/bin/python -m pip install -q -U pip
.venv/bin/python -m pip install -q -e .
jax_version=\$(.venv/bin/python -c 'import jax; print(jax.__version__)')
.venv/bin/python -m pip install -q \"jax[tpu]==\$jax_version\" -f https://storage.googleapis.com/jax-releases/libtpu_releases.html
echo \"\$(hostname): \$(.venv/bin/python --version), jax \$jax_version with libtpu installed in ~/byol_jax\""

if [[ -z $REPO_URL ]]; then
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  # COPYFILE_DISABLE keeps macOS tar from adding ._ files.
  run env COPYFILE_DISABLE=1 tar -czf "$tmp/$TARBALL" --exclude=.git --exclude=.venv \
    --exclude=__pycache__ --exclude=.pytest_cache --exclude='*.egg-info' --exclude=workdirs \
    -C "$REPO_ROOT" .
  run gcloud compute tpus tpu-vm scp "$tmp/$TARBALL" "$NAME:$TARBALL" --zone="$ZONE" --worker=all
fi
run gcloud compute tpus tpu-vm ssh "$NAME" --zone="$ZONE" --worker=all --command="$remote"

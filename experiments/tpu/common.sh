# Shared by the TPU scripts: errors, quoting for printed commands, and --dry-run.

die() { echo "$(basename "$0"): $*" >&2; exit 2; }

# gcloud is needed unless the commands are only printed.
require_gcloud() {
  ((DRY_RUN)) || command -v gcloud >/dev/null || die "gcloud not found; install the Google Cloud CLI"
}

# One argument, quoted so that the printed command can be pasted back into a shell.
q() {
  local plain='^[A-Za-z0-9_./:=@%+,-]+$' flag='^(--[A-Za-z0-9_.-]+=)(.+)$'
  if [[ $1 =~ $plain ]]; then printf '%s' "$1"
  elif [[ $1 =~ $flag ]]; then printf '%s' "${BASH_REMATCH[1]}"; q "${BASH_REMATCH[2]}"
  else local s=${1//\'/\'\\\'\'}; printf "'%s'" "$s"; fi
}

# Runs a command, or prints it when DRY_RUN is 1.
run() {
  if ((DRY_RUN)); then
    local a line=""
    for a in "$@"; do line+="$(q "$a") "; done
    echo "${line% }"
  else
    "$@"
  fi
}

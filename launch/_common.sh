# shellcheck shell=bash
# Helpers shared by the launchers in this folder (sourced, never run on its own).
#
# Every launcher builds each command as an argument list and hands it to `run`: with
# --dry-run the command is printed, quoted so that the printed line can be pasted into
# a shell as is, and nothing is executed; otherwise it is echoed to stderr and run.

DRY_RUN=0
PROG="$(basename "$0")"

# The repository root (the folder above launch/), as an absolute path.
# shellcheck disable=SC2034  # used by the launchers that source this file
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

die() {
  printf '%s: error: %s\n' "$PROG" "$*" >&2
  exit 2
}

# Prints its arguments as one shell command line; words with characters a shell
# would interpret are single-quoted (an option's value after its `--key=`).
quote_words() {
  local out="" word safe='^[A-Za-z0-9_@%+=:,./-]+$'
  for word in "$@"; do
    if [[ -n "$word" && "$word" =~ $safe ]]; then
      out+="$word "
    elif [[ "$word" =~ ^(--[A-Za-z0-9_.-]+=)(.*)$ ]]; then
      out+="${BASH_REMATCH[1]}$(quote_one "${BASH_REMATCH[2]}") "
    else
      out+="$(quote_one "$word") "
    fi
  done
  printf '%s\n' "${out% }"
}

quote_one() {
  printf "'%s'" "${1//\'/\'\\\'\'}"
}

run() {
  if ((DRY_RUN)); then
    quote_words "$@"
  else
    printf '+ %s\n' "$(quote_words "$@")" >&2
    "$@"
  fi
}

# Prints a comment line (a dry run's section header, or progress on stderr).
note() {
  if ((DRY_RUN)); then
    printf '# %s\n' "$*"
  else
    printf '# %s\n' "$*" >&2
  fi
}

# Fails unless "$2" (the value of option "$1") is a positive integer.
require_int() {
  [[ "$2" =~ ^[1-9][0-9]*$ ]] || die "$1 must be a positive integer, got '$2'"
}

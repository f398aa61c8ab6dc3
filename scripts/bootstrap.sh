#!/usr/bin/env bash
# Installs everything this project needs on a fresh machine, and nothing twice:
#   scripts/bootstrap.sh app     the application virtualenv (.venv: runtime, local extra, dev tools) and
#                                docker-registry (simulate and the demo replicate into local registries)
#   scripts/bootstrap.sh all     also the template checkers (.venv-tools) and the registry stand-ins
set -euo pipefail
cd "$(dirname "$0")/.."
what="${1:-all}"

log() { printf 'bootstrap: %s\n' "$*" >&2; }

# The Lambda runtime is python3.13: use it where pyenv or the system has it, else the newest >= 3.11.
find_python() {
  local candidate
  for candidate in "${ECR_AUTOMATION_PYTHON:-}" "$(command -v python3.13 2>/dev/null || true)" \
      "$(ls -d "$(pyenv root 2>/dev/null || echo /root/.pyenv)"/versions/3.13*/bin/python3.13 2>/dev/null | sort -V | tail -n 1)" \
      "$(command -v python3.12 2>/dev/null || true)" "$(command -v python3 2>/dev/null || true)"; do
    [ -n "$candidate" ] && [ -x "$candidate" ] || continue
    if "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
      echo "$candidate"; return 0
    fi
  done
  log "no Python >= 3.11 found"; return 1
}

find_python311() {
  local candidate
  for candidate in "$(command -v python3.11 2>/dev/null || true)" \
      "$(ls -d "$(pyenv root 2>/dev/null || echo /root/.pyenv)"/versions/3.11*/bin/python3.11 2>/dev/null | sort -V | tail -n 1)"; do
    [ -n "$candidate" ] && [ -x "$candidate" ] && { echo "$candidate"; return 0; }
  done
  return 1
}

# venv DIR STAMP_INPUTS... -- PIP_ARGS...: (re)creates DIR when the inputs changed since the last install.
venv() {
  local dir="$1"; shift
  local inputs=(); while [ "$1" != "--" ]; do inputs+=("$1"); shift; done; shift
  local stamp; stamp="$(cat "${inputs[@]}" | sha256sum | cut -c1-16)-$(basename "$PYTHON")"
  if [ -f "$dir/.stamp" ] && [ "$(cat "$dir/.stamp")" = "$stamp" ]; then return 0; fi
  log "installing $dir (${inputs[*]})"
  rm -rf "$dir"
  "$PYTHON" -m venv "$dir"
  # pip's output goes to a log kept in the venv, shown only when the install fails.
  if ! { "$dir/bin/python" -m pip install --disable-pip-version-check --upgrade pip &&
         "$dir/bin/python" -m pip install --disable-pip-version-check "$@"; } > "$dir/install.log" 2>&1; then
    tail -n 60 "$dir/install.log" >&2
    log "installing $dir failed (full log: $dir/install.log)"
    return 1
  fi
  echo "$stamp" > "$dir/.stamp"
}

# system_packages COMMAND[:PACKAGE]...: installs the Debian package of each missing command (the package is
# named like the command unless given after a colon, e.g. dockerd:docker.io).
system_packages() {
  local missing=() pair
  for pair in "$@"; do command -v "${pair%%:*}" >/dev/null || missing+=("${pair#*:}"); done
  [ ${#missing[@]} -eq 0 ] && return 0
  log "installing Debian packages: ${missing[*]}"
  local sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

PYTHON="$(find_python)"
case "$what" in
  app)
    venv .venv pyproject.toml -- -e ".[dev]"
    system_packages docker-registry
    ;;
  all)
    # Independent installs: run them side by side (the machine has two cores and a fast mirror).
    venv .venv pyproject.toml -- -e ".[dev]" & app_pid=$!
    venv .venv-tools requirements-tools.txt -- -r requirements-tools.txt & tools_pid=$!
    # The code must also run on Python 3.11 (the oldest supported): a venv for the unit tests there.
    if py311="$(find_python311)"; then
      PYTHON="$py311" venv .venv-py311 pyproject.toml -- -e ".[dev]" & py311_pid=$!
    else
      log "no Python 3.11 found: the 3.11 unit-test run will fail"; py311_pid=""
    fi
    system_packages docker-registry skopeo
    # The `sam local invoke` tier (tests/samlocal): dockerd (started by the tests; it needs iptables) and
    # debootstrap, which builds the Lambda-like base image offline.
    system_packages dockerd:docker.io iptables debootstrap
    wait "$app_pid"; wait "$tools_pid"; [ -z "$py311_pid" ] || wait "$py311_pid"
    ;;
  *) log "usage: $0 [app|all]"; exit 2 ;;
esac

#!/usr/bin/env bash
# Every check the project has, in one command: lint, format, types, template rules, tests.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh all

# `sam build` needs the runtime's interpreter on PATH; the app venv was made with it.
PYTHON_HOME="$(dirname "$(readlink -f .venv/bin/python)")"
export PATH="$PWD/.venv/bin:$PYTHON_HOME:$PATH"
export ECR_AUTOMATION_TOOLS_BIN="$PWD/.venv-tools/bin"

echo "== ruff check"; ruff check .
echo "== ruff format --check"; ruff format --check .
echo "== mypy"; mypy
echo "== unit tests on Python 3.11 (the oldest supported)"
[ -x .venv-py311/bin/python ] || { echo "no .venv-py311: Python 3.11 is missing" >&2; exit 1; }
.venv-py311/bin/python -m pytest tests/unit -q -p no:cacheprovider
echo "== pytest"
set +e
python -m pytest "$@"
status=$?
set -e
# pytest's 5 means no test ran: that is a failure here, never a green run.
[ "$status" -eq 5 ] && echo "pytest collected no tests" >&2
exit "$status"

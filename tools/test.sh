#!/usr/bin/env bash
# test.sh - install what the tests need, lint, and run the whole test suite.
# Extra arguments go to pytest (e.g. -k oracle, -x).
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh
.venv/bin/ruff check onesuite_fs tools tests bench
exec .venv/bin/python -m pytest "$@"

#!/usr/bin/env bash
# `bun run mutation`: Stryker's mutation testing of the pure modules (stryker.config.json lists them),
# each mutant judged by the unit tests of its module (scripts/mutation-tests.sh). Stryker itself runs on
# Node.js (>= 20); the tests run on Bun. Exits non-zero when fewer than 85% of the mutants are killed
# (thresholds.break), and prints each module's score, the survivors and a closing
# `mutation score: ...` line (scripts/mutation-report.ts). README: "Mutation score".
set -uo pipefail
cd "$(dirname "$0")/.."

major=$(node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0)
if [ "$major" -lt 20 ]; then
  echo "mutation: Stryker 9 needs Node.js 20 or newer on PATH (found: $(node --version 2>/dev/null || echo none))" >&2
  exit 1
fi

rm -rf reports/mutation .stryker-tmp
node node_modules/@stryker-mutator/core/bin/stryker.js run "$@"
status=$?
if [ -f reports/mutation/mutation.json ]; then
  bun scripts/mutation-report.ts --survivors || status=1
else
  echo "mutation score: not measured (Stryker wrote no report)"
  status=1
fi
exit "$status"

#!/usr/bin/env bash
# The test command Stryker's command runner starts for each mutant (stryker.config.json). Stryker puts
# the mutated sources in a sandbox and names the active mutant in __STRYKER_ACTIVE_MUTANT__; only the
# unit tests of the module that mutant is in run, so one mutant costs one small `bun test` (~0.15 s)
# instead of every pure test file. The module is found by the mutant's id in the instrumented source
# (Stryker 9's `stryMutAct_9fa48("<id>")` marker); if the marker is not found (another Stryker
# version), every mapped test file runs: slower, never a wrong verdict.
set -euo pipefail

declare -A TESTS=(
  [src/model/reference.ts]="test/unit/reference.test.ts"
  [src/registry/chunks.ts]="test/unit/chunks.test.ts"
  [src/registry/retry.ts]="test/unit/retry.test.ts"
  [src/model/manifest.ts]="test/unit/manifest.test.ts"
  [src/registry/failure.ts]="test/unit/registry-errors.test.ts"
  [src/cli/options.ts]="test/unit/options.test.ts"
  [src/sources/archive-reader.ts]="test/unit/archive.test.ts test/unit/archive-reader.test.ts"
  [src/sources/tar-index.ts]="test/unit/tar-index.test.ts"
  [src/sources/manifest-walker.ts]="test/unit/manifest-walker.test.ts test/unit/archive.test.ts"
  [src/model/descriptor.ts]="test/unit/descriptor.test.ts"
  [src/model/platform.ts]="test/unit/platform.test.ts"
  [src/model/media-types.ts]="test/unit/media-types.test.ts"
)

all() {
  local files=() file
  for file in "${!TESTS[@]}"; do
    # shellcheck disable=SC2206 # the lists are space-separated paths without spaces
    files+=(${TESTS[$file]})
  done
  printf '%s\n' "${files[@]}" | sort -u
}

mutant="${__STRYKER_ACTIVE_MUTANT__:-}"
tests=""
if [ -n "$mutant" ]; then
  for file in "${!TESTS[@]}"; do
    if grep -qF "stryMutAct_9fa48(\"$mutant\")" "$file"; then
      tests="${TESTS[$file]}"
      break
    fi
  done
fi
# The dry run (no mutant) and an unknown marker run them all.
[ -n "$tests" ] || tests="$(all | tr '\n' ' ')"
# shellcheck disable=SC2086 # word splitting of the path list is wanted
exec bun test --bail=1 $tests

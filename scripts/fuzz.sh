#!/usr/bin/env bash
# Runs every native fuzz target (func FuzzXxx in *_test.go) for a short
# while. CI calls it from scripts/test.sh with the default time; for a real
# fuzzing session give each target longer:
#
#   COHORT_FUZZTIME=10m scripts/fuzz.sh            # every target, 10 minutes each
#   scripts/fuzz.sh FuzzParseCookie                # one target (default time)
#
# New corpus entries that make a target fail are written under the
# package's testdata/fuzz/ by go test; commit them as regression seeds.
set -euo pipefail
cd "$(dirname "$0")/.."
fuzztime=${COHORT_FUZZTIME:-3s}
only=${1:-}
failed=0
count=0
while IFS=: read -r file name; do
	[[ -n $only && $name != "$only" ]] && continue
	pkg=./$(dirname "$file")
	count=$((count + 1))
	echo "== fuzz $name in $pkg for $fuzztime"
	if ! go test -run '^$' -fuzz "^${name}\$" -fuzztime "$fuzztime" "$pkg" >/tmp/cohort-fuzz-$$.log 2>&1; then
		cat /tmp/cohort-fuzz-$$.log
		echo "FAIL: $name ($pkg)"
		failed=$((failed + 1))
	fi
done < <(grep -rho --include='*_test.go' -H '^func Fuzz[A-Za-z0-9_]*' . | sed 's|^\./||; s|:func |:|' | sort -u)
rm -f /tmp/cohort-fuzz-$$.log
echo "fuzz: $count targets, $failed failed"
((failed == 0))

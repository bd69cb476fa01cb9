#!/usr/bin/env bash
# Set everything up, then run the whole test suite and the distribution check.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cd build
status=0
make -j"$(nproc)" check || status=$?
if [ $status -ne 0 ]; then
    for f in $(find . -name '*.log' -path '*tests*'); do echo "=== $f"; tail -n 60 "$f"; done
    exit $status
fi
# CUnit's own summary of each runner (make check keeps it in the logs)
tests=0 failed=0
for f in tests/test_*.log; do
    echo "=== ${f%.log}"
    sed -n '/Run Summary/,/Elapsed/p' "$f"
    read -r t f_ < <(awk '$1 == "tests" { print $3, $5 }' "$f")
    tests=$((tests + t)) failed=$((failed + f_))
done
echo "cunit: $((tests - failed)) passed, $failed failed"
make -j"$(nproc)" distcheck >/dev/null 2>distcheck.err || { cat distcheck.err; exit 1; }
echo "distcheck: ok"

#!/bin/sh
# See bench/README.md.
#
# `make bench` must keep working: run its harness (bench/run-bench.sh) once,
# quick and for spand alone (and the stub allocator, the throughput
# workloads' floor),
# into a temporary directory, and check that the
# report it writes is whole: the targets table with a verdict on every line,
# and every results table (workloads 1-9) with spand's figures in it.  The
# figures themselves are not judged (a test checks correctness, not time).
# Exit 77 (automake's SKIP) when python3, which writes the report, is missing.
srcdir=${SPAND_SRCDIR:-${srcdir:-.}/..}
builddir=$(pwd)
if ! command -v python3 >/dev/null 2>&1; then
    echo "bench-smoke: python3 not found, skipped"
    exit 77
fi
for f in bench/spanbench bench/c2c daemon/spand; do
    if [ ! -x "$builddir/$f" ]; then
        echo "bench-smoke: $builddir/$f is not built" >&2
        exit 1
    fi
done
tmp=$(mktemp -d "${TMPDIR:-/tmp}/spand-bench-smoke.XXXXXX") || exit 1
trap 'rm -rf "$tmp"' EXIT INT TERM
out=$tmp/RESULTS.md
if ! bash "$srcdir/bench/run-bench.sh" --builddir "$builddir" --srcdir "$srcdir" \
        --quick --only spand,stub --out "$out" --raw-dir "$tmp" >"$tmp/log" 2>&1; then
    echo "bench-smoke: run-bench.sh failed:" >&2
    tail -n 20 "$tmp/log" >&2
    exit 1
fi
# Sections: "## Targets", then "### N. ..." for each workload.  In the
# targets table every line ends in a verdict; in workloads 1-6 every row
# has a figure for every size (spand alone, with the stub's column and
# ratio in workloads 1, 2, 4, 5 and 6: no "-" cell); workload 7 has a
# full spand row, workload 8 spand's rows (where "-" may say that 90 % was
# not back within the quick run's short wait); workload 9 has its round
# trips and refill counts; the ring waits table has workloads 4 and 5 at
# every size, spand's and the stub's.
awk '
    /^## / { sec = $2; next }
    /^### [0-9]+\./ { sec = $2 + 0; seen[sec] = 1; next }
    /^### Ring waits/ { sec = "waits"; next }
    /^\| size \|.*\| no allocator \(stub\) \|.* spand \/ no allocator \|$/ { stubcol[sec] = 1 }
    !/^\| / || /^\|---/ || /^\| (size|target|allocator|round trip|workload) \|/ { next }
    sec == "Targets" {
        targets++
        if ($0 !~ /\| (met|\*\*NOT met\*\*|not measured) \|$/) { print "bench-smoke: no verdict: " $0; bad = 1 }
        next
    }
    sec >= 1 && sec <= 6 {
        rows[sec]++
        if ($0 ~ /\| - \|/) { print "bench-smoke: w" sec " has a hole: " $0; bad = 1 }
        next
    }
    sec == 7 && /^\| spand \|/ {
        rows[sec]++
        if ($0 ~ /\| - \|/) { print "bench-smoke: w7 has a hole: " $0; bad = 1 }
        next
    }
    sec == 8 && /^\| spand \|/ { rows[sec]++ }   # "-": 90 % not back within a quick wait
    sec == 9 { rows[sec]++ }
    sec == "waits" {
        rows[sec]++
        if ($0 !~ /^\| w[45] \| [0-9]+ [KB]/ || $0 ~ /\| - \|/) { print "bench-smoke: ring waits: " $0; bad = 1 }
        next
    }
    END {
        split("1 2 4 5 6", floor, " ")
        for (k in floor)
            if (!stubcol[floor[k]]) { print "bench-smoke: workload " floor[k] " has no column for the stub"; bad = 1 }
        if (targets < 10) { print "bench-smoke: the targets table has " targets + 0 " lines"; bad = 1 }
        if (rows["waits"] < 14) { print "bench-smoke: the ring waits table has " rows["waits"] + 0 " rows, wants 14"; bad = 1 }
        for (w = 1; w <= 9; w++) {
            want = w <= 6 ? 7 : (w == 9 ? 10 : 1)
            if (!seen[w] || rows[w] < want) {
                print "bench-smoke: workload " w " has " rows[w] + 0 " rows of spand, wants " want
                bad = 1
            }
        }
        exit bad
    }' "$out" || { echo "bench-smoke: the report is not whole" >&2; exit 1; }
echo "bench-smoke: run-bench.sh --quick wrote a whole report for spand and the stub"

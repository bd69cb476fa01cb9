#!/bin/bash
# Compare two builds of spand, back to back: for each workload and size,
# alternate one short spanbench run of build A and one of build B, ROUNDS
# times (A first in odd rounds, B first in even ones), and print the median
# of the per-round ratios B/A with its quartiles.  On a machine whose speed
# drifts (a virtual machine's core-to-core latency can swing 5x within
# seconds), two runs a second apart mostly share a phase, so their ratio
# is steadier than the ratio of two medians taken minutes apart.  This is
# how bench/TRIED.md's "back-to-back" figures are measured.
#
#   bench/ab.sh [--rounds N] [--secs S] BUILD_A BUILD_B W:SIZE [W:SIZE ...]
#   bench/ab.sh /tmp/build-before build 5:16K 5:256K 1:64
#
# BUILD_A, BUILD_B: build directories (each with bench/spanbench and
# daemon/spand).  W:SIZE: a workload 1-6 and a size (K suffix allowed).
set -euo pipefail

usage() {
    sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'
}

rounds=9 secs=0.1
while [ $# -gt 0 ]; do
    case "$1" in
    --rounds) rounds=$2; shift 2 ;;
    --secs) secs=$2; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    --) shift; break ;;
    -*) echo "ab.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    *) break ;;
    esac
done
if [ $# -lt 3 ]; then
    usage >&2
    exit 2
fi
case "$rounds" in ''|*[!0-9]*|0) echo "ab.sh: --rounds wants a positive integer, not '$rounds'" >&2; exit 2 ;; esac
a=$1 b=$2
shift 2
for d in "$a" "$b"; do
    for f in bench/spanbench daemon/spand; do
        [ -x "$d/$f" ] || { echo "ab.sh: $d/$f is not built" >&2; exit 1; }
    done
done

for ws in "$@"; do
    case "$ws" in
    [1-6]:?*) ;;
    *) echo "ab.sh: '$ws': say W:SIZE, a workload 1-6 and a size" >&2; exit 2 ;;
    esac
done

err=$(mktemp)
trap 'rm -f "$err"' EXIT

# One run of build $1 at workload $2, size $3: its rate; or spanbench's
# complaint and exit 1.
rate() {
    local out r
    out=$("$1/bench/spanbench" --alloc spand --spand "$1/daemon/spand" --workloads "$2" \
              --sizes "$3" --reps 1 --secs "$secs" 2>"$err") || true
    r=$(awk -F'\t' '$1 == "R" && $5 == "ops" { print $6 }' <<<"$out")
    if [ -z "$r" ]; then
        echo "ab.sh: $1: w$2 at $3 gave no figure:" >&2
        tail -n 3 "$err" >&2
        exit 1
    fi
    echo "$r"
}

printf '%-10s %8s %8s %8s %6s\n' "workload" "B/A" "q1" "q3" "rounds"
for ws in "$@"; do
    w=${ws%%:*} size=${ws#*:}
    ratios=()
    for ((i = 1; i <= rounds; i++)); do
        if ((i % 2)); then
            ra=$(rate "$a" "$w" "$size"); rb=$(rate "$b" "$w" "$size")
        else
            rb=$(rate "$b" "$w" "$size"); ra=$(rate "$a" "$w" "$size")
        fi
        ratios+=("$(awk -v a="$ra" -v b="$rb" 'BEGIN { printf "%.6f", b / a }')")
    done
    printf '%s\n' "${ratios[@]}" | sort -g | awk -v ws="w$w $size" '
        { r[NR] = $1 }
        END { printf "%-10s %8.3f %8.3f %8.3f %6d\n", ws, r[int((NR + 1) / 2)],
                     r[int(NR / 4) + 1], r[NR - int(NR / 4)], NR }'
done

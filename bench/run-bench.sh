#!/usr/bin/env bash
# Run the whole benchmark comparison and write bench/RESULTS.md in the
# source tree.  `make bench` calls it; see bench/README.md.
#
#   run-bench.sh --builddir DIR --srcdir DIR [--quick] [--reps N] [--reps-slow M]
#                [--secs S] [--only LIST] [--out FILE] [--raw-dir DIR]
#
# --reps: repetitions of the throughput workloads 1-6 (7 by default);
# --reps-slow: of workloads 7-9, the memory, scavenging and daemon ones (5
# by default, and never more than --reps).
# --raw-dir: where the raw results (results-raw.tsv, results-meta.tsv) go;
# the build directory's bench/ by default.
#
# Comparators: glibc (no preload); jemalloc, mimalloc, tcmalloc under
# LD_PRELOAD; spand (spanbench starts its own daemon); Boost.Interprocess
# (bench/boostbench); iceoryx (bench/icebench, which starts its own RouDi).
# And, in the throughput workloads but 3, their floor: bench/stub.c, an
# allocator that does nothing.
# Missing ones are named with the apt-get command that brings them, and the
# rest runs.  Nothing is installed here.
set -u
builddir='' srcdir='' quick='' reps=7 reps_slow=5 secs=0.1 only='' out='' rawdir=''
while [ $# -gt 0 ]; do
    case "$1" in
    --builddir) builddir=$2; shift ;;
    --srcdir) srcdir=$2; shift ;;
    --quick) quick=1 ;;
    --reps) reps=$2; shift ;;
    --reps-slow) reps_slow=$2; shift ;;
    --secs) secs=$2; shift ;;
    --only) only=$2; shift ;;
    --out) out=$2; shift ;;
    --raw-dir) rawdir=$2; shift ;;
    -h|--help) sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "run-bench.sh: unknown argument $1" >&2; exit 2 ;;
    esac
    shift
done
for n in "$reps" "$reps_slow"; do
    case "$n" in ''|*[!0-9]*|0) echo "run-bench.sh: --reps and --reps-slow want a positive integer, not '$n'" >&2; exit 2 ;; esac
done
[ "$reps_slow" -le "$reps" ] || reps_slow=$reps
[ -n "$builddir" ] || builddir=$(pwd)
[ -n "$srcdir" ] || srcdir=$(cd "$(dirname "$0")/.." && pwd)
[ -n "$out" ] || out=$srcdir/bench/RESULTS.md
# shellcheck disable=SC2016  # the single quotes are part of the text
command_line="make bench${BENCH_FLAGS:+ BENCH_FLAGS='$BENCH_FLAGS'}"

spanbench=$builddir/bench/spanbench
[ -x "$spanbench" ] || { echo "run-bench.sh: $spanbench is not built (run make)" >&2; exit 1; }
command -v python3 >/dev/null || { echo "run-bench.sh: python3 is needed for the report (apt-get install python3)" >&2; exit 1; }

# The repetitions go round the allocators, one measurement at a time (the
# loop at the end says how).  The machine's slow spells, which on a virtual
# machine last seconds to minutes (the host moves the two virtual CPUs
# between cores that share a cache and cores that do not, and a cache line
# then takes 5x longer from one to the other), then fall on every
# allocator's run of a cell alike instead of on the allocator running
# at the time.  (With a whole allocator's run between two others', one run
# at 3d2f570 met the slow placement before four of spand's five rounds and
# before none of Boost's.)
if [ -n "$quick" ]; then
    common=(--quick)
    rounds=1 rounds_slow=1
else
    common=(--reps 1 --secs "$secs")
    rounds=$reps rounds_slow=$reps_slow
fi

want() { [ -z "$only" ] || [[ ",$only," == *",$1,"* ]]; }

# Where a Debian package put a library, else nothing.
lib_of() {
    local pkg=$1 name=$2
    dpkg -L "$pkg" 2>/dev/null | grep -m1 "/$name\$" || true
}

declare -a missing=() apt=()
note_missing() { missing+=("$1: $2"); [ -n "${3:-}" ] && apt+=("$3"); }

jemalloc=$(lib_of libjemalloc2 libjemalloc.so.2)
mimalloc=$(lib_of libmimalloc2.0 libmimalloc.so.2)
tcmalloc=$(lib_of libtcmalloc-minimal4 libtcmalloc_minimal.so.4)
[ -n "$jemalloc" ] || note_missing jemalloc "libjemalloc.so.2 not found" libjemalloc-dev
[ -n "$mimalloc" ] || note_missing mimalloc "libmimalloc.so.2 not found" libmimalloc-dev
[ -n "$tcmalloc" ] || note_missing tcmalloc "libtcmalloc_minimal.so.4 not found" libgoogle-perftools-dev
[ -x "$builddir/daemon/spand" ] || note_missing spand "daemon/spand is not built" ""
[ -x "$builddir/bench/boostbench" ] ||
    note_missing boost "bench/boostbench not built (configure found no boost/interprocess headers; rerun configure after installing)" libboost-dev
if [ ! -x "$builddir/bench/icebench" ]; then
    note_missing iceoryx "bench/icebench not built (configure found no iceoryx C binding; rerun configure after installing)" "libiceoryx-binding-c-dev iceoryx"
elif ! command -v iox-roudi >/dev/null; then
    note_missing iceoryx "iox-roudi (RouDi) not on PATH" iceoryx
fi
if [ ${#missing[@]} -gt 0 ]; then
    echo "run-bench.sh: comparators missing, the rest runs:"
    printf '  - %s\n' "${missing[@]}"
    [ ${#apt[@]} -gt 0 ] && echo "  to add them: apt-get install ${apt[*]}"
fi

[ -n "$rawdir" ] || rawdir=$builddir/bench
mkdir -p "$rawdir" || exit 1
raw=$rawdir/results-raw.tsv
meta=$rawdir/results-meta.tsv
: >"$raw"
status=0
declare -A c2c=()
c2c_labels=()
run() {   # label, workload, then the command
    local label=$1 w=$2; shift 2
    want "$label" || return 0
    # the core-to-core latency before every run of a cross-core workload
    # (at its first size)
    if [ -x "$builddir/bench/c2c" ] && [[ $w == [456] ]] && [ "$cur_size" = "${sizes[0]}" ]; then
        [ -n "${c2c[$label]:-}" ] || c2c_labels+=("$label")
        c2c[$label]="${c2c[$label]:+${c2c[$label]}/}$("$builddir/bench/c2c")"
    fi
    local what="workload $w${cur_size:+ at $cur_size bytes}"
    echo "run-bench.sh: $label, $what (round $round of $rounds) ..."
    local t0=$SECONDS
    "$@" --workloads "$w" >>"$raw" ||
        { echo "run-bench.sh: $label failed on $what (status $?), its rows are partial" >&2; status=1; }
    echo "run-bench.sh: $label, $what done in $((SECONDS - t0)) s"
}

# Which workloads each kind of allocator has (spanbench, boostbench and
# icebench print nothing for the others).
has() {   # label, workload
    case $1 in
    spand) return 0 ;;
    stub) [[ $2 == [12456] ]] ;;
    boost) [[ $2 == [1-8] ]] ;;
    iceoryx) [[ $2 == [13456] ]] ;;
    *) [[ $2 == [1234678] ]] ;;   # the process-local allocators: not 5, not 9
    esac
}

# RouDi fills every pool of its configuration at start (bench/roudi.toml
# has one for every size, 150 MiB for 256 KiB alone), which took half of
# each icebench run: give it the pool of the one size measured, cut from
# that file (the whole file when the size has no pool of its own there).
ice_tmp=$(mktemp -d "${TMPDIR:-/tmp}/run-bench.XXXXXX") || exit 1
trap 'rm -rf "$ice_tmp"' EXIT
roudi_config() {   # size
    local f="$ice_tmp/roudi-$1.toml"
    if [ ! -f "$f" ] && ! awk -v want="$1" '
            /^\[\[segment\.mempool\]\]/ { pool = $0 "\n"; inpool = 1; next }
            inpool && /^size = / { size = $3 }
            inpool { pool = pool $0 "\n"; if ($0 ~ /^count = /) { if (size == want) keep = keep pool; inpool = 0 }; next }
            { head = head $0 "\n" }
            END { if (keep == "") exit 1; printf "%s%s", head, keep }' \
            "$srcdir/bench/roudi.toml" >"$f"; then
        rm -f "$f"
        echo "$srcdir/bench/roudi.toml"
        return
    fi
    echo "$f"
}

# One allocator's run of workload w, with the given extra arguments (a
# --sizes list, or none).
run_alloc() {   # label, workload, extra arguments...
    local label=$1 w=$2; shift 2
    case $label in
    glibc) has glibc "$w" && run glibc "$w" "$spanbench" --alloc malloc --impl glibc "${common[@]}" "$@" ;;
    jemalloc|mimalloc|tcmalloc)
        local lib=${!label}
        [ -n "$lib" ] && has "$label" "$w" &&
            run "$label" "$w" env LD_PRELOAD="$lib" "$spanbench" --alloc malloc --impl "$label" "${common[@]}" "$@" ;;
    spand)
        [ -x "$builddir/daemon/spand" ] &&
            run spand "$w" "$spanbench" --alloc spand --spand "$builddir/daemon/spand" "${common[@]}" "$@" ;;
    boost)
        [ -x "$builddir/bench/boostbench" ] && has boost "$w" &&
            run boost "$w" "$builddir/bench/boostbench" "${common[@]}" "$@" ;;
    stub)   # the harness's floor: bench/stub.c, an allocator that does nothing
        has stub "$w" && run stub "$w" "$spanbench" --alloc stub "${common[@]}" "$@" ;;
    iceoryx)
        [ -x "$builddir/bench/icebench" ] && command -v iox-roudi >/dev/null && has iceoryx "$w" &&
            run iceoryx "$w" "$builddir/bench/icebench" --config "$(roudi_config "$cur_size")" "${common[@]}" "$@" ;;
    esac
    return 0
}

# Within a round, the throughput workloads (1-6) go size by size: every
# allocator runs one size, then every allocator the next, so that the cells
# a ratio compares are measured within a second or two of each other, not
# the length of a whole workload apart; and each round starts the allocators
# one place further along, so that none always runs right after the same
# other one.  (The ninth round's last run at 9a2b7ee, whose allocators each
# ran all seven sizes in turn, met a slow spell in three of spand's five
# w1 16 B measurements and in none of tcmalloc's.)
allocs=(glibc jemalloc mimalloc tcmalloc spand boost iceoryx stub)
sizes=(16 64 256 1024 4096 16384 262144)   # spanbench's, boostbench's and icebench's own list
cur_size=''
start=$SECONDS
for round in $(seq "$rounds"); do
    k=$(( (round - 1) % ${#allocs[@]} ))
    order=("${allocs[@]:k}" "${allocs[@]:0:k}")
    for w in 1 2 3 4 5 6 7 8 9; do
        [[ $w == [789] ]] && ((round > rounds_slow)) && continue
        if [[ $w == [1-6] ]]; then
            for cur_size in "${sizes[@]}"; do
                for a in "${order[@]}"; do run_alloc "$a" "$w" --sizes "$cur_size"; done
            done
        else
            cur_size=''
            for a in "${order[@]}"; do run_alloc "$a" "$w"; done
        fi
    done
done
elapsed=$((SECONDS - start))

# What the report says about where and how it ran.
{
    printf 'date\t%s\n' "$(date -u '+%Y-%m-%d %H:%M UTC')"
    printf 'command\t%s\n' "$command_line"
    printf 'cpu\t%s\n' "$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
    printf 'cores\t%s\n' "$(nproc)"
    printf 'kernel\t%s\n' "$(uname -r)"
    printf 'load\t%s (1, 5, 15 min load average at the end); the run took %s s\n' \
        "$(cut -d' ' -f1-3 /proc/loadavg)" "$elapsed"
    if [ ${#c2c_labels[@]} -gt 0 ]; then
        line=
        for l in "${c2c_labels[@]}"; do line="${line:+$line, }$l ${c2c[$l]} ns"; done
        printf 'c2c\t%s\n' "$line"
    fi
    if [ -n "$quick" ]; then printf 'reps\t1 (--quick)\nsecs\t0.03\n'; else printf 'reps\t%s for workloads 1 to 6, %s for 7 to 9 (in %s rounds; in each, every allocator runs workload 1 at 16 B, then every allocator workload 1 at 64 B, and so on through the sizes of workloads 1 to 6, then, in the first %s rounds, every allocator workload 7, 8 and 9; each round starts one allocator further along the list)\nsecs\t%s\n' "$reps" "$reps_slow" "$reps" "$reps_slow" "$secs"; fi
    printf 'spand\t%s (git %s)\n' "$builddir/daemon/spand" "$(git -C "$srcdir" rev-parse --short HEAD 2>/dev/null || echo '?')"
    dpkg-query -W -f='version\t${Package} ${Version}\n' libc6 libjemalloc2 libmimalloc2.0 \
        libtcmalloc-minimal4 libboost-dev libiceoryx-binding-c-dev iceoryx \
        libevent-2.1-7 libprotobuf-c1 gcc 2>/dev/null
    for m in "${missing[@]}"; do printf 'missing\t%s\n' "$m"; done
    [ -n "$quick" ] && printf 'note\t%s\n' "QUICK RUN (--quick): one repetition of 0.03 s each, for checking the harness only; the numbers are not for comparison."
    printf 'note\t%s\n' "Workload 2 caps a batch at 256 MiB (10,000 objects up to 16 KiB, 1,024 of 256 KiB). Workload 8 runs at the sizes listed in its table; every other workload at 16 B to 256 KiB."
    printf 'note\t%s\n' "spand's periodic scavenger runs every 1 s here (spand --scavenge-interval 1); its default is 5 s."
    printf 'note\t%s\n' "iceoryx: loan/release of chunks from RouDi's fixed pools (bench/roudi.toml); cross-process rows publish the chunk to a subscriber that releases it. It has no row where a measurement cannot be expressed (see Not measured)."
} >"$meta"

if ! python3 "$srcdir/bench/report.py" "$raw" "$meta" "$srcdir/bench/TRIED.md" >"$out.tmp"; then
    echo "run-bench.sh: the report failed" >&2
    rm -f "$out.tmp"
    exit 1
fi
mv "$out.tmp" "$out"
echo "run-bench.sh: wrote $out (raw results: $raw) in $elapsed s"
exit $status

#!/usr/bin/env python3
"""Turn spanbench/boostbench/icebench result lines into bench/RESULTS.md.

    report.py RAW.tsv META.txt > RESULTS.md

RAW.tsv holds the programs' output: "R impl wN size metric value" per
repetition, "S impl wN size reason" for what was skipped, "#" comments.
META.txt holds "key<TAB>value" lines written by bench/run-bench.sh (date,
command, machine, versions, missing comparators).  Every table shows the
median over the repetitions with [min - max]; the targets of issue 5 are
checked at the end, each "met" or "NOT met" (or "not measured").
"""
import statistics
import sys
from collections import OrderedDict, defaultdict

LOCAL = ["glibc", "jemalloc", "mimalloc", "tcmalloc"]
PEERS = ["boost", "iceoryx"]
SIZES = [16, 64, 256, 1024, 4096, 16384, 262144]
TITLES = {
    "w1": "1. Immediate alloc+free, one thread (pairs/s)",
    "w2": "2. Batch: 10,000 allocations, then free all, one thread (objects/s)",
    "w3": "3. Two threads, each its own alloc+free loop (aggregate pairs/s)",
    "w4": "4. Cross-thread: one thread allocates, the other frees, through a ring (objects/s)",
    "w5": "5. Cross-process: one process allocates and passes offsets through a ring in shared memory, the other frees (objects/s)",
    "w6": "6. Two processes allocating and freeing at once (aggregate pairs/s)",
}


def load(path):
    vals = defaultdict(list)
    skips = []
    for line in open(path):
        f = line.rstrip("\n").split("\t")
        if f[0] == "R" and len(f) == 6:
            try:
                vals[(f[1], f[2], int(f[3]), f[4])].append(float(f[5]))
            except ValueError:
                pass
        elif f[0] == "S" and len(f) >= 5:
            skip = (f[1], f[2], int(f[3]), f[4])
            if skip not in skips:       # one per round of repetitions
                skips.append(skip)
    return vals, skips


def load_meta(path):
    meta = OrderedDict()
    for line in open(path):
        if "\t" in line:
            k, v = line.rstrip("\n").split("\t", 1)
            meta.setdefault(k, [])
            meta[k].append(v)
    return meta


class Stats:
    def __init__(self, vals):
        self.vals = vals

    def get(self, impl, w, size, metric):
        v = self.vals.get((impl, w, size, metric))
        if not v:
            return None
        return statistics.median(v), min(v), max(v), len(v)

    def med(self, impl, w, size, metric):
        s = self.get(impl, w, size, metric)
        return s[0] if s else None


def size_name(n):
    if n >= 1024 and n % 1024 == 0:
        return "%d KiB" % (n // 1024)
    return "%d B" % n


def fmt_rate(v):
    if v >= 1e6:
        return "%.1f M" % (v / 1e6)
    if v >= 1e3:
        return "%.1f k" % (v / 1e3)
    return "%.0f" % v


def cell(s, fmt=fmt_rate):
    if s is None:
        return "-"
    med, lo, hi, n = s
    return "%s [%s-%s]" % (fmt(med), fmt(lo), fmt(hi))


def ratio_text(a_name, a, b_name, b):
    """a / b, worded as who is how many times faster."""
    if a is None or b is None or a <= 0 or b <= 0:
        return "-"
    r = a / b
    if r >= 1:
        return "%.2f (%s %.1fx faster)" % (r, a_name, r)
    return "%.2f (%s %.1fx faster)" % (r, b_name, 1 / r)


def present(stats, impls, w):
    return [i for i in impls if any(k[0] == i and k[1] == w for k in stats.vals)]


def column(impl):
    """A column's heading: the allocator's name, the stub's what it is."""
    return "no allocator (stub)" if impl == "stub" else impl


def throughput_tables(st, out):
    locals_all = LOCAL
    floor_said = False
    for w, title in TITLES.items():
        out.append("### %s\n" % title)
        loc = present(st, locals_all, w)
        peers = present(st, PEERS, w)
        has_spand = bool(present(st, ["spand"], w))
        floor = bool(present(st, ["stub"], w))
        cols = loc + (["spand"] if has_spand else []) + peers + (["stub"] if floor else [])
        if not cols:
            out.append("No results.\n")
            continue
        head = ["size"] + [column(c) for c in cols]
        if has_spand and loc:
            head.append("spand / best local")
        for p in peers:
            if has_spand:
                head.append("%s / spand" % p)
        if floor:
            head += (["best local / no allocator"] if loc else []) + \
                    (["spand / no allocator"] if has_spand else [])
            if not floor_said:
                out.append("*no allocator (stub)*: the same workload on a stand-in whose malloc returns "
                           "one buffer and whose free does nothing, through a shared library as the "
                           "others (bench/stub.c): the most this harness can do on this machine. "
                           "Not in workload 3, whose two threads would write that one buffer from "
                           "two cores.\n")
                floor_said = True
            else:
                out.append("*no allocator (stub)*: as in workload 1.\n")
        out.append("| " + " | ".join(head) + " |")
        out.append("|" + "---|" * len(head))
        for size in SIZES:
            row = [size_name(size)]
            for c in cols:
                row.append(cell(st.get(c, w, size, "ops")))
            if all(x == "-" for x in row[1:]):
                continue
            sp = st.med("spand", w, size, "ops")
            if has_spand and loc:
                best = max(((st.med(i, w, size, "ops") or 0), i) for i in loc)
                row.append(ratio_text("spand", sp, best[1], best[0] or None))
            for p in peers:
                if has_spand:
                    row.append(ratio_text(p, st.med(p, w, size, "ops"), "spand", sp))
            if floor:
                fl = st.med("stub", w, size, "ops")
                bl = max([st.med(i, w, size, "ops") or 0 for i in loc] + [0])
                for v in ([bl] if loc else []) + ([sp] if has_spand else []):
                    row.append("%.2f" % (v / fl) if v and fl else "-")
            out.append("| " + " | ".join(row) + " |")
        out.append("")


def ring_waits_table(st, out):
    impls = [i for i in LOCAL + ["spand", "stub"]
             if any(st.get(i, w, size, "ring_full_per_1k") is not None
                    for w in ["w4", "w5"] for size in SIZES)]
    if not impls:
        return
    out.append("### Ring waits in workloads 4 and 5: which side was slower\n")
    out.append("Per 1,000 items of the timed part: how often the producer found the ring "
               "full and waited for the consumer / how often the consumer found it empty "
               "and waited for the producer (medians). The side that waits is the faster "
               "one; the other sets the rate. spanbench's allocators only: Boost and iceoryx "
               "carry their items their own way.\n")
    head = ["workload", "size"] + [column(i) for i in impls]
    out.append("| " + " | ".join(head) + " |")
    out.append("|" + "---|" * len(head))
    f1 = lambda v: "-" if v is None else "%.1f" % v
    for w in ["w4", "w5"]:
        for size in SIZES:
            row = [w, size_name(size)]
            for i in impls:
                full = st.med(i, w, size, "ring_full_per_1k")
                empty = st.med(i, w, size, "ring_empty_per_1k")
                row.append("-" if full is None else "%s / %s" % (f1(full), f1(empty)))
            if all(x == "-" for x in row[2:]):
                continue
            out.append("| " + " | ".join(row) + " |")
    out.append("")


def memory_table(st, out):
    out.append("### 7. Memory: footprint / live bytes after 1,000,000 objects\n")
    out.append("Footprint: growth of the process's RSS (process-local allocators); the "
               "growth of the arena's resident bytes (st_blocks of the shared-memory "
               "object, a fresh daemon's for each measurement, so the metadata the objects "
               "need is counted) plus the process's anonymous RSS (spand); the segment's resident "
               "bytes (Boost). Live bytes: 1,000,000 x the requested size.\n")
    out.append("| allocator | 24 B: footprint / live | 24 B: MB | 8 B: footprint / live | 8 B: MB |")
    out.append("|---|---|---|---|---|")
    for impl in LOCAL + ["spand"] + PEERS:
        a = st.get(impl, "w7", 24, "mem_per_live")
        b = st.get(impl, "w7", 8, "mem_per_live")
        if a is None and b is None:
            continue
        f = lambda v: "%.2f" % v
        mb = lambda v: "%.1f" % (v / 1048576)
        out.append("| %s | %s | %s | %s | %s |" % (
            impl, cell(a, f), cell(st.get(impl, "w7", 24, "mem_bytes"), mb),
            cell(b, f), cell(st.get(impl, "w7", 8, "mem_bytes"), mb)))
    out.append("")


def scavenge_table(st, out):
    out.append("### 8. Scavenging: memory given back after 1 GiB was allocated and freed\n")
    out.append("Fractions are of the footprint the 1 GiB added. *at free*: right after "
               "the last free. *forced*: after spand's Scavenge request (`spanctl release`), "
               "jemalloc's `arena.<all>.purge`, mimalloc's `mi_collect(true)`, tcmalloc's "
               "`ReleaseFreeMemory`, glibc's `malloc_trim(0)`. *within wait*: a second round, "
               "watched without asking for %s; *t90*: when 90 %% was back (- = not within the "
               "wait). *daemon CPU*: spand's CPU time over that wait (the scavenger giving the 1 GiB "
               "back), then over one more second with nothing left to give back (*idle*), in %% of "
               "one core.\n" % "anything")
    out.append("| allocator | size | grown MB | at free | forced | forced ms | within wait | t90 ms | daemon CPU % | idle CPU % |")
    out.append("|---|---|---|---|---|---|---|---|---|---|")
    f2 = lambda v: "%.2f" % v
    f0 = lambda v: "%.0f" % v
    sizes = sorted({k[2] for k in st.vals if k[1] == "w8"})
    for impl in LOCAL + ["spand"] + PEERS:
        for size in sizes:
            if st.get(impl, "w8", size, "grown_mb") is None:
                continue
            t90 = st.get(impl, "w8", size, "t90_ms")
            t90s = "-" if t90 is None or t90[0] < 0 else cell(t90, f0)
            out.append("| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |" % (
                impl, size_name(size), cell(st.get(impl, "w8", size, "grown_mb"), f0),
                cell(st.get(impl, "w8", size, "back_at_free"), f2),
                cell(st.get(impl, "w8", size, "back_forced"), f2),
                cell(st.get(impl, "w8", size, "forced_ms"), f0),
                cell(st.get(impl, "w8", size, "back_within_wait"), f2), t90s,
                cell(st.get(impl, "w8", size, "daemon_cpu_pct"), f2),
                cell(st.get(impl, "w8", size, "daemon_idle_cpu_pct"), f2)))
    out.append("")


def daemon_tables(st, out):
    out.append("### 9. The daemon: round trips (microseconds)\n")
    out.append("Timed one by one on spanbench's own blocking connection. *refill*: Refill "
               "of one span, giving back the previous answer's spans in the same request "
               "(the steady-state shape). *echo*: a bare blocking Unix-socket echo between "
               "two processes with the same frame sizes as refill (request %s B, reply %s B). "
               "*large_e2e*: `spc_malloc(256 KiB)` + first touch + `spc_free` through "
               "libspanclient.\n" % (
                   fmt_num(st.med("spand", "w9", 0, "refill_req_bytes")),
                   fmt_num(st.med("spand", "w9", 0, "refill_reply_bytes"))))
    out.append("| round trip | p50 | p99 |")
    out.append("|---|---|---|")
    f1 = lambda v: "%.1f" % v
    for what in ["refill", "echo", "ping", "alloc_large", "free_large", "large_e2e"]:
        p50 = st.get("spand", "w9", 0, what + "_p50_us")
        if p50 is None:
            continue
        out.append("| %s | %s | %s |" % (what, cell(p50, f1),
                                         cell(st.get("spand", "w9", 0, what + "_p99_us"), f1)))
    out.append("")
    out.append("Refills per 1,000 objects (daemon counter `refills`): *cold* over the first "
               "10,000 objects of a fresh process, *steady* over the timed part after a warm-up.\n")
    out.append("| workload | size | cold | steady |")
    out.append("|---|---|---|---|")
    f3 = lambda v: "%.3f" % v
    for w in ["w1", "w2"]:
        for size in SIZES:
            c = st.get("spand", w, size, "refills_cold_per_1k")
            if c is None:
                continue
            out.append("| %s | %s | %s | %s |" % (w, size_name(size), cell(c, f3),
                                                  cell(st.get("spand", w, size, "refills_per_1k"), f3)))
    out.append("")


def fmt_num(v):
    return "-" if v is None else "%.0f" % v


def targets(st, out):
    out.append("## Targets\n")
    out.append("| target | measured | verdict |")
    out.append("|---|---|---|")

    def verdict(ok):
        if ok is None:
            return "not measured"
        return "met" if ok else "**NOT met**"

    # fast path
    worst, ok = None, None
    for w in ["w1", "w2"]:
        for size in [s for s in SIZES if s <= 32768]:
            sp = st.med("spand", w, size, "ops")
            best = max([st.med(i, w, size, "ops") or 0 for i in LOCAL] + [0])
            if sp is None or best == 0:
                continue
            r = best / sp
            ok = (ok is not False) and r <= 1.2
            if worst is None or r > worst[0]:
                worst = (r, w, size)
    out.append("| fast path (w1, w2, <= 32 KiB) within 1.2x of the best process-local | %s | %s |" % (
        "-" if worst is None else "worst: best local %.2fx spand's rate (%s, %s)" % (worst[0], worst[1], size_name(worst[2])),
        verdict(ok)))

    # cross-process vs Boost
    worst, ok = None, None
    for w in ["w5", "w6"]:
        for size in SIZES:
            sp, b = st.med("spand", w, size, "ops"), st.med("boost", w, size, "ops")
            if sp is None or not b:
                continue
            r = sp / b
            ok = (ok is not False) and r >= 50
            if worst is None or r < worst[0]:
                worst = (r, w, size)
    out.append("| cross-process (w5, w6) >= 50x Boost.Interprocess objects/s | %s | %s |" % (
        "-" if worst is None else "worst: spand %.2gx Boost (%s, %s)" % (worst[0], worst[1], size_name(worst[2])),
        verdict(ok)))

    # two processes vs one
    worst, ok = None, None
    for size in SIZES:
        two, one = st.med("spand", "w6", size, "ops"), st.med("spand", "w1", size, "ops")
        if two is None or not one:
            continue
        r = two / one
        ok = (ok is not False) and r >= 1.8
        if worst is None or r < worst[0]:
            worst = (r, size)
    floor = ""
    if worst is not None:
        two, one = st.med("stub", "w6", worst[1], "ops"), st.med("stub", "w1", worst[1], "ops")
        if two and one:
            floor = "; no allocator there: %.2fx" % (two / one)
    out.append("| two processes (w6) >= 1.8x one (w1) | %s | %s |" % (
        "-" if worst is None else "worst: %.2fx (%s%s)" % (worst[0], size_name(worst[1]), floor),
        verdict(ok)))

    # refills
    steady, cold = [], []
    for w in ["w1", "w2"]:
        for size in [s for s in SIZES if s <= 32768]:
            v = st.med("spand", w, size, "refills_per_1k")
            if v is not None:
                steady.append((v, w, size))
            v = st.med("spand", w, size, "refills_cold_per_1k")
            if v is not None:
                cold.append((v, w, size))
    if steady:
        m = max(steady)
        out.append("| refills: none in steady state | max %.3f per 1,000 objects (%s, %s) | %s |" % (
            m[0], m[1], size_name(m[2]), verdict(m[0] == 0)))
    else:
        out.append("| refills: none in steady state | - | not measured |")
    if cold:
        m = max(cold)
        out.append("| refills: <= 1 per 10,000 objects cold | max %.2f per 10,000 (%s, %s) | %s |" % (
            m[0] * 10, m[1], size_name(m[2]), verdict(m[0] * 10 <= 1)))
    else:
        out.append("| refills: <= 1 per 10,000 objects cold | - | not measured |")

    rf, ec = st.med("spand", "w9", 0, "refill_p50_us"), st.med("spand", "w9", 0, "echo_p50_us")
    if rf and ec:
        out.append("| refill round trip <= 1.5x bare echo (p50) | %.1f us / %.1f us = %.2fx | %s |" % (
            rf, ec, rf / ec, verdict(rf / ec <= 1.5)))
    else:
        out.append("| refill round trip <= 1.5x bare echo (p50) | - | not measured |")

    le = st.med("spand", "w9", 0, "large_e2e_p50_us")
    out.append("| large alloc+free < 30 us median | %s | %s |" % (
        "-" if le is None else "%.1f us" % le, verdict(None if le is None else le < 30)))

    for size, lim in [(24, 1.05), (8, 1.10)]:
        v = st.med("spand", "w7", size, "mem_per_live")
        out.append("| memory: footprint <= %.2fx live for %d B | %s | %s |" % (
            lim, size, "-" if v is None else "%.3fx" % v, verdict(None if v is None else v <= lim)))

    backs = [(st.med("spand", "w8", s, "back_within_wait"), s) for s in
             sorted({k[2] for k in st.vals if k[0] == "spand" and k[1] == "w8"})]
    backs = [b for b in backs if b[0] is not None]
    if backs:
        m = min(backs)
        out.append("| scavenging: >= 90 %% of freed memory back within the wait, unasked | worst %.0f %% (%s) | %s |" % (
            m[0] * 100, size_name(m[1]), verdict(m[0] >= 0.9)))
    else:
        out.append("| scavenging: >= 90 % of freed memory back within the wait, unasked | - | not measured |")
    w8sizes = sorted({k[2] for k in st.vals if k[0] == "spand" and k[1] == "w8"})
    idle = [c for c in (st.med("spand", "w8", s, "daemon_idle_cpu_pct") for s in w8sizes) if c is not None]
    busy = [c for c in (st.med("spand", "w8", s, "daemon_cpu_pct") for s in w8sizes) if c is not None]
    if idle:
        out.append("| scavenger < 1 %% of one core, periodic cost with nothing to release | max %.2f %% | %s |" % (
            max(idle), verdict(max(idle) < 1)))
    else:
        out.append("| scavenger < 1 % of one core, periodic cost with nothing to release | - | not measured |")
    if busy:
        out.append("| scavenger < 1 %% of one core, over the wait while it returns 1 GiB | max %.2f %% | %s |" % (
            max(busy), verdict(max(busy) < 1)))
    out.append("")


def main():
    if len(sys.argv) not in (3, 4):
        sys.exit("usage: report.py RAW.tsv META.txt [TRIED.md]")
    vals, skips = load(sys.argv[1])
    meta = load_meta(sys.argv[2])
    st = Stats(vals)
    m1 = lambda k, d="-": meta.get(k, [d])[0]
    out = ["# spand benchmark results", ""]
    out.append("Written by `make bench` (bench/run-bench.sh, bench/report.py); do not edit by hand. "
               "How to read and rerun it: bench/README.md.\n")
    out.append("- date: %s" % m1("date"))
    out.append("- command: `%s`" % m1("command"))
    out.append("- machine: %s, %s cores, kernel %s" % (m1("cpu"), m1("cores"), m1("kernel")))
    out.append("- load while running: %s" % m1("load"))
    if "c2c" in meta:
        out.append("- core-to-core round trip of one cache line (bench/c2c: two threads pinned to "
                   "the first two CPUs), measured before each allocator's run of a cross-core workload "
                   "at its first size, in the order run (workloads 4, 5, 6 of round 1, then of round 2, ...): %s. On a virtual "
                   "machine it moves with where the host runs the virtual CPUs, and the cross-core "
                   "workloads (4, 5, 6) move with it" % m1("c2c"))
    out.append("- repetitions per measurement: %s; each cell is the median [min-max]; %s s timed per throughput measurement" % (
        m1("reps"), m1("secs")))
    out.append("- spand: %s" % m1("spand"))
    for v in meta.get("version", []):
        out.append("- version: %s" % v)
    for v in meta.get("missing", []):
        out.append("- missing: %s" % v)
    out.append("")
    for v in meta.get("note", []):
        out.append("> %s" % v)
    out.append("")
    out.append("Rates are per second (k = thousand, M = million). A ratio column "
               "reads left / right and names who is faster by how much.\n")
    targets(st, out)
    out.append("## Results\n")
    throughput_tables(st, out)
    ring_waits_table(st, out)
    memory_table(st, out)
    scavenge_table(st, out)
    daemon_tables(st, out)
    if skips:
        out.append("## Not measured\n")
        seen = set()
        for impl, w, size, why in skips:
            key = (impl, w, why)
            if key in seen:
                continue
            seen.add(key)
            out.append("- %s %s%s: %s" % (impl, w, "" if size == 0 else " " + size_name(size), why))
        out.append("")
    if len(sys.argv) == 4:
        out.append("## What was tried, and what each change bought\n")
        with open(sys.argv[3]) as f:
            out.append(f.read().rstrip("\n"))
        out.append("")
    print("\n".join(out))


if __name__ == "__main__":
    main()

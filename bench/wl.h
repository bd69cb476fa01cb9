/* spanbench workloads, written once and compiled once per allocator so
 * that every allocator gets direct calls and the same loops (no function
 * pointer on the measured path).  The includer defines:
 *
 *   WL(name)          prefixes a name with the allocator's suffix
 *   WL_EXPORT         the bench_alloc_t this file defines; WL_LABEL its name
 *   WL_ALLOC(n)       allocate n bytes
 *   WL_FREE(p)        free p
 *   WL_SETUP()        in a measurement process, before the first WL_ALLOC:
 *                     0 or -1 (a message printed)
 *   WL_TEARDOWN()
 *   WL_FOOTPRINT()    bytes of memory the allocator costs the system now
 *   WL_REFILLS()      daemon Refill count, or -1 when there is none
 *   WL_TRIM()         give free memory back now: 0, or -1 if not offered
 *   WL_DAEMON_PID()   pid whose CPU time counts as the scavenger's, or 0
 *   WL_CROSS_PROCESS  defined when any process may free any object; then
 *   WL_TO_WIRE(p) / WL_FROM_WIRE(v) turn a pointer into an integer and back
 *   WL_STUB           defined for the stub (bench/stub.c), whose allocations
 *                     all get one buffer: the throughput workloads but 3
 *                     (its two threads would write that buffer's line from
 *                     two cores), and not 7 and 8; WL_FOOTPRINT, WL_TRIM and
 *                     WL_DAEMON_PID are then unused
 *
 * See bench/bench.h for the output format and the workload numbers.
 */
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "bench/bench.h"

#define WL_CHUNK 1024   /* operations between two looks at the clock */

static inline void WL(touch)(void *p, size_t size)
{
    (void)size;
    *(volatile char *)p = 1;
    bench_escape(p);
}

static void *WL(xalloc)(size_t size)
{
    void *p = WL_ALLOC(size);
    if (p == NULL)
        bench_die("%s: allocation of %zu bytes failed", bench_opts.impl, size);
    return p;
}

/* Private scratch memory that no allocator under test provides. */
static void *WL(scratch)(size_t len)
{
    void *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
        bench_die("mmap %zu bytes failed", len);
    memset(p, 0, len);   /* resident before any footprint reading */
    return p;
}

static size_t WL(batch_count)(size_t size)
{
    size_t n = BENCH_BATCH;
    if (n * size > BENCH_BATCH_BYTES)
        n = BENCH_BATCH_BYTES / size;
    return n;
}

/* ---- workload 1: immediate alloc+free ---- */

/* Run alloc+free pairs for `secs` (or exactly `count` pairs when count is
 * not 0); returns the pairs done and the nanoseconds taken. */
static uint64_t WL(immediate)(size_t size, double secs, uint64_t count, uint64_t *ns)
{
    uint64_t ops = 0, t0 = bench_now_ns(), end = t0 + (uint64_t)(secs * 1e9), t;
    do {
        for (int i = 0; i < WL_CHUNK; i++) {
            void *p = WL(xalloc)(size);
            WL(touch)(p, size);
            WL_FREE(p);
        }
        ops += WL_CHUNK;
        t = bench_now_ns();
    } while (count ? ops < count : t < end);
    *ns = t - t0;
    return ops;
}

/* Refill counts: cold = over the first BENCH_BATCH objects of a fresh
 * process, steady = over the timed part after a warm-up. */
static void WL(report_refills)(int w, size_t size, int64_t r0, int64_t r1,
                               int64_t r2, int64_t r3, uint64_t cold_objs,
                               uint64_t steady_objs)
{
    if (r0 < 0 || size > 32768)
        return;
    bench_result(w, size, "refills_cold_per_1k", (double)(r1 - r0) * 1000.0 / (double)cold_objs);
    bench_result(w, size, "refills_per_1k", (double)(r3 - r2) * 1000.0 / (double)steady_objs);
}

static void WL(w1)(size_t size)
{
    if (WL_SETUP() != 0)
        return;
    uint64_t ns;
    int64_t r0 = WL_REFILLS();
    WL(immediate)(size, 0, BENCH_BATCH, &ns);
    int64_t r1 = WL_REFILLS();
    WL(immediate)(size, bench_opts.secs / 5, 0, &ns);     /* warm-up */
    int64_t r2 = WL_REFILLS();
    uint64_t ops = WL(immediate)(size, bench_opts.secs, 0, &ns);
    int64_t r3 = WL_REFILLS();
    bench_result(W_IMMEDIATE, size, "ops", (double)ops * 1e9 / (double)ns);
    WL(report_refills)(W_IMMEDIATE, size, r0, r1, r2, r3, BENCH_BATCH, ops);
    WL_TEARDOWN();
}

/* ---- workload 2: a batch of allocations, then free them all ---- */

static uint64_t WL(batch)(size_t size, void **v, size_t n, double secs, int rounds,
                          uint64_t *ns)
{
    uint64_t ops = 0, t0 = bench_now_ns(), end = t0 + (uint64_t)(secs * 1e9), t;
    int r = 0;
    do {
        for (size_t i = 0; i < n; i++) {
            v[i] = WL(xalloc)(size);
            WL(touch)(v[i], size);
        }
        for (size_t i = 0; i < n; i++)
            WL_FREE(v[i]);
        ops += n;
        t = bench_now_ns();
    } while (rounds ? ++r < rounds : t < end);
    *ns = t - t0;
    return ops;
}

static void WL(w2)(size_t size)
{
    size_t n = WL(batch_count)(size);
    void **v = WL(scratch)(n * sizeof *v);
    if (WL_SETUP() != 0)
        return;
    uint64_t ns;
    int64_t r0 = WL_REFILLS();
    uint64_t cold = WL(batch)(size, v, n, 0, 1, &ns);
    int64_t r1 = WL_REFILLS();
    WL(batch)(size, v, n, bench_opts.secs / 5, 0, &ns);   /* warm-up */
    int64_t r2 = WL_REFILLS();
    uint64_t ops = WL(batch)(size, v, n, bench_opts.secs, 0, &ns);
    int64_t r3 = WL_REFILLS();
    bench_result(W_BATCH, size, "ops", (double)ops * 1e9 / (double)ns);
    WL(report_refills)(W_BATCH, size, r0, r1, r2, r3, cold, ops);
    WL_TEARDOWN();
    munmap(v, n * sizeof *v);
}

/* Say this side is ready, then wait for the start (workloads 3 to 6). */
static void WL(gate_wait)(bench_gate_t *g)
{
    atomic_fetch_add(&g->ready, 1);
    while (!atomic_load(&g->go))
        sched_yield();
}

#ifndef WL_STUB
/* ---- workload 3: two threads, each its own immediate loop ---- */

typedef struct {
    size_t size;
    bench_gate_t *gate;
    uint64_t ops, ns;
} WL(thr_t);

static void *WL(w3_thread)(void *arg)
{
    WL(thr_t) *t = arg;
    uint64_t ns;
    WL(immediate)(t->size, bench_opts.secs / 5, 0, &ns);  /* warm-up, own cache */
    WL(gate_wait)(t->gate);
    t->ops = WL(immediate)(t->size, bench_opts.secs, 0, &t->ns);
    return NULL;
}

static void WL(w3)(size_t size)
{
    if (WL_SETUP() != 0)
        return;
    bench_gate_t gate = {0};
    WL(thr_t) t[2] = {{size, &gate, 0, 0}, {size, &gate, 0, 0}};
    pthread_t th[2];
    for (int i = 0; i < 2; i++)
        if (pthread_create(&th[i], NULL, WL(w3_thread), &t[i]) != 0)
            bench_die("pthread_create failed");
    while (atomic_load(&gate.ready) < 2)
        sched_yield();
    atomic_store(&gate.go, 1);
    for (int i = 0; i < 2; i++)
        pthread_join(th[i], NULL);
    uint64_t ns = t[0].ns > t[1].ns ? t[0].ns : t[1].ns;
    bench_result(W_THREADS, size, "ops", (double)(t[0].ops + t[1].ops) * 1e9 / (double)ns);
    WL_TEARDOWN();
}
#endif /* WL_STUB */

/* ---- workloads 4 and 5: one side allocates, the other frees ---- */

/* Both sides run the exchange twice: a warm-up through ring `warm` for a
 * fifth of the time, untimed, as every other workload warms up (the
 * producer's first refills, and at large sizes its first large spans, one
 * round trip each until frees come back, are not the steady state), then
 * the timed part through `ring`, begun when both are at `met`. */
typedef struct {
    bench_ring_t warm, ring;
    bench_gate_t met;
} WL(pair_t);

static void WL(produce)(size_t size, bench_ring_t *ring, double secs, uint64_t (*wire)(void *))
{
    uint64_t end = bench_now_ns() + (uint64_t)(secs * 1e9);
    do {
        for (int i = 0; i < WL_CHUNK; i++) {
            void *p = WL(xalloc)(size);
            WL(touch)(p, size);
            bench_ring_put(ring, wire(p));
        }
    } while (bench_now_ns() < end);
    bench_ring_close(ring);
}

static void WL(producer)(size_t size, WL(pair_t) *x, uint64_t (*wire)(void *))
{
    WL(produce)(size, &x->warm, bench_opts.secs / 5, wire);
    bench_meet(&x->met, 2);
    WL(produce)(size, &x->ring, bench_opts.secs, wire);
}

/* The objects freed in the timed part, and its nanoseconds. */
static uint64_t WL(consumer)(WL(pair_t) *x, void *(*unwire)(uint64_t), uint64_t *ns)
{
    uint64_t v, n = 0;
    while (bench_ring_get(&x->warm, &v))
        WL_FREE(unwire(v));
    bench_meet(&x->met, 2);
    uint64_t t0 = bench_now_ns();
    while (bench_ring_get(&x->ring, &v)) {
        WL_FREE(unwire(v));
        n++;
    }
    *ns = bench_now_ns() - t0;
    return n;
}

/* Which side waited in the timed part: how often, per 1,000 items, the
 * producer found the ring full and the consumer found it empty. */
static void WL(report_waits)(int w, size_t size, const bench_ring_t *r, uint64_t items)
{
    if (items == 0)
        return;
    bench_result(w, size, "ring_full_per_1k", (double)r->full_waits * 1000.0 / (double)items);
    bench_result(w, size, "ring_empty_per_1k", (double)r->empty_waits * 1000.0 / (double)items);
}

static uint64_t WL(ptr_wire)(void *p)
{
    return (uint64_t)(uintptr_t)p;
}

static void *WL(ptr_unwire)(uint64_t v)
{
    return (void *)(uintptr_t)v;
}

typedef struct {
    WL(pair_t) *x;
    bench_gate_t *gate;
    uint64_t ops, ns;
} WL(pc_t);

static void *WL(w4_consumer)(void *arg)
{
    WL(pc_t) *c = arg;
    WL(gate_wait)(c->gate);
    c->ops = WL(consumer)(c->x, WL(ptr_unwire), &c->ns);
    return NULL;
}

static void WL(w4)(size_t size)
{
    WL(pair_t) *x = WL(scratch)(sizeof *x);
    if (WL_SETUP() != 0)
        return;
    bench_gate_t gate = {0};
    WL(pc_t) c = {x, &gate, 0, 0};
    pthread_t th;
    if (pthread_create(&th, NULL, WL(w4_consumer), &c) != 0)
        bench_die("pthread_create failed");
    while (atomic_load(&gate.ready) < 1)   /* the consumer is there */
        sched_yield();
    atomic_store(&gate.go, 1);
    WL(producer)(size, x, WL(ptr_wire));
    pthread_join(th, NULL);
    bench_result(W_XTHREAD, size, "ops", (double)c.ops * 1e9 / (double)c.ns);
    WL(report_waits)(W_XTHREAD, size, &x->ring, c.ops);
    WL_TEARDOWN();
    munmap(x, sizeof *x);
}

/* ---- workloads 5 and 6: two processes ---- */

typedef struct {
    bench_gate_t gate;
    WL(pair_t) x;             /* workload 5 */
    size_t size;
    int role;                 /* worker index */
    _Atomic uint64_t ops[2], ns[2];
    _Atomic int failed;
} WL(shared_t);

static WL(shared_t) *WL(sh);

/* Workload 6 worker: attach, warm up, wait for the start, loop. */
static int WL(w6_worker)(void *arg)
{
    int id = (int)(intptr_t)arg;
    WL(shared_t) *s = WL(sh);
    if (WL_SETUP() != 0) {
        atomic_store(&s->failed, 1);
        atomic_fetch_add(&s->gate.ready, 1);
        return 1;
    }
    uint64_t ns;
    WL(immediate)(s->size, bench_opts.secs / 5, 0, &ns);
    WL(gate_wait)(&s->gate);
    uint64_t ops = WL(immediate)(s->size, bench_opts.secs, 0, &ns);
    atomic_store(&s->ops[id], ops);
    atomic_store(&s->ns[id], ns);
    WL_TEARDOWN();
    return 0;
}

/* Fork `n` workers running fn, open the gate when all are ready, wait. */
static bool WL(run_workers)(int n, int (*fn)(void *))
{
    int pid[2];
    for (int i = 0; i < n; i++)
        pid[i] = bench_spawn(fn, (void *)(intptr_t)i);
    uint64_t deadline = bench_now_ns() + (uint64_t)(bench_opts.timeout * 1e9);
    while (atomic_load(&WL(sh)->gate.ready) < n && bench_now_ns() < deadline)
        usleep(1000);
    atomic_store(&WL(sh)->gate.go, 1);
    bool ok = true;
    for (int i = 0; i < n; i++)
        if (bench_wait(pid[i], bench_opts.timeout) != 0)
            ok = false;
    return ok && !atomic_load(&WL(sh)->failed);
}

static void WL(w6)(size_t size)
{
    WL(sh) = bench_shared_map(sizeof *WL(sh));
    WL(sh)->size = size;
    if (WL(run_workers)(2, WL(w6_worker))) {
        uint64_t ns = WL(sh)->ns[0] > WL(sh)->ns[1] ? WL(sh)->ns[0] : WL(sh)->ns[1];
        bench_result(W_PROCS, size, "ops",
                     (double)(WL(sh)->ops[0] + WL(sh)->ops[1]) * 1e9 / (double)ns);
    } else {
        bench_skip(W_PROCS, size, "a worker process failed");
    }
    bench_shared_unmap(WL(sh), sizeof *WL(sh));
}

#ifdef WL_CROSS_PROCESS
static uint64_t WL(wire)(void *p)
{
    return WL_TO_WIRE(p);
}

static void *WL(unwire)(uint64_t v)
{
    return WL_FROM_WIRE(v);
}

/* Workload 5: worker 0 allocates and passes offsets, worker 1 frees. */
static int WL(w5_worker)(void *arg)
{
    int id = (int)(intptr_t)arg;
    WL(shared_t) *s = WL(sh);
    if (WL_SETUP() != 0) {
        atomic_store(&s->failed, 1);
        atomic_store(&s->x.warm.stop, 1);   /* the other side must not wait */
        atomic_store(&s->x.ring.stop, 1);
        atomic_fetch_add(&s->x.met.ready, 1);
        atomic_fetch_add(&s->gate.ready, 1);
        return 1;
    }
    WL(gate_wait)(&s->gate);
    if (id == 0) {
        WL(producer)(s->size, &s->x, WL(wire));
    } else {
        uint64_t ns, n = WL(consumer)(&s->x, WL(unwire), &ns);
        atomic_store(&s->ops[1], n);
        atomic_store(&s->ns[1], ns);
    }
    WL_TEARDOWN();
    return 0;
}

static void WL(w5)(size_t size)
{
    WL(sh) = bench_shared_map(sizeof *WL(sh));
    WL(sh)->size = size;
    if (WL(run_workers)(2, WL(w5_worker))) {
        bench_result(W_XPROC, size, "ops", (double)WL(sh)->ops[1] * 1e9 / (double)WL(sh)->ns[1]);
        WL(report_waits)(W_XPROC, size, &WL(sh)->x.ring, WL(sh)->ops[1]);
    } else
        bench_skip(W_XPROC, size, "a worker process failed");
    bench_shared_unmap(WL(sh), sizeof *WL(sh));
}
#endif

#ifndef WL_STUB
/* ---- workload 7: memory for 1e6 small objects ---- */

static void WL(w7)(size_t size)
{
    size_t n = BENCH_MEM_OBJECTS;
    void **v = WL(scratch)(n * sizeof *v);
    if (WL_SETUP() != 0)
        return;
    /* from before the first object: whatever the allocator sets up or
     * reserves for them is their cost.  Free memory left backed by an
     * earlier measurement (a daemon's arena outlives the process) is
     * given back first, so it does not hide the growth. */
    WL_TRIM();
    uint64_t f0 = WL_FOOTPRINT();
    for (size_t i = 0; i < n; i++) {
        v[i] = WL(xalloc)(size);
        memset(v[i], (int)i, size);
    }
    uint64_t f1 = WL_FOOTPRINT();
    double live = (double)n * (double)size;
    bench_result(W_MEMORY, size, "mem_bytes", (double)(f1 - f0));
    bench_result(W_MEMORY, size, "mem_per_live", (double)(f1 - f0) / live);
    for (size_t i = 0; i < n; i++)
        WL_FREE(v[i]);
    WL_TEARDOWN();
    munmap(v, n * sizeof *v);
}

/* ---- workload 8: memory given back after 1 GiB was freed ---- */

/* Allocate BENCH_SCAV_BYTES in objects of `size`, every 4 KiB page of each
 * touched, chained through their first word (no side array). */
static void *WL(fill)(size_t size)
{
    void *head = NULL;
    for (uint64_t got = 0; got < BENCH_SCAV_BYTES; got += size) {
        char *p = WL(xalloc)(size);
        for (size_t o = 4096; o < size; o += 4096)
            p[o] = 1;
        *(void **)p = head;
        head = p;
    }
    return head;
}

static void WL(drain)(void *head)
{
    while (head) {
        void *next = *(void **)head;
        WL_FREE(head);
        head = next;
    }
}

static double WL(frac)(uint64_t peak, uint64_t now, uint64_t grown)
{
    return grown ? (double)(int64_t)(peak - now) / (double)grown : 0;
}

/* Schedstat gives the daemon's CPU time in ns; /proc/PID/stat in ticks. */
static uint64_t WL(cpu_ns)(int pid)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/schedstat", pid);
    FILE *f = fopen(path, "r");
    unsigned long long ns = 0;
    if (f) {
        if (fscanf(f, "%llu", &ns) != 1)
            ns = 0;
        fclose(f);
    }
    return ns ? ns : bench_proc_cpu_ns(pid);
}

static void WL(w8)(size_t size)
{
    if (WL_SETUP() != 0)
        return;
    /* forced: free, then ask for the memory back at once */
    uint64_t f0 = WL_FOOTPRINT();
    void *list = WL(fill)(size);
    uint64_t f1 = WL_FOOTPRINT(), grown = f1 > f0 ? f1 - f0 : 0;
    WL(drain)(list);
    uint64_t f2 = WL_FOOTPRINT();
    bench_result(W_SCAVENGE, size, "grown_mb", (double)grown / 1048576.0);
    bench_result(W_SCAVENGE, size, "back_at_free", WL(frac)(f1, f2, grown));
    uint64_t t0 = bench_now_ns();
    if (WL_TRIM() == 0) {
        uint64_t t1 = bench_now_ns();
        bench_result(W_SCAVENGE, size, "forced_ms", (double)(t1 - t0) / 1e6);
        bench_result(W_SCAVENGE, size, "back_forced", WL(frac)(f1, WL_FOOTPRINT(), grown));
    }

    /* periodic: free, then watch the footprint for scav_wait seconds */
    f0 = WL_FOOTPRINT();
    list = WL(fill)(size);
    f1 = WL_FOOTPRINT();
    grown = f1 > f0 ? f1 - f0 : 0;
    WL(drain)(list);
    int dpid = WL_DAEMON_PID();
    uint64_t c0 = dpid ? WL(cpu_ns)(dpid) : 0;
    t0 = bench_now_ns();
    uint64_t end = t0 + (uint64_t)(bench_opts.scav_wait * 1e9), t, t90 = 0;
    double frac;
    do {
        usleep(10000);
        t = bench_now_ns();
        frac = WL(frac)(f1, WL_FOOTPRINT(), grown);
        if (frac >= 0.9 && !t90) {
            t90 = t - t0;
            if (!dpid)
                break;  /* nothing more to learn without a daemon to watch */
        }
    } while (t < end);
    bench_result(W_SCAVENGE, size, "back_within_wait", frac);
    bench_result(W_SCAVENGE, size, "t90_ms", t90 ? (double)t90 / 1e6 : -1);
    if (dpid) {
        /* over the wait: the periodic scavenger giving the 1 GiB back */
        bench_result(W_SCAVENGE, size, "daemon_cpu_pct",
                     (double)(WL(cpu_ns)(dpid) - c0) * 100.0 / (double)(t - t0));
        /* then one more second with nothing to give back (a forced
         * release first takes whatever is left): its steady cost */
        WL_TRIM();
        c0 = WL(cpu_ns)(dpid);
        t0 = bench_now_ns();
        usleep(1000000);
        bench_result(W_SCAVENGE, size, "daemon_idle_cpu_pct",
                     (double)(WL(cpu_ns)(dpid) - c0) * 100.0 / (double)(bench_now_ns() - t0));
    }
    WL_TEARDOWN();
}

#endif /* WL_STUB */

const bench_alloc_t WL_EXPORT = {
    .name = WL_LABEL,
    .run = {
        [W_IMMEDIATE] = WL(w1),
        [W_BATCH] = WL(w2),
        [W_XTHREAD] = WL(w4),
#ifdef WL_CROSS_PROCESS
        [W_XPROC] = WL(w5),
#endif
        [W_PROCS] = WL(w6),
#ifndef WL_STUB
        [W_THREADS] = WL(w3),
        [W_MEMORY] = WL(w7),
        [W_SCAVENGE] = WL(w8),
#ifdef WL_DAEMON_WORKLOAD
        [W_DAEMON] = WL_DAEMON_WORKLOAD,
#endif
#endif /* WL_STUB */
    },
};

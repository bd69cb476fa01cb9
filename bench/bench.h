/* spanbench: the benchmark harness (not part of make check).
 *
 * One program measures one allocator per run: the process-local malloc that
 * the dynamic linker gives it (glibc, or jemalloc/mimalloc/tcmalloc under
 * LD_PRELOAD; the driver bench/run-bench.sh decides), or spand through
 * libspanclient (--alloc=spand), with a private daemon it starts and stops
 * itself.  Every measurement runs in a forked child so that no allocator
 * state leaks from one measurement into the next and every child attaches
 * to spand afresh.  Results are lines on stdout,
 *
 *     R <impl> <workload> <size> <metric> <value>
 *
 * tab separated, one per repetition; bench/report.py turns them into
 * medians and bench/RESULTS.md.  Lines starting with '#' are comments, and
 * "S <impl> <workload> <size> <reason>" says a measurement was skipped.
 */
#ifndef BENCH_H
#define BENCH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#define BENCH_MAX_SIZES 16
#define BENCH_BATCH 10000                 /* workload 2: objects per batch */
#define BENCH_BATCH_BYTES (256u << 20)    /* ... capped to this many bytes */
#define BENCH_RING 1024                   /* workloads 4, 5: ring slots */
#define BENCH_MEM_OBJECTS 1000000         /* workload 7 */
#define BENCH_SCAV_BYTES (1ULL << 30)     /* workload 8 */

/* Workloads, numbered as in the brief (issue 5). */
enum {
    W_IMMEDIATE = 1, /* alloc+free at once, one thread */
    W_BATCH,         /* BENCH_BATCH allocs, then free all */
    W_THREADS,       /* two threads, each its own W_IMMEDIATE loop */
    W_XTHREAD,       /* producer thread allocates, consumer thread frees */
    W_XPROC,         /* producer process allocates, consumer process frees */
    W_PROCS,         /* two processes, each its own W_IMMEDIATE loop */
    W_MEMORY,        /* footprint of 1e6 small objects */
    W_SCAVENGE,      /* memory given back after 1 GiB was freed */
    W_DAEMON,        /* RPC round trips against a bare echo */
    W_COUNT
};

typedef struct bench_opts_s {
    const char *impl;        /* label printed in every result line */
    bool spand;              /* allocate with spc_malloc */
    double secs;             /* timed part of one throughput measurement */
    int reps;                /* repetitions of every measurement */
    unsigned workloads;      /* bit w set: run workload w */
    size_t sizes[BENCH_MAX_SIZES];
    int nsizes;
    size_t scav_sizes[BENCH_MAX_SIZES];  /* workload 8 */
    int nscav_sizes;
    double scav_wait;        /* workload 8: seconds to wait for the scavenger */
    int rtt_count;           /* workload 9: round trips per repetition */
    double timeout;          /* seconds before a measurement child is killed */
    /* spand only */
    const char *spand_bin;
    char sock[108];
    char shm_name[64];
    const char *arena_size;
    int scavenge_interval;
    bool verbose;
} bench_opts_t;

extern bench_opts_t bench_opts;

/* ---- time ---- */

static inline uint64_t bench_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* Keep the compiler from removing an allocation it can see is unused. */
static inline void bench_escape(void *p)
{
    __asm__ volatile("" : : "r"(p) : "memory");
}

/* ---- output ---- */

void bench_result(int w, size_t size, const char *metric, double value);
void bench_skip(int w, size_t size, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void bench_note(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void bench_die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));

/* ---- processes ---- */

/* Run fn(arg) in a forked child, bounded by bench_opts.timeout seconds
 * (then SIGKILL).  Returns the child's exit status, or -1 if it was
 * killed or crashed.  The child's pid is registered for the cleanup. */
int bench_in_child(int (*fn)(void *), void *arg);

/* Fork a helper child that runs fn(arg) and exits; registered for the
 * cleanup, killed with its parent (PR_SET_PDEATHSIG).  Returns the pid. */
int bench_spawn(int (*fn)(void *), void *arg);

/* Wait for a child from bench_spawn for at most `secs`; SIGKILL after.
 * Returns its exit status, or -1. */
int bench_wait(int pid, double secs);

void bench_register_pid(int pid);
void bench_unregister_pid(int pid);

/* Install SIGINT/SIGTERM/SIGHUP handlers that kill every registered
 * child, run `cleanup` (async-signal-safe) and exit. */
void bench_install_signals(void (*cleanup)(void));

/* ---- shared memory between forked processes ---- */

/* MAP_SHARED|MAP_ANONYMOUS memory, inherited by children forked later. */
void *bench_shared_map(size_t len);
void bench_shared_unmap(void *p, size_t len);

/* Two-party start line for processes or threads (spins on a shared word). */
typedef struct bench_gate_s {
    _Atomic int ready;
    _Atomic int go;
    _Atomic int done;
} bench_gate_t;

/* Wait until `n` parties (this one counted) have called it on g; uses only
 * g->ready, so a gate serves once. */
void bench_meet(bench_gate_t *g, int n);

/* Single-producer single-consumer ring of 64-bit values, usable between
 * threads or, placed in bench_shared_map memory, between processes.  Each
 * side counts in a private index and publishes it every BENCH_RING_PUBLISH
 * items (one slot line), and before it waits; it looks at the other side's
 * index again only when the ring looks full (producer) or empty (consumer).
 * So the two cores exchange one slot line and at most one index line per
 * eight items, not an index line per item, whatever the ring's fill (the
 * same ring drives every allocator; boostbench.cc has a copy). */
#define BENCH_RING_PUBLISH 8
typedef struct bench_ring_s {
    /* the shared indices, each alone on its line: the other side polls it */
    _Alignas(64) _Atomic uint64_t head;  /* producer: store release */
    _Alignas(64) _Atomic uint64_t tail;  /* consumer: store release */
    _Alignas(64) uint64_t head_priv;     /* producer only: items put */
    uint64_t tail_seen;                  /* producer only: tail at its last look */
    uint64_t full_waits;                 /* producer only: times it found the ring
                                            still full and waited for the consumer */
    _Alignas(64) uint64_t tail_priv;     /* consumer only: items taken */
    uint64_t head_seen;                  /* consumer only: head at its last look */
    uint64_t empty_waits;                /* consumer only: times it found the ring
                                            still empty and waited for the producer */
    _Alignas(64) uint64_t slot[BENCH_RING];
    _Atomic int stop;                    /* producer: no more items */
} bench_ring_t;

void bench_ring_put(bench_ring_t *r, uint64_t v);
void bench_ring_close(bench_ring_t *r);              /* producer: publish, then stop */
bool bench_ring_get(bench_ring_t *r, uint64_t *v);  /* false: stopped and empty */

/* ---- memory ---- */

uint64_t bench_rss_bytes(void);       /* VmRSS of this process */
uint64_t bench_rss_anon_bytes(void);  /* RssAnon of this process */
uint64_t bench_proc_cpu_ns(int pid);  /* utime + stime of a process */

/* ---- percentiles ---- */

double bench_percentile(uint64_t *v, size_t n, double q);  /* sorts v */

/* "16,4K,256" -> sizes (K = 1024); the count, or -1 on a bad item or more
 * than max. */
int bench_parse_list(const char *s, size_t *out, int max);

/* ---- the allocator under test ---- */

/* What each allocator offers the workloads; bench/wl.h fills one of these
 * for malloc and one for spc_malloc. */
typedef struct bench_alloc_s {
    const char *name;
    void (*run[W_COUNT])(size_t size);  /* in a measurement child; NULL: not offered */
} bench_alloc_t;

extern const bench_alloc_t bench_alloc_libc;
extern const bench_alloc_t bench_alloc_spand;
extern const bench_alloc_t bench_alloc_stub;     /* the harness's floor: workloads 1, 2, 4, 5, 6 */

/* the stub allocator itself: bench/stub.c, its own shared library */
void *bench_stub_malloc(size_t n);
void bench_stub_free(void *p);

/* spand-only pieces: bench/daemon.c */
int  bench_daemon_start(void);   /* 0 or -1 with a message */
void bench_daemon_stop(void);
void bench_daemon_cleanup_signal(void);  /* async-signal-safe */
int  bench_daemon_pid(void);
void bench_w9_daemon(size_t size);

#endif /* BENCH_H */

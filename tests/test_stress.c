/* See shm/layout.h for the overview.
 *
 * The stress test: NPROC processes in a ring, each with NPROD producer
 * threads and two consumer threads, run a random mix of everything a client does
 * with objects of every kind of size (tiny, every class, large, aligned,
 * calloc, realloc), and every way an object is freed: by the thread that
 * allocated it, by another thread of its process, by another process; in
 * allocation order (runs) and shuffled; by threads that come and go while
 * their remote frees are pending; by fork children, forked while the
 * parent's other threads run; by processes that detach, exit without
 * detaching, or end while others still free their objects; and by a
 * process that detaches and attaches again over and over, whose spans go
 * back with live objects in them and on to the others.
 *
 * Two checks catch an allocator that hands out an object twice or lets one
 * overlap another, in any process:
 *   - a live map in memory shared by the test's processes (not the arena):
 *     one bit a byte for objects under 16 bytes, one bit an 8-byte granule
 *     for the rest (every class's objects start 8-byte aligned).  The
 *     thread that gets an object sets its bits and finds them clear; the
 *     thread that frees it clears them, finding them set, before it calls
 *     spc_free.
 *   - every object holds a pattern of its own serial number, checked at its
 *     free, so a write through another object's pointer is seen.
 * At the end the daemon holds nothing and its verifier passes.
 *
 * `make check` runs a short mix (STRESS_OPS producer steps a process);
 * SPAND_STRESS_OPS=N runs N, for a soak; SPAND_STRESS_SEED=S another mix.
 */
#include "config.h"

#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "spanclient.h"
#include "tests/client_helper.h"
#include "tests/cutest.h"
#include "tests/daemon_helper.h"

enum {
    NPROC = 3,
    NPROD = 2,                   /* producer threads a process */
    STRESS_OPS = 120000,         /* producer steps a process, by default */
    LOCAL_MAX = 2048,            /* objects a producer keeps to free itself */
    BLOCK = 48,                  /* records a block on a channel */
    MAX_SIZE = 1 << 20,
    CHECK_HEAD = 4096,           /* bytes of a big object filled and checked */
};

#define ARENA_SIZE "2G"
#define COVER ((uint64_t)4 << 30)   /* arena offsets the live map covers */
#define GRANMAP_BYTES (COVER / 8 / 8)

static dh_daemon_t *daemon_;

/* ---- the live map (MAP_SHARED before the fork) ---- */

static _Atomic uint64_t *bytemap;   /* one bit a byte: objects under 16 B */
static _Atomic uint64_t *granmap;   /* one bit an 8-byte granule: the rest */
/* The churner's error count so far, stored after each of its rounds: a
 * churner that is killed never writes its report, and what it found wrong
 * before must still fail the test. */
static _Atomic long *churn_errors;

/* Set (set=true) or clear the bits of [first, last] in map; false when any
 * of them was already in the state asked for. */
static bool mark_bits(_Atomic uint64_t *map, uint64_t first, uint64_t last, bool set)
{
    bool ok = true;
    for (uint64_t w = first >> 6; w <= last >> 6; w++) {
        uint64_t lo = w == first >> 6 ? first & 63 : 0;
        uint64_t hi = w == last >> 6 ? last & 63 : 63;
        uint64_t mask = (hi == 63 ? ~0ull : (1ull << (hi + 1)) - 1) & ~((1ull << lo) - 1);
        if (set) {
            uint64_t old = atomic_fetch_or_explicit(&map[w], mask, memory_order_acq_rel);
            ok &= (old & mask) == 0;
        } else {
            uint64_t old = atomic_fetch_and_explicit(&map[w], ~mask, memory_order_acq_rel);
            ok &= (old & mask) == mask;
        }
    }
    return ok;
}

/* Mark the object at arena offset off, n bytes asked for, live (set) or
 * freed.  False: out of the map's range, or a conflict. */
static bool mark(uint64_t off, size_t n, bool set)
{
    if (n == 0)
        n = 1;
    if (off == 0 || off + n > COVER)
        return false;
    if (n < 16)
        return mark_bits(bytemap, off, off + n - 1, set);
    return mark_bits(granmap, off >> 3, (off + n - 1) >> 3, set);
}

/* ---- object contents ---- */

static inline uint8_t pat(uint64_t serial, size_t j)
{
    uint64_t x = (serial + j / 8) * 0x9e3779b97f4a7c15ull;
    return (uint8_t)((x >> 56) ^ j);
}

/* Call f(j) for the bytes of an n-byte object that carry the pattern: all
 * of a small one; the head, each page's first byte and the tail of a big
 * one (a full pass over 1 MiB objects would be most of the test's time). */
#define FOR_PATTERN_BYTES(n, j, body)                                   \
    do {                                                                \
        size_t n_ = (n);                                                \
        size_t head_ = n_ <= 4 * CHECK_HEAD ? n_ : CHECK_HEAD;          \
        for (size_t j = 0; j < head_; j++)                              \
            body;                                                       \
        if (head_ < n_) {                                               \
            for (size_t j = head_; j < n_ - 64; j += 4096)              \
                body;                                                   \
            for (size_t j = n_ - 64; j < n_; j++)                       \
                body;                                                   \
        }                                                               \
    } while (0)

static void fill(void *p, size_t n, uint64_t serial)
{
    uint8_t *b = p;
    FOR_PATTERN_BYTES(n, j, b[j] = pat(serial, j));
}

static bool check(const void *p, size_t n, uint64_t serial)
{
    const uint8_t *b = p;
    bool ok = true;
    FOR_PATTERN_BYTES(n, j, ok &= b[j] == pat(serial, j));
    return ok;
}

/* ---- one process ---- */

typedef struct rec_s {
    uint64_t off, size, serial;
} rec_t;

typedef struct block_s {
    uint32_t n;                  /* records; 0: the end */
    rec_t r[BLOCK];
} block_t;

/* one write, so that a process's producers' blocks do not interleave */
_Static_assert(sizeof(block_t) <= PIPE_BUF, "a block must be written atomically");

typedef struct counts_s {
    long made, freed_local, freed_thread, freed_proc, freed_fork, reallocs, refused, errors;
    long large;                  /* of made: over 32 KiB */
} counts_t;

/* The run's mode, set by its suite before the fork. */
typedef struct stress_mode_s {
    bool full;                   /* the arena fills: ENOMEM is an answer */
    bool kill;                   /* the churner runs until SIGKILL */
    bool daemon_dies;            /* the daemon is killed mid-run */
    unsigned large_pct;          /* share of large requests, in % */
    unsigned ops_div;            /* steps: SPAND_STRESS_OPS (or the default) / this */
    const char *arena_size;      /* the daemon's -m */
    const char *large_pool;      /* its --large-pool, NULL: the default */
} stress_mode_t;

static stress_mode_t mode_ = { .large_pct = 3, .ops_div = 1, .arena_size = ARENA_SIZE };

/* A NULL with errno e is an answer the run allows (counted as refused):
 * ENOMEM when it fills its arena, ENOTCONN (or ENOMEM: no daemon to grow
 * the heap) once its daemon is dead. */
static bool refusable(int e)
{
    return (mode_.full && e == ENOMEM) || (mode_.daemon_dies && (e == ENOTCONN || e == ENOMEM));
}

/* Added to every generator's seed: $SPAND_STRESS_SEED, 0 by default, so
 * that `make check` runs the same mix each time and a soak can try others
 * (the summary line names it, to run a failing mix again). */
static uint64_t seed_;

static uint64_t next_rand(uint64_t *s)
{
    uint64_t x = *s;            /* xorshift64* */
    x ^= x >> 12, x ^= x << 25, x ^= x >> 27;
    *s = x;
    return x * 0x2545f4914f6cdd1dull;
}

/* Sizes of every kind: 0, tiny, each class's edges, big small ones, large. */
static size_t pick_size(uint64_t *rng)
{
    uint64_t r = next_rand(rng);
    unsigned k = (unsigned)(r % 100);
    r >>= 8;
    if (k < 4)
        return r % 5;                                   /* 0 .. 4 */
    if (k < 70 - mode_.large_pct) {
        size_t base = (size_t)8 << (r % 8);             /* 8 .. 1 KiB */
        return base + (r >> 8) % base;
    }
    if (k < 100 - mode_.large_pct) {
        size_t base = (size_t)1024 << (r % 5);          /* 1 .. 32 KiB */
        return base + (r >> 8) % base;
    }
    size_t n = (size_t)32768 + (r >> 8) % (MAX_SIZE - 32768);   /* large */
    return n;
}

/* A channel: blocks of records through a pipe. */
typedef struct chan_s {
    int wr;
    block_t out;                 /* the writer's pending block */
} chan_t;

static void chan_send(chan_t *c, counts_t *cnt)
{
    if (!ct_write_all(c->wr, &c->out, sizeof c->out))
        cnt->errors++;
    c->out.n = 0;
}

/* Check and free the object of record r (the consumer's side). */
static void free_rec(const rec_t *r, long *errors)
{
    void *p = spc_pointer(r->off);
    if (p == NULL || spc_usable_size(p) < r->size || !check(p, r->size, r->serial)) {
        (*errors)++;
        fprintf(stderr, "stress: object at offset %#llx (%llu bytes) is not as stored\n",
                (unsigned long long)r->off, (unsigned long long)r->size);
    }
    if (!mark(r->off, r->size, false)) {
        (*errors)++;
        fprintf(stderr, "stress: object at offset %#llx was not live\n",
                (unsigned long long)r->off);
    }
    spc_free(p);
}

/* A consumer: a generation of threads reading one channel in turn, each
 * leaving after a random number of blocks (its remote frees pending in
 * its cache are pushed when it exits). */
typedef struct consumer_s {
    int fd;
    int writers;                 /* end blocks to wait for */
    uint64_t rng;
    long freed, errors;
    bool done;
} consumer_t;

static void *consumer_gen(void *arg)
{
    consumer_t *c = arg;
    unsigned blocks = 1 + (unsigned)(next_rand(&c->rng) % 64);
    block_t b;
    while (blocks-- > 0) {
        if (!ct_read_all(c->fd, &b, sizeof b)) {
            c->errors++;
            c->done = true;
            return NULL;
        }
        if (b.n == 0) {
            if (--c->writers == 0) {
                c->done = true;
                return NULL;
            }
            continue;
        }
        for (uint32_t i = 0; i < b.n; i++)
            free_rec(&b.r[i], &c->errors);
        c->freed += b.n;
    }
    return NULL;
}

static void *consumer_run(void *arg)
{
    consumer_t *c = arg;
    while (!c->done) {
        pthread_t th;
        if (pthread_create(&th, NULL, consumer_gen, c) != 0) {
            c->errors++;
            consumer_gen(c);        /* go on in this thread */
            continue;
        }
        pthread_join(th, NULL);
    }
    return NULL;
}

typedef struct local_s {
    rec_t r[LOCAL_MAX];
    void *p[LOCAL_MAX];
    unsigned n;
} local_t;

static void local_free(local_t *l, unsigned i, counts_t *cnt)
{
    free_rec(&l->r[i], &cnt->errors);
    l->r[i] = l->r[--l->n];
    l->p[i] = l->p[l->n];
    cnt->freed_local++;
}

/* fork() while this process's consumer threads run: the child frees the
 * last FORK_FREES objects of the producer's set (the parent's, in spans
 * the parent holds: remote frees), allocates and frees a few of its own in
 * a session of its own, and exits without detaching.  The parent waits
 * and drops those objects from its set. */
enum { FORK_EVERY = 20000, FORK_FREES = 16 };

/* Not in an AddressSanitizer build: its runtime (gcc 12's) appears not to
 * hold its allocator's lock across fork(), so a child forked while another
 * thread of the parent is inside malloc can wait on that lock for ever
 * (seen: 2 children in about 25 runs, each stopped in the sanitizer
 * runtime with a lock address of ASan's allocator region, 0x6400...,
 * on its stack).  The other builds fork. */
#if defined(__SANITIZE_ADDRESS__)
#define STRESS_FORKS 0
#else
#define STRESS_FORKS 1
#endif

static void fork_frees(local_t *l, counts_t *cnt)
{
    unsigned m = l->n < FORK_FREES ? l->n : FORK_FREES;
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0) {
        cnt->errors++;
        return;
    }
    if (pid == 0) {
        long errors = 0;
        for (unsigned i = l->n - m; i < l->n; i++)
            free_rec(&l->r[i], &errors);
        for (size_t n = 1; n <= 4096; n *= 8) {
            void *p = spc_malloc(n);
            if (p == NULL && !refusable(errno)) {
                errors++;
                fprintf(stderr, "stress: fork child: spc_malloc(%zu): %s\n", n, strerror(errno));
            } else if (p != NULL &&
                       (!mark(spc_offset(p), n, true) || !mark(spc_offset(p), n, false))) {
                errors++;
                fprintf(stderr, "stress: fork child: got a live object at offset %#llx\n",
                        (unsigned long long)spc_offset(p));
            }
            spc_free(p);
        }
        exit(errors ? 1 : 0);
    }
    int st = -1;
    if (dh_reap(pid, &st, 60000) != 0 || !WIFEXITED(st) || WEXITSTATUS(st) != 0) {
        cnt->errors++;              /* (dh_reap kills one still running) */
        fprintf(stderr, "stress: fork child %ld ended with status %#x\n", (long)pid, st);
    }
    l->n -= m;
    cnt->freed_fork += m;
}

/* Send c's pending block, its records shuffled or not. */
static void flush(chan_t *c, uint64_t *rng, bool shuffle, counts_t *cnt)
{
    if (c->out.n == 0)
        return;
    if (shuffle)
        for (uint32_t i = c->out.n - 1; i > 0; i--) {
            uint32_t j = (uint32_t)(next_rand(rng) % (i + 1));
            rec_t t = c->out.r[i];
            c->out.r[i] = c->out.r[j];
            c->out.r[j] = t;
        }
    chan_send(c, cnt);
}

static void add(chan_t *c, const rec_t *r, uint64_t *rng, counts_t *cnt)
{
    c->out.r[c->out.n++] = *r;
    if (c->out.n == BLOCK)
        flush(c, rng, next_rand(rng) % 4 == 0, cnt);
}

/* A new object: from malloc, calloc or aligned_alloc.  NULL: with ENOMEM
 * when the run fills its arena on purpose (counted as refused), otherwise
 * an error (2 GiB never fills here). */
static void *get(size_t n, uint64_t *rng, counts_t *cnt)
{
    unsigned how = (unsigned)(next_rand(rng) % 20);
    void *p;
    if (how == 0) {
        p = spc_calloc(1, n);
        if (p != NULL)
            for (size_t j = 0; j < n && j < CHECK_HEAD; j++)
                if (((uint8_t *)p)[j] != 0) {
                    cnt->errors++;
                    fprintf(stderr, "stress: calloc(%zu) byte %zu not zero\n", n, j);
                    break;
                }
    } else if (how == 1) {
        size_t align = (size_t)1 << (next_rand(rng) % 17);     /* 1 B .. 64 KiB */
        p = spc_aligned_alloc(align, n);
        if (p != NULL && ((uintptr_t)p & (align - 1)) != 0) {
            cnt->errors++;
            fprintf(stderr, "stress: aligned_alloc(%zu, %zu) gave %p\n", align, n, p);
        }
    } else {
        p = spc_malloc(n);
    }
    if (p == NULL && refusable(errno)) {
        cnt->refused++;
    } else if (p == NULL) {
        cnt->errors++;
        fprintf(stderr, "stress: no object of %zu bytes: %s\n", n, strerror(errno));
    }
    return p;
}

/* A new object of a random size, marked live and filled with the pattern
 * of the next serial, its record in *r; NULL when refused. */
static void *new_object(uint64_t *rng, uint64_t *serial, counts_t *cnt, rec_t *r)
{
    size_t n = pick_size(rng);
    void *p = get(n, rng, cnt);
    if (p == NULL)
        return NULL;
    *r = (rec_t){ spc_offset(p), n, ++*serial };
    if (!mark(r->off, n, true)) {
        cnt->errors++;
        fprintf(stderr, "stress: pid %ld got a live object at offset %#llx (%zu bytes)\n",
                (long)getpid(), (unsigned long long)r->off, n);
    }
    fill(p, n, r->serial);
    cnt->made++;
    cnt->large += n > 32768;
    return p;
}

/* Realloc local object i to a new size: its head must move with it. */
static void local_realloc(local_t *l, unsigned i, uint64_t *rng, uint64_t serial, counts_t *cnt)
{
    rec_t *r = &l->r[i];
    size_t n = pick_size(rng) | 1;       /* realloc to 0 frees: not here */
    size_t keep = n < r->size ? n : r->size;
    if (keep > CHECK_HEAD)
        keep = CHECK_HEAD;
    if (!check(l->p[i], r->size, r->serial) || !mark(r->off, r->size, false)) {
        cnt->errors++;
        fprintf(stderr, "stress: object at offset %#llx before realloc\n",
                (unsigned long long)r->off);
    }
    void *q = spc_realloc(l->p[i], n);
    if (q == NULL) {
        /* ENOMEM: the object as it was, where it was */
        int e = errno;
        if (!refusable(e) || !check(l->p[i], r->size, r->serial) ||
            !mark(r->off, r->size, true)) {
            cnt->errors++;
            fprintf(stderr, "stress: realloc %llu -> %zu failed (%s) or lost the object\n",
                    (unsigned long long)r->size, n, strerror(e));
        }
        cnt->refused++;
        return;
    }
    for (size_t j = 0; j < keep; j++)
        if (((uint8_t *)q)[j] != pat(r->serial, j)) {
            cnt->errors++;
            fprintf(stderr, "stress: realloc %llu -> %zu lost byte %zu\n",
                    (unsigned long long)r->size, n, j);
            break;
        }
    l->p[i] = q;
    r->off = spc_offset(q);
    r->size = n;
    r->serial = serial;
    if (!mark(r->off, n, true)) {
        cnt->errors++;
        fprintf(stderr, "stress: realloc gave a live object at offset %#llx\n",
                (unsigned long long)r->off);
    }
    fill(q, n, serial);
    cnt->reallocs++;
}

/* A producer thread: allocates, frees, reallocs; sends to its process's
 * own consumer thread (chan `self`) and to the next process (chan `next`).
 * A process's producers share the two pipes (a block is one write, below
 * PIPE_BUF, so blocks do not interleave), each with its own pending block;
 * each ends with an end block on both. */
typedef struct producer_s {
    int k, idx;                  /* process, producer in it */
    long ops;
    chan_t self, next;
    local_t local;
    counts_t cnt;
} producer_t;

static void *producer_run(void *arg)
{
    producer_t *pr = arg;
    uint64_t rng = seed_ + 0x57e55 + 7919u * (uint64_t)(pr->k + 1) + 104729u * (uint64_t)pr->idx;
    local_t *l = &pr->local;
    counts_t *cnt = &pr->cnt;
    chan_t *self = &pr->self, *next = &pr->next;
    uint64_t serial = (uint64_t)pr->k << 56 | (uint64_t)pr->idx << 48;
    for (long op = 0; op < pr->ops; op++) {
        unsigned what = (unsigned)(next_rand(&rng) % 100);
        if (STRESS_FORKS && (op % FORK_EVERY == FORK_EVERY - 1 || op == pr->ops / 2)) {
            fork_frees(l, cnt);
        } else if (what < 68 || l->n == 0) {
            rec_t r;
            void *p = new_object(&rng, &serial, cnt, &r);
            if (p == NULL)
                continue;
            unsigned to = (unsigned)(next_rand(&rng) % 10);
            if (to < 4) {
                if (l->n == LOCAL_MAX)
                    local_free(l, (unsigned)(next_rand(&rng) % l->n), cnt);
                l->r[l->n] = r;
                l->p[l->n++] = p;
            } else if (to < 7) {
                add(self, &r, &rng, cnt);
            } else {
                add(next, &r, &rng, cnt);
            }
        } else if (what < 90) {
            local_free(l, (unsigned)(next_rand(&rng) % l->n), cnt);
        } else if (what < 97) {
            local_realloc(l, (unsigned)(next_rand(&rng) % l->n), &rng, ++serial, cnt);
        } else {
            /* a short block now and then: not every batch a full run */
            flush(next_rand(&rng) & 1 ? self : next, &rng, next_rand(&rng) & 1, cnt);
        }
    }
    while (l->n > 0)
        local_free(l, l->n - 1, cnt);
    flush(self, &rng, false, cnt);
    flush(next, &rng, false, cnt);
    chan_send(self, cnt);             /* n 0: the end */
    chan_send(next, cnt);
    return NULL;
}

/* In a global, so that a fork child (which has only the forking producer's
 * thread) can still reach the other's: LeakSanitizer checks at its exit. */
static producer_t *volatile producers_;     /* volatile: a store kept */

/* Process k: NPROD producer threads and two consumers, one of its own
 * producers' objects (fd self_rd), one of process k-1's (fd prev).
 * Reports its counts on `report`. */
static void stress_child(int k, long ops, int prev, int self_rd, int self_wr, int next_wr,
                         int report)
{
    uint64_t rng = seed_ + 0x57e55 + 7919u * (uint64_t)(k + 1);
    consumer_t from_self = { .fd = self_rd, .rng = rng ^ 1, .writers = NPROD };
    consumer_t from_prev = { .fd = prev, .rng = rng ^ 2, .writers = NPROD };
    pthread_t t1, t2, pt[NPROD];
    if (pthread_create(&t1, NULL, consumer_run, &from_self) != 0 ||
        pthread_create(&t2, NULL, consumer_run, &from_prev) != 0)
        _exit(5);
    producer_t *pr = producers_ = calloc(NPROD, sizeof *pr);
    if (pr == NULL)
        _exit(5);
    for (int j = 0; j < NPROD; j++) {
        pr[j] = (producer_t){ .k = k, .idx = j, .ops = ops / NPROD };
        pr[j].self.wr = self_wr, pr[j].next.wr = next_wr;
        if (j > 0 && pthread_create(&pt[j], NULL, producer_run, &pr[j]) != 0)
            _exit(5);
    }
    producer_run(&pr[0]);                       /* this thread is one */
    for (int j = 1; j < NPROD; j++)
        pthread_join(pt[j], NULL);
    pthread_join(t1, NULL);
    pthread_join(t2, NULL);
    counts_t cnt = { 0 };
    for (int j = 0; j < NPROD; j++) {
        cnt.made += pr[j].cnt.made, cnt.freed_local += pr[j].cnt.freed_local;
        cnt.freed_fork += pr[j].cnt.freed_fork, cnt.reallocs += pr[j].cnt.reallocs;
        cnt.refused += pr[j].cnt.refused, cnt.errors += pr[j].cnt.errors;
        cnt.large += pr[j].cnt.large;
    }
    cnt.freed_thread = from_self.freed;
    cnt.freed_proc = from_prev.freed;
    cnt.errors += from_self.errors + from_prev.errors;
    producers_ = NULL;
    free(pr);
    if (write(report, &cnt, sizeof cnt) != (ssize_t)sizeof cnt)
        _exit(6);
    /* while the next process may still free our objects: detach, or exit
     * without (libspanclient's destructor pushes what waits in this thread) */
    if (k == 0)
        spc_detach();
    exit(0);
}

/* While the processes run, the parent asks for what an operator would:
 * Stats and Verify every 20 ms, and Scavenge (`spanctl release`: central
 * swept, free pages given back) every 200 ms, so that the daemon works on
 * central's spans while frees keep landing in them, and its heap is
 * checked while clients change it (the verifier holds with sessions open,
 * doc/design.md 1.9). */
static struct {
    _Atomic bool stop;
    long calls, failed;
    pid_t victim;                /* killed at the 5th call, in a kill run */
    bool daemon_dead;            /* killed at the 10th, when mode_.daemon_dies */
} ops_;

static void *operator_thread(void *arg)
{
    (void)arg;
    while (!atomic_load(&ops_.stop)) {
        uint64_t objs, bytes;
        uint32_t clients;
        if (ops_.daemon_dead) {
            usleep(20000);
            continue;
        }
        /* Scavenge every 10th time: it empties the large pool, whose pops
         * and pushes the processes should meet too */
        if ((ops_.calls % 10 == 0 && !ct_scavenge(daemon_->sock)) ||
            !ct_stats(daemon_->sock, &objs, &bytes, &clients))
            ops_.failed++;
        char vmsg[256];
        if (!ct_verify(daemon_->sock, vmsg, sizeof vmsg)) {
            ops_.failed++;
            fprintf(stderr, "stress: verify while running: %s\n", vmsg);
        }
        if (++ops_.calls == 5 && ops_.victim > 0)
            kill(ops_.victim, SIGKILL);
        if (ops_.calls == 10 && mode_.daemon_dies) {
            dh_kill(daemon_);
            ops_.daemon_dead = true;
        }
        usleep(20000);
    }
    return NULL;
}

/* A single-threaded process that detaches and attaches again, over and
 * over, while the ring runs: each round it allocates CHURN_NEW objects and
 * frees about half of those it kept from earlier sessions, then detaches.
 * Its spans go back to the daemon with live objects in them, which other
 * processes then get with their Refills; its later frees into them are
 * remote frees into central's spans or into another process's. */
enum { CHURN_EVERY = 600, CHURN_NEW = 200 };

static void churn_child(long ops, int report)
{
    uint64_t rng = seed_ + 0xc4a27u;
    counts_t cnt = { 0 };
    local_t *l = calloc(1, sizeof *l);
    if (l == NULL)
        _exit(5);
    uint64_t serial = (uint64_t)NPROC << 56;
    for (long round = 0; mode_.kill || round < ops / CHURN_EVERY; round++) {
        for (unsigned i = l->n; i > 0; i--)             /* earlier sessions' */
            if (next_rand(&rng) & 1)
                local_free(l, i - 1, &cnt);
        for (unsigned j = 0; j < CHURN_NEW && l->n < LOCAL_MAX; j++) {
            rec_t r;
            void *p = new_object(&rng, &serial, &cnt, &r);
            if (p == NULL)
                continue;
            l->r[l->n] = r;
            l->p[l->n++] = p;
        }
        atomic_store(churn_errors, cnt.errors);
        if (!mode_.daemon_dies)
            spc_detach();               /* the next malloc attaches again */
    }
    while (l->n > 0)
        local_free(l, l->n - 1, &cnt);
    free(l);
    spc_detach();
    if (write(report, &cnt, sizeof cnt) != (ssize_t)sizeof cnt)
        _exit(6);
    exit(0);
}

static void stress_seed(void)
{
    const char *e = getenv("SPAND_STRESS_SEED");
    seed_ = e ? strtoull(e, NULL, 0) * 0x9e3779b97f4a7c15ull : 0;
}

static long stress_ops(void)
{
    const char *e = getenv("SPAND_STRESS_OPS");
    long n = e ? strtol(e, NULL, 10) : STRESS_OPS;
    return n > 0 ? n : STRESS_OPS;
}

static void check_counters(long large);

static void test_stress(void)
{
    long ops = stress_ops() / mode_.ops_div;
    stress_seed();
    int procpipe[NPROC][2], selfpipe[NPROC][2], report[2];
    for (int k = 0; k < NPROC; k++)
        CU_ASSERT_FATAL(pipe(procpipe[k]) == 0 && pipe(selfpipe[k]) == 0);
    CU_ASSERT_FATAL(pipe(report) == 0);
    pid_t pids[NPROC + 1];
    fflush(NULL);                     /* children exit() and flush stdio */
    pids[NPROC] = fork();
    CU_ASSERT_FATAL(pids[NPROC] >= 0);
    if (pids[NPROC] == 0) {
        for (int j = 0; j < NPROC; j++)
            close(procpipe[j][0]), close(procpipe[j][1]), close(selfpipe[j][0]),
                close(selfpipe[j][1]);
        close(report[0]);
        churn_child(ops, report[1]);
    }
    for (int k = 0; k < NPROC; k++) {
        pids[k] = fork();
        CU_ASSERT_FATAL(pids[k] >= 0);
        if (pids[k] == 0) {
            /* k writes procpipe[k], reads procpipe[k-1] */
            int prev = procpipe[(k + NPROC - 1) % NPROC][0];
            for (int j = 0; j < NPROC; j++) {
                if (procpipe[j][0] != prev)
                    close(procpipe[j][0]);
                if (j != k)
                    close(procpipe[j][1]), close(selfpipe[j][0]), close(selfpipe[j][1]);
            }
            close(report[0]);
            stress_child(k, ops, prev, selfpipe[k][0], selfpipe[k][1], procpipe[k][1],
                         report[1]);
        }
    }
    for (int k = 0; k < NPROC; k++) {
        close(procpipe[k][0]), close(procpipe[k][1]);
        close(selfpipe[k][0]), close(selfpipe[k][1]);
    }
    close(report[1]);
    pthread_t op;
    atomic_store(&ops_.stop, false);
    ops_.calls = ops_.failed = 0;
    ops_.daemon_dead = false;
    ops_.victim = mode_.kill ? pids[NPROC] : 0;
    CU_ASSERT_FATAL(pthread_create(&op, NULL, operator_thread, NULL) == 0);
    counts_t sum = { 0 };
    for (int k = 0; k < NPROC + !mode_.kill; k++) {
        counts_t c;
        ssize_t r = read(report[0], &c, sizeof c);
        CU_ASSERT_EQUAL(r, (ssize_t)sizeof c);
        if (r != (ssize_t)sizeof c)
            break;
        sum.made += c.made, sum.freed_local += c.freed_local, sum.freed_fork += c.freed_fork;
        sum.freed_thread += c.freed_thread, sum.freed_proc += c.freed_proc;
        sum.reallocs += c.reallocs, sum.refused += c.refused, sum.errors += c.errors;
        sum.large += c.large;
    }
    close(report[0]);
    if (mode_.kill) {
        kill(pids[NPROC], SIGKILL);   /* killed already, unless the ring was quicker */
        sum.errors += atomic_load(churn_errors);        /* it sent no report */
    }
    for (int k = 0; k <= NPROC; k++) {
        int st = -1;
        bool killed = mode_.kill && k == NPROC;
        CU_ASSERT_EQUAL(dh_reap(pids[k], &st, 300000), 0);
        if (killed) {
            CU_ASSERT(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL);
        } else {
            CU_ASSERT(WIFEXITED(st) && WEXITSTATUS(st) == 0);
        }
        if (killed ? !WIFSIGNALED(st) : !WIFEXITED(st) || WEXITSTATUS(st) != 0)
            fprintf(stderr, "stress: process %d ended with status %#x\n", k, st);
    }
    atomic_store(&ops_.stop, true);
    pthread_join(op, NULL);
    fprintf(stderr, "stress (seed %s): %d processes and a churner, %ld steps each: %ld objects (%ld freed by their "
            "thread, %ld by another thread, %ld by another process, %ld by fork children), "
            "%ld reallocs, %ld refused, %ld errors; %ld Scavenge, Stats and "
            "Verify meanwhile%s\n", getenv("SPAND_STRESS_SEED") ? getenv("SPAND_STRESS_SEED") : "0",
            NPROC, ops, sum.made, sum.freed_local, sum.freed_thread,
            sum.freed_proc, sum.freed_fork, sum.reallocs, sum.refused, sum.errors, ops_.calls,
            STRESS_FORKS ? "" : " (no fork children in an AddressSanitizer build)");
    CU_ASSERT_EQUAL(ops_.failed, 0);
    CU_ASSERT(ops_.calls > 0);
    CU_ASSERT_EQUAL(sum.errors, 0);
    if (mode_.full) {
        CU_ASSERT(sum.refused > 0 && sum.made > ops / 2);
    } else if (mode_.daemon_dies) {
        CU_ASSERT(sum.refused > 0 && sum.made > 0 && ops_.daemon_dead);
    } else {
        CU_ASSERT(sum.refused == 0 && sum.made > ops);
    }
    CU_ASSERT_EQUAL(sum.freed_local + sum.freed_thread + sum.freed_proc + sum.freed_fork,
                    sum.made);
    /* (with its daemon dead a producer's set may be empty at each fork) */
    CU_ASSERT(sum.freed_thread > 0 && sum.freed_proc > 0 && sum.reallocs > 0 &&
              (sum.freed_fork > 0 || mode_.daemon_dies || !STRESS_FORKS));

    /* nothing live, no session left, every invariant of the heap holds; a
     * killed churner leaves what it kept (at most LOCAL_MAX objects), what
     * waited in its batches of remote frees (at most 512) and its current
     * tiny blocks (3, each one object to the daemon), and no more */
    if (mode_.daemon_dies)
        return;                         /* nobody to ask */
    CU_ASSERT(ct_nothing_live(daemon_->sock, mode_.kill ? LOCAL_MAX + 512 + 3 : 0));
    check_counters(sum.large);
}

/* No client sent the daemon anything it refused as malformed; sessions
 * ended holding spans (exits without detach, the killed process); and past
 * a 1 MiB large pool, large objects went by AllocLarge. */
static void check_counters(long large)
{
    long long bad = ct_counter(daemon_->sock, "bad_requests");
    long long adopted = ct_counter(daemon_->sock, "adopted_spans");
    long long calls = ct_counter(daemon_->sock, "large_alloc_calls");
    CU_ASSERT_EQUAL(bad, 0);
    CU_ASSERT(adopted > 0 && calls > 0);
    if (mode_.large_pool != NULL)
        CU_ASSERT(calls >= large / 2);
    fprintf(stderr, "stress: daemon counters: bad_requests %lld, adopted_spans %lld, "
            "large_alloc_calls %lld for %ld large objects\n", bad, adopted, calls, large);
}

/* ---- the checker checks ---- */

/* The live map refuses what the stress test relies on it to refuse. */
static void test_live_map(void)
{
    CU_ASSERT(mark(4096, 24, true));                   /* a 24-byte class */
    CU_ASSERT(mark(4096 + 24, 24, true));              /* its neighbour */
    CU_ASSERT_FALSE(mark(4096 + 40, 16, true));        /* overlaps its tail */
    CU_ASSERT(mark(8192 + 1, 1, true));                /* tiny objects, bytes */
    CU_ASSERT(mark(8192 + 2, 2, true));
    CU_ASSERT_FALSE(mark(8192 + 3, 1, true));
    CU_ASSERT(mark(1 << 20, 1 << 20, true));           /* 1 MiB, across words */
    CU_ASSERT_FALSE(mark((1 << 20) + 12345 * 16, 64, true));
    CU_ASSERT(mark(1 << 20, 1 << 20, false));
    CU_ASSERT_FALSE(mark(1 << 20, 16, false));         /* freed twice */
    CU_ASSERT_FALSE(mark(0, 16, true));                /* offset 0 is no object */
    CU_ASSERT_FALSE(mark(COVER - 8, 16, true));
    /* leave the map clear for the stress test */
    CU_ASSERT(mark(4096, 24, false) && mark(4096 + 24, 24, false));
    CU_ASSERT(mark(8192 + 1, 1, false) && mark(8192 + 2, 2, false));
    /* a byte of another serial's pattern is seen */
    uint8_t buf[200];
    fill(buf, sizeof buf, 7);
    CU_ASSERT(check(buf, sizeof buf, 7));
    CU_ASSERT_FALSE(check(buf, sizeof buf, 8));
    buf[150] ^= 1;
    CU_ASSERT_FALSE(check(buf, sizeof buf, 7));
}

/* A suite's start: a fresh live map, and a daemon for a run of mode m. */
static int start_mode(stress_mode_t m)
{
    mode_ = m;
    bytemap = mmap(NULL, COVER / 8, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS |
                   MAP_NORESERVE, -1, 0);
    granmap = mmap(NULL, GRANMAP_BYTES, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS |
                   MAP_NORESERVE, -1, 0);
    churn_errors = mmap(NULL, sizeof *churn_errors, PROT_READ | PROT_WRITE,
                        MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (bytemap == MAP_FAILED || granmap == MAP_FAILED || churn_errors == MAP_FAILED) {
        perror("mmap");
        return -1;
    }
    const char *const args[] = { "-m", mode_.arena_size, "--scavenge-interval", "1",
                                 mode_.large_pool ? "--large-pool" : NULL, mode_.large_pool,
                                 NULL };
    daemon_ = dh_start_client(args);
    return daemon_ ? 0 : -1;
}

static int suite_start(void)
{
    return start_mode((stress_mode_t){ .large_pct = 3, .ops_div = 1, .arena_size = ARENA_SIZE });
}

/* The churner is killed (SIGKILL, at the operator's fifth call) in the
 * middle of whatever it was doing: allocating, freeing, pushing, attaching
 * or detaching.  The daemon ends its session and takes its spans back,
 * live objects and all, while the others keep allocating from and freeing
 * into them; none of theirs is lost or handed out twice. */
static int suite_start_kill(void)
{
    return start_mode((stress_mode_t){ .kill = true, .large_pct = 3, .ops_div = 1,
                                       .arena_size = ARENA_SIZE });
}

/* Large objects one request in six, and a large pool of 1 MiB: most large
 * frees go back by FreeLarge (sent without waiting for the answer) and
 * most large allocations are AllocLarge round trips, from every thread of
 * every process at once.  A quarter of the steps: round trips are slow. */
static int suite_start_large(void)
{
    return start_mode((stress_mode_t){ .large_pct = 16, .ops_div = 4, .arena_size = ARENA_SIZE,
                                       .large_pool = "1M" });
}

/* The daemon is killed (SIGKILL, at the operator's tenth call) under
 * every process: what needs it (refills, large objects, attaching) gets
 * NULL and ENOTCONN, everything else goes on (frees, into any span, and
 * allocations from what the caches hold), no process stops, and no object
 * is lost or handed out twice.  The churner does not detach here: its
 * kept objects would be out of its reach with no daemon to attach to. */
static int suite_start_daemon_dies(void)
{
    return start_mode((stress_mode_t){ .daemon_dies = true, .large_pct = 3, .ops_div = 1,
                                       .arena_size = ARENA_SIZE });
}

/* The arena fills: a quarter of the requests large, the producers' own
 * objects alone more than the arena.  Allocations and reallocs get NULL
 * and ENOMEM, no process stops, and nothing stored is lost or handed out
 * twice. */
static int suite_start_full(void)
{
    return start_mode((stress_mode_t){ .full = true, .large_pct = 25, .ops_div = 1,
                                       .arena_size = "64M" });
}

static int suite_stop(void)
{
    munmap((void *)bytemap, COVER / 8);
    munmap((void *)granmap, GRANMAP_BYTES);
    munmap((void *)churn_errors, sizeof *churn_errors);
    if (mode_.daemon_dies) {            /* killed already: remove its files */
        dh_cleanup(daemon_);
        return 0;
    }
    return dh_finish(daemon_);
}

int main(void)
{
    CU_TestInfo tests[] = {
        { "the live map and the pattern catch what they must", test_live_map },
        { "3 processes x 4 threads and a churner: a random mix of every size and free",
          test_stress },
        CU_TEST_INFO_NULL,
    };
    CU_TestInfo full[] = {
        { "the same in a 64 MiB arena: full, ENOMEM, nothing lost", test_stress },
        CU_TEST_INFO_NULL,
    };
    CU_TestInfo killed[] = {
        { "the same with the churner killed: the others lose nothing", test_stress },
        CU_TEST_INFO_NULL,
    };
    CU_TestInfo large[] = {
        { "the same with a 1 MiB large pool: FreeLarge and AllocLarge from everyone",
          test_stress },
        CU_TEST_INFO_NULL,
    };
    CU_TestInfo dies[] = {
        { "the same with the daemon killed: ENOTCONN, nothing lost, nobody stops",
          test_stress },
        CU_TEST_INFO_NULL,
    };
    CU_SuiteInfo suites[] = {
        { "stress", suite_start, suite_stop, NULL, NULL, tests },
        { "stress, a process killed", suite_start_kill, suite_stop, NULL, NULL, killed },
        { "stress, full arena", suite_start_full, suite_stop, NULL, NULL, full },
        { "stress, large objects past the pool", suite_start_large, suite_stop, NULL, NULL,
          large },
        { "stress, the daemon killed", suite_start_daemon_dies, suite_stop, NULL, NULL, dies },
        CU_SUITE_INFO_NULL,
    };
    signal(SIGPIPE, SIG_IGN);
    return cutest_run(suites);
}

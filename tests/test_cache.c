/* See shm/layout.h for the overview; client/cache.h for the thread cache.
 *
 * White-box checks of the thread cache's thread-local line (spci_tls: the
 * cache pointer and the free's copy of spci_map), of the free's use of the
 * class map, and of where a cache is placed.  The free trusts the copy
 * without checking it against spci_map, so every attach, detach and fork
 * must keep every thread's copy right, or the free reads another arena's
 * span map; it must trust no class-map byte, which only picks the bin
 * whose current span it compares p with.  This program links
 * libspanclient statically to see its internals.
 */
#include "config.h"

#include <pthread.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "client/cache.h"
#include "tests/cutest.h"
#include "tests/client_helper.h"
#include "tests/daemon_helper.h"

static dh_daemon_t *small_, *big_;      /* two daemons, two arena layouts */

static int suite_start(void)
{
    static const char *const small_args[] = { "-m", "256M", NULL };
    static const char *const big_args[] = { "-m", "1G", NULL };
    small_ = dh_new();
    big_ = dh_new();
    if (small_ == NULL || big_ == NULL || dh_start(small_, small_args) != 0 ||
        dh_start(big_, big_args) != 0) {
        fprintf(stderr, "cannot start spand\n");
        return -1;
    }
    setenv("SPAND_SOCKET", small_->sock, 1);
    return 0;
}

static int suite_stop(void)
{
    spc_detach();
    int a = dh_stop(small_), b = dh_stop(big_);
    if (a != 0)
        dh_dump_log(small_);
    if (b != 0)
        dh_dump_log(big_);
    dh_cleanup(small_);
    dh_cleanup(big_);
    return a == 0 && b == 0 ? 0 : -1;
}

/* The calling thread's copy says what spci_map says: the same arena
 * (attached), or all zeros (not). */
static bool copy_is_current(void)
{
    const spci_fmap_t *m = &spci_tls.map;
    if (spci_map.base == NULL)
        return m->base == NULL && m->data == 0 && m->data_len == 0 && m->pagemap == 0 &&
               m->classmap == 0 && m->spans == NULL && m->bitmaps == NULL;
    return m->base == spci_map.base && m->data == (uintptr_t)spci_map.base + spci_map.data_off &&
           m->data_len == spci_map.data_len && m->spans == spci_map.spans &&
           m->bitmaps == spci_map.bitmaps &&
           m->pagemap + ((uintptr_t)m->base >> SHM_PAGE_SHIFT) * sizeof(uint32_t) ==
               (uintptr_t)spci_map.spanmap &&
           m->classmap + ((uintptr_t)m->base >> SHM_PAGE_SHIFT) ==
               (uintptr_t)shm_classmap(spci_map.base);
}

/* The span the free finds for p through the copy is p's span, and the
 * class-map byte it reads names p's class. */
static bool copy_finds(void *p)
{
    shm_span_t *s;
    uint32_t i;
    if (spci_check(p, &s, &i) != SHM_PTR_OK)
        return false;
    uint32_t id = *(const uint32_t *)(spci_tls.map.pagemap +
                                      ((uintptr_t)p >> SHM_PAGE_SHIFT) * sizeof(uint32_t));
    uint8_t cls = *(const uint8_t *)(spci_tls.map.classmap + ((uintptr_t)p >> SHM_PAGE_SHIFT));
    return spci_tls.map.spans + id == s && cls == s->sizeclass;
}

/* attach sets the copy, detach clears it, an attach to another daemon (an
 * arena of another size: another layout) sets it anew, and frees through it
 * land in the bin */
static void test_copy_follows_the_mapping(void)
{
    void *p = spc_malloc(100);
    CU_ASSERT_PTR_NOT_NULL_FATAL(p);
    CU_ASSERT(spci_tls.tc != &spci_empty_cache);
    CU_ASSERT_PTR_NOT_NULL(spci_tls.map.base);
    CU_ASSERT(copy_is_current());
    CU_ASSERT(copy_finds(p));
    uint64_t small_len = spci_tls.map.data_len;
    spc_free(p);
    spc_detach();
    CU_ASSERT_PTR_NULL(spci_map.base);
    CU_ASSERT(copy_is_current());                   /* zeros: every free goes slow */

    setenv("SPAND_SOCKET", big_->sock, 1);
    p = spc_malloc(100);                            /* attaches lazily */
    CU_ASSERT_PTR_NOT_NULL_FATAL(p);
    CU_ASSERT(copy_is_current());
    CU_ASSERT(spci_tls.map.data_len > small_len);
    CU_ASSERT(copy_finds(p));
    spc_free(p);                                    /* the fast path: onto the list */
    CU_ASSERT_PTR_EQUAL(spci_tls.tc->bins[shm_size_to_class(100)].head, p);
    CU_ASSERT_PTR_EQUAL(spc_malloc(100), p);
    spc_free(p);
    spc_detach();
    setenv("SPAND_SOCKET", small_->sock, 1);
}

/* ---- another thread's copy ---- */

static pthread_barrier_t step;
static bool seen[4];

static void *copy_thread(void *arg)
{
    (void)arg;
    void *p = spc_malloc(64);                       /* this thread's cache */
    seen[0] = p != NULL && copy_is_current() && spci_tls.map.base != NULL;
    spc_free(p);
    pthread_barrier_wait(&step);                    /* main detaches */
    pthread_barrier_wait(&step);
    seen[1] = spci_tls.map.base == NULL && copy_is_current();
    pthread_barrier_wait(&step);                    /* main attaches again */
    pthread_barrier_wait(&step);
    seen[2] = spci_tls.map.base != NULL && copy_is_current();   /* before any call here */
    p = spc_malloc(64);
    seen[3] = p != NULL && copy_finds(p);
    spc_free(p);
    return NULL;
}

/* detach and attach in one thread update the copy of every thread that
 * has a cache, before that thread calls the library again */
static void test_copy_of_other_threads(void)
{
    pthread_t t;
    CU_ASSERT_EQUAL_FATAL(pthread_barrier_init(&step, NULL, 2), 0);
    memset(seen, 0, sizeof seen);
    CU_ASSERT_EQUAL_FATAL(pthread_create(&t, NULL, copy_thread, NULL), 0);
    pthread_barrier_wait(&step);
    spc_detach();
    pthread_barrier_wait(&step);
    pthread_barrier_wait(&step);
    CU_ASSERT_EQUAL(spc_attach(NULL), 0);
    pthread_barrier_wait(&step);
    pthread_join(t, NULL);
    pthread_barrier_destroy(&step);
    for (int k = 0; k < 4; k++)
        CU_ASSERT(seen[k]);
}

/* a fork child starts with no cache and a cleared copy (it may attach to
 * another arena), and gets both at its first allocation */
static void test_copy_in_fork_child(void)
{
    void *p = spc_malloc(32);
    CU_ASSERT_PTR_NOT_NULL_FATAL(p);
    CU_ASSERT(spci_tls.map.base != NULL);
    pid_t pid = fork();
    CU_ASSERT_FATAL(pid >= 0);
    if (pid == 0) {
        if (spci_tls.tc != &spci_empty_cache || spci_tls.map.base != NULL ||
            spci_tls.map.data_len != 0)
            _exit(1);
        spc_free(p);                                /* the parent's object: a remote free */
        void *q = spc_malloc(32);
        _exit(q != NULL && spci_tls.tc != &spci_empty_cache && copy_is_current() &&
              copy_finds(q) ? 0 : 2);
    }
    int st;
    CU_ASSERT_EQUAL(dh_reap(pid, &st, 10000), 0);
    CU_ASSERT(WIFEXITED(st) && WEXITSTATUS(st) == 0);
}

/* ---- the class map: a hint the free never trusts ---- */

/* Is p free in its span's bitmap? */
static bool bit_clear(void *p)
{
    shm_span_t *s;
    uint32_t i;
    CU_ASSERT_EQUAL_FATAL(shm_ptr_locate(spci_map.base, p, &s, &i), SHM_PTR_OK);
    return !shm_bit_test(shm_span_bitmap(spci_map.base, s), i);
}

/* An object of its class's current span is freed onto the bin's list
 * through the class map; with the byte of its page naming another class,
 * or no class the daemon writes, the free still lands right (the span-map
 * path, or the slow path), and so does the free of an object of another
 * span the thread holds, whatever the byte says. */
static void test_classmap_hint(void)
{
    unsigned cls = shm_size_to_class(200);
    void *p = spc_malloc(200);
    CU_ASSERT_PTR_NOT_NULL_FATAL(p);
    spci_cache_t *c = spci_tls.tc;
    spci_bin_t *b = &c->bins[cls];
    CU_ASSERT_FATAL(b->limit == c->cls[cls].cur->nelems * shm_classes[cls].size);
    CU_ASSERT_FATAL((uint64_t)((uint8_t *)p - b->start) < b->limit);
    _Atomic uint8_t *byte = shm_classmap(spci_map.base) +
                            (((uint8_t *)p - spci_map.base) >> SHM_PAGE_SHIFT);
    CU_ASSERT_EQUAL_FATAL(*byte, cls);
    void *t = spc_malloc(2);                        /* the tiny bin gets a span */
    CU_ASSERT_PTR_NOT_NULL_FATAL(c->cls[SHM_CLASS_TINY].cur);
    CU_ASSERT_EQUAL(c->bins[SHM_CLASS_TINY].limit, 0);
    spc_free(t);
    CU_ASSERT_EQUAL(c->bins[0].limit, 0);

    const uint8_t wrong[] = { (uint8_t)(cls + 1), 0, SHM_CLASS_TINY, SHM_NCLASSES, 255 };
    for (unsigned k = 0; k <= sizeof wrong; k++) {
        if (k > 0)
            *byte = wrong[k - 1];
        spc_free(p);
        CU_ASSERT(bit_clear(p));
        CU_ASSERT_PTR_EQUAL(b->head, p);            /* the current span's list */
        CU_ASSERT_PTR_EQUAL(spc_malloc(200), p);    /* and handed out from it */
        CU_ASSERT(!bit_clear(p));
    }
    *byte = (uint8_t)cls;

    /* objects until the current span changes: the first span's objects are
     * then on the avail or full list, no longer current */
    enum { N = 4096 };
    void **v = calloc(N, sizeof *v);
    CU_ASSERT_PTR_NOT_NULL_FATAL(v);
    shm_span_t *first = c->cls[cls].cur;
    unsigned n = 0;
    while (n < N && c->cls[cls].cur == first)
        CU_ASSERT_PTR_NOT_NULL_FATAL(v[n++] = spc_malloc(200));
    shm_span_t *second = c->cls[cls].cur;
    CU_ASSERT_FATAL(second != first && first->hstate == SPCI_H_FULL);
    CU_ASSERT_FATAL((uint64_t)((uint8_t *)p - b->start) >= b->limit);
    *byte = (uint8_t)(cls + 1);
    spc_free(p);                    /* a full span: it becomes the current one */
    CU_ASSERT(bit_clear(p));
    CU_ASSERT_PTR_EQUAL(c->cls[cls].cur, first);
    CU_ASSERT_PTR_EQUAL(b->head, p);
    CU_ASSERT_EQUAL(second->hstate, SPCI_H_AVAIL);
    void *q = v[n - 1];                             /* second's */
    _Atomic uint8_t *qbyte = shm_classmap(spci_map.base) +
                             (((uint8_t *)q - spci_map.base) >> SHM_PAGE_SHIFT);
    *qbyte = 0;
    spc_free(q);                                    /* a held span, not current */
    v[--n] = NULL;
    CU_ASSERT(bit_clear(q));
    CU_ASSERT_PTR_EQUAL(b->head, p);
    *byte = (uint8_t)cls;
    *qbyte = (uint8_t)cls;
    for (unsigned j = 0; j < n; j++)
        spc_free(v[j]);
    for (unsigned j = 0; j < n; j++)
        CU_ASSERT(bit_clear(v[j]));
    free(v);
}

/* Allocate objects of `size` until the class's current span changes;
 * returns how many (in v), the first span in *first. */
static unsigned fill_span(size_t size, void **v, unsigned max, shm_span_t **first)
{
    spci_class_t *k = &spci_tls.tc->cls[shm_size_to_class(size)];
    void *p = spc_malloc(size);
    CU_ASSERT_PTR_NOT_NULL_FATAL(p);
    unsigned n = 0;
    v[n++] = p;
    *first = k->cur;
    while (n < max && k->cur == *first)
        CU_ASSERT_PTR_NOT_NULL_FATAL(v[n++] = spc_malloc(size));
    CU_ASSERT_FATAL(k->cur != *first && (*first)->hstate == SPCI_H_FULL);
    return n;
}

/* The first free into a full span of a class up to SPCI_PROMOTE_MAX makes
 * it the current span (the frees that follow take the list); above, the
 * span goes to the avail list and the current span stays. */
static void test_full_span_at_free(void)
{
    enum { N = 4096 };
    void **v = calloc(N, sizeof *v);
    CU_ASSERT_PTR_NOT_NULL_FATAL(v);
    const size_t sizes[] = { 64, 1024, 2048, 16384 };
    for (unsigned z = 0; z < sizeof sizes / sizeof sizes[0]; z++) {
        unsigned cls = shm_size_to_class(sizes[z]);
        spci_class_t *k = &spci_tls.tc->cls[cls];
        spci_bin_t *b = &spci_tls.tc->bins[cls];
        shm_span_t *first;
        unsigned n = fill_span(sizes[z], v, N, &first);
        shm_span_t *second = k->cur;
        spc_free(v[0]);                             /* first's */
        if (shm_classes[cls].size <= SPCI_PROMOTE_MAX) {
            CU_ASSERT_PTR_EQUAL(k->cur, first);
            CU_ASSERT_EQUAL(first->hstate, SPCI_H_CURRENT);
            CU_ASSERT_EQUAL(second->hstate, SPCI_H_AVAIL);
            CU_ASSERT_PTR_EQUAL(b->head, v[0]);
            spc_free(v[1]);                         /* onto the list */
            CU_ASSERT_PTR_EQUAL(b->head, v[1]);
            CU_ASSERT_PTR_EQUAL(*(void **)v[1], v[0]);
        } else {
            CU_ASSERT_PTR_EQUAL(k->cur, second);
            CU_ASSERT_EQUAL(first->hstate, SPCI_H_AVAIL);
            spc_free(v[1]);
        }
        for (unsigned j = 2; j < n; j++)
            spc_free(v[j]);
        for (unsigned j = 0; j < n; j++)
            CU_ASSERT(bit_clear(v[j]));
    }
    free(v);
}

/* ---- remote frees: the batch's cap ---- */

/* Objects waiting on span s's remote-free stack, record by record. */
static uint32_t stacked(const shm_span_t *s)
{
    uint32_t n = 0;
    for (uint64_t off = shm_load_relaxed(&s->xremote); off != 0;
         off = *(const uint64_t *)(spci_map.base + off) & SHM_REMOTE_OFF_MASK)
        n += shm_remote_record_count(spci_map.base + off);
    return n;
}

typedef struct capx_s {
    void **v;                   /* objects of span s to free */
    uint32_t count;             /* how many */
    uint32_t cap;               /* the batch's cap for their class */
    shm_span_t *s;
    int bad;                    /* the free after which a check failed, 0 none */
} capx_t;

/* Free x->count objects of x->v, one by one, from a thread that does not
 * hold their span: each waits in the thread's batch for s until the
 * cap-th, which pushes them all.  (The thread's exit pushes the rest.) */
static void *free_to_cap(void *arg)
{
    capx_t *x = arg;
    for (uint32_t j = 0; j < x->count && x->bad == 0; j++) {
        spc_free(x->v[j]);
        spci_cache_t *c = spci_tls.tc;
        const spci_rfree_t *e = spci_rfree_slot(c, x->s);
        bool ok = j + 1 < x->cap
                      ? e->span == x->s && e->n == j + 1 && e->cap == x->cap && stacked(x->s) == 0
                      : e->span == NULL && stacked(x->s) == x->cap;
        if (!ok)
            x->bad = (int)j + 1;
    }
    return NULL;
}

/* A thread's batch of remote frees into one span is pushed when it holds
 * SPCI_RFREE_BATCH objects, or fewer where that many would keep more than
 * SPCI_RFREE_BYTES waiting: 64 at 64 B, 32 at 16 KiB (a span's 32
 * objects), 16 at 32 KiB (whose spans hold 4: there only the batch's cap
 * is checked, after one free). */
static void test_rfree_cap(void)
{
    const size_t sizes[] = { 64, 16384, 32768 };
    const uint32_t caps[] = { 64, 32, 16 };
    CU_ASSERT_EQUAL_FATAL(SPCI_RFREE_BATCH, 64);
    CU_ASSERT_EQUAL_FATAL(SPCI_RFREE_BYTES, 512u << 10);
    for (unsigned z = 0; z < sizeof sizes / sizeof sizes[0]; z++) {
        uint32_t cap = caps[z], count = sizes[z] == 32768 ? 1 : cap;
        unsigned n = 3 * (cap > 32 ? cap : 32);
        void **v = calloc(n, sizeof *v), **w = calloc(n, sizeof *w);
        shm_span_t **of = calloc(n, sizeof *of);
        CU_ASSERT_FATAL(v != NULL && w != NULL && of != NULL);
        for (unsigned j = 0; j < n; j++) {
            uint32_t i;
            CU_ASSERT_PTR_NOT_NULL_FATAL(v[j] = spc_malloc(sizes[z]));
            CU_ASSERT_EQUAL_FATAL(shm_ptr_locate(spci_map.base, v[j], &of[j], &i), SHM_PTR_OK);
        }
        /* the span holding most of them, and its objects */
        shm_span_t *best = NULL;
        uint32_t most = 0;
        for (unsigned j = 0; j < n; j++) {
            uint32_t k = 0;
            for (unsigned l = 0; l < n; l++)
                k += of[l] == of[j];
            if (k > most)
                most = k, best = of[j];
        }
        CU_ASSERT_FATAL(most >= count);
        uint32_t m = 0;
        for (unsigned j = 0; j < n && m < count; j++)
            if (of[j] == best)
                w[m++] = v[j];
        CU_ASSERT_EQUAL_FATAL(stacked(best), 0);
        capx_t x = { w, count, cap, best, 0 };
        pthread_t th;
        CU_ASSERT_FATAL(pthread_create(&th, NULL, free_to_cap, &x) == 0);
        pthread_join(th, NULL);
        CU_ASSERT_EQUAL(x.bad, 0);
        for (unsigned j = 0; j < n; j++) {
            bool freed = false;
            for (uint32_t l = 0; l < m; l++)
                freed |= v[j] == w[l];
            if (!freed)
                spc_free(v[j]);
        }
        free(v);
        free(w);
        free(of);
    }
}

/* Once the process exits (spci_exiting, set by libspanclient's destructor
 * after it flushed the exiting thread's cache), nothing runs later to push
 * a batch or give up a tiny block: a remote free is pushed at once, and a
 * tiny request takes a block of its own, counted as one live piece.  In a
 * fork child, so that the flag stays out of this process.  The child's exit
 * status: 0, or the number of the first check that failed. */
static int exiting_child(void **v, shm_span_t *s, uint32_t before)
{
    shm_store_relaxed(&spci_exiting, 1);
    for (uint32_t j = 0; j < 2; j++) {
        spc_free(v[j]);                         /* the parent's: remote */
        const spci_rfree_t *e = spci_rfree_slot(spci_tls.tc, s);
        if (stacked(s) != before + j + 1 || e->span != NULL)
            return 1 + (int)j;
    }
    uint8_t *t[2];
    for (int j = 0; j < 2; j++) {
        shm_span_t *ts;
        uint32_t i;
        if ((t[j] = spc_malloc(1)) == NULL)
            return 3;
        if (shm_ptr_locate(spci_map.base, t[j], &ts, &i) != SHM_PTR_OK)
            return 4;
        if (shm_load_relaxed(shm_tiny_count(spci_map.base, ts, i)) != 1 ||
            spci_tls.tc->tiny[0].end != NULL)
            return 5;
    }
    if ((((uintptr_t)t[0] ^ (uintptr_t)t[1]) & ~(uintptr_t)15) == 0)
        return 6;                               /* one block each */
    for (int j = 0; j < 2; j++) {
        shm_span_t *ts;
        uint32_t i;
        shm_ptr_locate(spci_map.base, t[j], &ts, &i);
        spc_free(t[j]);                         /* the last piece: the block */
        if (shm_bit_test(shm_span_bitmap(spci_map.base, ts), i))
            return 7;
    }
    spc_detach();
    return 0;
}

static void test_exiting(void)
{
    void *v[3];
    shm_span_t *s[3];
    for (int j = 0; j < 3; j++) {
        uint32_t i;
        CU_ASSERT_PTR_NOT_NULL_FATAL(v[j] = spc_malloc(64));
        CU_ASSERT_EQUAL_FATAL(shm_ptr_locate(spci_map.base, v[j], &s[j], &i), SHM_PTR_OK);
    }
    CU_ASSERT_FATAL(s[0] == s[1]);
    uint32_t before = stacked(s[0]);       /* earlier tests' frees, not drained */
    fflush(NULL);
    pid_t pid = fork();
    CU_ASSERT_FATAL(pid >= 0);
    if (pid == 0)
        _exit(exiting_child(v, s[0], before));
    int st = -1;
    CU_ASSERT_EQUAL(dh_reap(pid, &st, 10000), 0);
    CU_ASSERT(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
        fprintf(stderr, "exiting child: status %#x\n", st);
    spc_free(v[2]);
}

/* ---- retention: what a class keeps, and what goes back ---- */

/* Spans the cache of this (single-threaded) process holds in class cls,
 * the daemon's view: its lists, its current span, and the spans given back
 * but not yet released (pending: still held until the next Release). */
static long held_here(unsigned cls)
{
    const spci_cache_t *c = spci_tls.tc;
    const spci_class_t *k = &c->cls[cls];
    return (long)k->full.n + (long)k->avail.n + (k->cur != NULL) + (long)c->npending;
}

enum { RETAIN_OBJ = 16384, RETAIN_N = 40960 };  /* 640 MiB of one class */

/* The fork child of test_retention: 0, or the number of the check that
 * failed (said on stderr). */
static int retention_child(void)
{
    unsigned cls = shm_size_to_class(RETAIN_OBJ);
    void **v = calloc(RETAIN_N, sizeof *v);
    if (v == NULL)
        return 1;
    /* every object live at once: past 512 MiB of full spans the oldest
     * go back to the daemon, their objects still live */
    for (uint32_t j = 0; j < RETAIN_N; j++) {
        if ((v[j] = spc_malloc(RETAIN_OBJ)) == NULL) {
            fprintf(stderr, "retention: malloc %u: %s\n", j, strerror(errno));
            return 2;
        }
        memcpy(v[j], &j, sizeof j);
    }
    const spci_class_t *k = &spci_tls.tc->cls[cls];
    uint32_t tid = spci_gettid(), ours = 0, theirs = 0;
    for (uint32_t j = 0; j < RETAIN_N; j += RETAIN_N / 1280) {  /* one object a span */
        shm_span_t *s;
        uint32_t i;
        if (shm_ptr_locate(spci_map.base, v[j], &s, &i) != SHM_PTR_OK)
            return 3;
        if (shm_load_relaxed(&s->xowner) == tid)
            ours++;
        else
            theirs++;
    }
    long daemon = ct_client_spans(big_->sock, getpid());
    if ((uint64_t)k->full.pages << SHM_PAGE_SHIFT > (512u << 20) || theirs == 0 ||
        ours == 0 || daemon != held_here(cls)) {
        fprintf(stderr, "retention, all live: full %u spans (%u pages), %u spans ours, %u "
                "given back; the daemon counts %ld held, the cache %ld\n", k->full.n,
                k->full.pages, ours, theirs, daemon, held_here(cls));
        return 4;
    }
    /* every object freed, intact, in the order made: a demand over the
     * process's budget keeps only the class's floor (32 MiB) of spans with
     * free room; the frees into spans given back are remote frees */
    for (uint32_t j = 0; j < RETAIN_N; j++) {
        uint32_t got;
        memcpy(&got, v[j], sizeof got);
        if (got != j) {
            fprintf(stderr, "retention: object %u holds %u\n", j, got);
            return 5;
        }
        spc_free(v[j]);
    }
    daemon = ct_client_spans(big_->sock, getpid());
    if ((uint64_t)k->avail.pages << SHM_PAGE_SHIFT > (32u << 20) ||
        daemon != held_here(cls) || daemon > 64 + 64 + 1) {
        fprintf(stderr, "retention, all freed: avail %u spans (%u pages), full %u; the "
                "daemon counts %ld held, the cache %ld\n", k->avail.n, k->avail.pages,
                k->full.n, daemon, held_here(cls));
        return 6;
    }
    free(v);
    spc_detach();
    return 0;
}

/* A process that makes 640 MiB of 16 KiB objects, every one live at once,
 * then frees them all: its class tracks at most 512 MiB of full spans and
 * hands the oldest back to the daemon with their objects live (frees into
 * them are then remote frees, and lose nothing); once freed, it keeps only
 * the 32 MiB floor of spans with free room, since its peak is over the
 * 384 MiB budget (client/cache.c, retention).  The daemon's count of held
 * spans follows the cache's at each step, and nothing is live after. */
static void test_retention(void)
{
    fflush(NULL);
    pid_t pid = fork();
    CU_ASSERT_FATAL(pid >= 0);
    if (pid == 0) {
        setenv("SPAND_SOCKET", big_->sock, 1);
        _exit(retention_child());
    }
    int st = -1;
    CU_ASSERT_EQUAL(dh_reap(pid, &st, 60000), 0);
    CU_ASSERT(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
        fprintf(stderr, "retention child: status %#x\n", st);
    CU_ASSERT(ct_nothing_live(big_->sock, 0));
}

/* ---- placement ---- */

static void *placed_thread(void *arg)
{
    void *p = spc_malloc(16);
    spc_free(p);
    return spci_tls.tc == arg ? NULL : spci_tls.tc;
}

/* a cache sits on a line boundary within the page of slack it was given,
 * so its layout's line offsets hold; every thread's is its own */
static void test_placement(void)
{
    void *p = spc_malloc(16);
    CU_ASSERT_PTR_NOT_NULL_FATAL(p);
    spc_free(p);
    spci_cache_t *c = spci_tls.tc;
    CU_ASSERT_PTR_NOT_NULL_FATAL(c->mem);
    uintptr_t at = (uintptr_t)c - (uintptr_t)c->mem;
    CU_ASSERT(at < SPCI_ALIAS_BYTES);
    CU_ASSERT_EQUAL(at % 64, 0);
    CU_ASSERT_EQUAL((uintptr_t)c->mem % SPCI_ALIAS_BYTES, 0);
    CU_ASSERT_PTR_EQUAL(c->tls, &spci_tls);
    CU_ASSERT_EQUAL(c->tid, spci_gettid());
    pthread_t t;
    void *other = NULL;
    CU_ASSERT_EQUAL_FATAL(pthread_create(&t, NULL, placed_thread, c), 0);
    pthread_join(t, &other);
    CU_ASSERT(other != NULL && other != (void *)&spci_empty_cache);  /* one of its own */
}

int main(void)
{
    CU_TestInfo tests[] = {
        { "the free's copy follows attach, detach and another arena",
          test_copy_follows_the_mapping },
        { "detach and attach update every thread's copy", test_copy_of_other_threads },
        { "a fork child starts with no copy", test_copy_in_fork_child },
        { "the free trusts no class-map byte", test_classmap_hint },
        { "a full span of a small class becomes current at a free", test_full_span_at_free },
        { "a thread's remote frees into a span are pushed at the batch's cap", test_rfree_cap },
        { "once the process exits, remote frees and tiny blocks wait for nothing",
          test_exiting },
        { "a class past its budget keeps its floor and gives the rest back",
          test_retention },
        { "a cache is placed on a line in its page of slack", test_placement },
        CU_TEST_INFO_NULL,
    };
    CU_SuiteInfo suites[] = {
        { "thread cache internals", suite_start, suite_stop, NULL, NULL, tests },
        CU_SUITE_INFO_NULL,
    };
    signal(SIGPIPE, SIG_IGN);
    return cutest_run(suites);
}

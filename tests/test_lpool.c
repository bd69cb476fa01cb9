/* See shm/layout.h for the overview; shm/lpool.h for the large pool.
 *
 * The large pool (shm/lpool.c, daemon/lpool.c) without a daemon: pops in
 * LIFO order, the head's generation defeating ABA, double frees caught by
 * the tag's CAS, the cap, batches pushed and popped whole or in part,
 * draining back to the heap, and processes pushing and popping at once
 * (fork), one span or a batch at a time, with every span seen exactly once
 * at the end.
 */
#include "config.h"

#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "daemon/lpool.h"
#include "shm/lpool.h"
#include "tests/test_core.h"

/* An arena whose pool may hold `cap` pages. */
static shm_arena_t *pool_arena(uint64_t cap)
{
    shm_arena_t *a = fx_new(64ULL << 20);
    CU_ASSERT_PTR_NOT_NULL_FATAL(a);
    a->hdr->lpool.cap_pages = cap;
    return a;
}

static shm_spanid_t large(shm_arena_t *a, uint32_t npages)
{
    int err;
    shm_spanid_t id = spd_heap_alloc_large(a, (uint64_t)npages << SHM_PAGE_SHIFT, 0, &err);
    CU_ASSERT_FATAL(id != 0);
    return id;
}

static uint64_t xpages(shm_arena_t *a)
{
    return shm_load_relaxed(&a->hdr->lpool.xpages);
}

static uint32_t tag(shm_arena_t *a, shm_spanid_t id)
{
    return shm_load_relaxed(&fx_span(a, id)->xowner);
}

static shm_spanid_t pop_id(shm_arena_t *a, uint32_t npages)
{
    shm_spanid_t bad = 1;
    shm_span_t *s = shm_lpool_pop(a->base, npages, &bad);
    CU_ASSERT_EQUAL(bad, 0);
    return s ? shm_span_id(a->base, s) : 0;
}

static void test_lifo(void)
{
    shm_arena_t *a = pool_arena(1024);
    shm_spanid_t x = large(a, 32), y = large(a, 32), z = large(a, 32), w = large(a, 7);
    CU_ASSERT_EQUAL(shm_lpool_free(a->base, fx_span(a, x)), SHM_LFREE_POOLED);
    CU_ASSERT_EQUAL(shm_lpool_free(a->base, fx_span(a, y)), SHM_LFREE_POOLED);
    CU_ASSERT_EQUAL(shm_lpool_free(a->base, fx_span(a, z)), SHM_LFREE_POOLED);
    CU_ASSERT_EQUAL(shm_lpool_free(a->base, fx_span(a, w)), SHM_LFREE_POOLED);
    CU_ASSERT_EQUAL(tag(a, x), SHM_LARGE_POOLED);
    CU_ASSERT_EQUAL(xpages(a), 3 * 32 + 7);
    VERIFY_OK(a);
    CU_ASSERT_EQUAL(pop_id(a, 31), 0);             /* no bucket of 31: a miss */
    CU_ASSERT_EQUAL(pop_id(a, 32), z);
    CU_ASSERT_EQUAL(tag(a, z), 0);                 /* allocated again */
    CU_ASSERT_EQUAL(xpages(a), 2 * 32 + 7);
    VERIFY_OK(a);
    CU_ASSERT_EQUAL(pop_id(a, 32), y);
    CU_ASSERT_EQUAL(pop_id(a, 32), x);
    CU_ASSERT_EQUAL(pop_id(a, 32), 0);
    CU_ASSERT_EQUAL(pop_id(a, 7), w);
    CU_ASSERT_EQUAL(xpages(a), 0);
    const shm_lpool_bucket_t *b = &a->hdr->lpool.bucket[32 - SHM_LPOOL_MIN_PAGES];
    CU_ASSERT_EQUAL(shm_load_relaxed(&b->xpushes), 3);
    CU_ASSERT_EQUAL(shm_load_relaxed(&b->xpops), 3);
    VERIFY_OK(a);
    /* popped spans are plain large objects: FreeLarge takes them */
    CU_ASSERT_EQUAL(spd_heap_free_large(a, (uint64_t)fx_span(a, x)->start << SHM_PAGE_SHIFT), 0);
    VERIFY_OK(a);
}

/* A popper loads head (gen, y), reads y's link x, and stalls.  Others pop
 * y and x and push y back: the head's id is y again, but its generation
 * moved, so the stalled CAS, which would put the popped x back at the
 * head, fails. */
static void test_aba(void)
{
    shm_arena_t *a = pool_arena(1024);
    shm_spanid_t x = large(a, 10), y = large(a, 10);
    shm_lpool_bucket_t *b = &a->hdr->lpool.bucket[10 - SHM_LPOOL_MIN_PAGES];
    shm_lpool_free(a->base, fx_span(a, x));
    shm_lpool_free(a->base, fx_span(a, y));
    uint64_t seen = shm_load_acquire(&b->xhead);
    CU_ASSERT_EQUAL(SHM_LPOOL_ID(seen), y);
    shm_spanid_t next = SHM_LPOOL_NEXT_BATCH(shm_load_relaxed(&fx_span(a, y)->xlarge));
    CU_ASSERT_EQUAL(next, x);
    CU_ASSERT_EQUAL(pop_id(a, 10), y);
    CU_ASSERT_EQUAL(pop_id(a, 10), x);
    CU_ASSERT_EQUAL(shm_lpool_free(a->base, fx_span(a, y)), SHM_LFREE_POOLED);
    uint64_t now = shm_load_relaxed(&b->xhead);
    CU_ASSERT_EQUAL(SHM_LPOOL_ID(now), y);          /* the same id ... */
    CU_ASSERT_NOT_EQUAL(now, seen);                 /* ... a new generation */
    uint64_t expected = seen;
    CU_ASSERT_FALSE(shm_cas_strong_acq_rel(&b->xhead, &expected, SHM_LPOOL_NEXT(seen, next)));
    CU_ASSERT_EQUAL(pop_id(a, 10), y);
    CU_ASSERT_EQUAL(pop_id(a, 10), 0);              /* x is not in the pool */
    CU_ASSERT_EQUAL(tag(a, x), 0);
    VERIFY_OK(a);
}

static void test_double_free(void)
{
    shm_arena_t *a = pool_arena(1024);
    shm_spanid_t x = large(a, 16), big = large(a, 200);
    CU_ASSERT_EQUAL(shm_lpool_free(a->base, fx_span(a, x)), SHM_LFREE_POOLED);
    CU_ASSERT_EQUAL(shm_lpool_free(a->base, fx_span(a, x)), SHM_LFREE_TWICE);
    CU_ASSERT_EQUAL(xpages(a), 16);                /* the reservation undone */
    CU_ASSERT_EQUAL(shm_load_relaxed(&a->hdr->lpool.bucket[16 - SHM_LPOOL_MIN_PAGES].xpushes),
                    1);
    VERIFY_OK(a);
    /* the daemon refuses a pooled span too */
    CU_ASSERT_EQUAL(spd_heap_free_large(a, (uint64_t)fx_span(a, x)->start << SHM_PAGE_SHIFT),
                    -EALREADY);
    CU_ASSERT_EQUAL(pop_id(a, 16), x);
    CU_ASSERT_EQUAL(pop_id(a, 16), 0);             /* in the pool once only */
    /* a size the pool does not take: tagged RETURNING, then twice is caught */
    CU_ASSERT_EQUAL(shm_lpool_free(a->base, fx_span(a, big)), SHM_LFREE_RETURN);
    CU_ASSERT_EQUAL(tag(a, big), SHM_LARGE_RETURNING);
    CU_ASSERT_EQUAL(shm_lpool_free(a->base, fx_span(a, big)), SHM_LFREE_TWICE);
    CU_ASSERT_EQUAL(xpages(a), 0);
    VERIFY_OK(a);
    CU_ASSERT_EQUAL(spd_heap_free_large(a, (uint64_t)fx_span(a, big)->start << SHM_PAGE_SHIFT),
                    0);
    VERIFY_OK(a);
}

static void test_cap(void)
{
    shm_arena_t *a = pool_arena(70);
    shm_spanid_t x = large(a, 32), y = large(a, 32), z = large(a, 32), w = large(a, 6);
    shm_spanid_t tiny = large(a, 4), top = large(a, 129);
    CU_ASSERT_EQUAL(shm_lpool_free(a->base, fx_span(a, x)), SHM_LFREE_POOLED);
    CU_ASSERT_EQUAL(shm_lpool_free(a->base, fx_span(a, y)), SHM_LFREE_POOLED);
    CU_ASSERT_EQUAL(shm_lpool_free(a->base, fx_span(a, z)), SHM_LFREE_RETURN);  /* 96 > 70 */
    CU_ASSERT_EQUAL(shm_lpool_free(a->base, fx_span(a, w)), SHM_LFREE_POOLED);  /* 70 */
    CU_ASSERT_EQUAL(shm_lpool_free(a->base, fx_span(a, tiny)), SHM_LFREE_RETURN);
    CU_ASSERT_EQUAL(shm_lpool_free(a->base, fx_span(a, top)), SHM_LFREE_RETURN);
    CU_ASSERT_EQUAL(xpages(a), 70);
    CU_ASSERT_EQUAL(tag(a, z), SHM_LARGE_RETURNING);
    VERIFY_OK(a);
    CU_ASSERT_EQUAL(spd_heap_free_large(a, (uint64_t)fx_span(a, z)->start << SHM_PAGE_SHIFT), 0);
    CU_ASSERT_EQUAL(pop_id(a, 6), w);
    CU_ASSERT_EQUAL(xpages(a), 64);
    VERIFY_OK(a);
    /* cap 0: no pool at all */
    a->hdr->lpool.cap_pages = 0;
    CU_ASSERT_EQUAL(shm_lpool_free(a->base, fx_span(a, w)), SHM_LFREE_RETURN);
    CU_ASSERT_EQUAL(pop_id(a, 32), 0);
}

static void test_drain(void)
{
    shm_arena_t *a = pool_arena(1024);
    shm_spanid_t ids[8];
    uint32_t pages = 0;
    for (unsigned i = 0; i < 8; i++) {
        ids[i] = large(a, 5 + i % 3);
        pages += fx_span(a, ids[i])->npages;
    }
    uint64_t free0 = a->hdr->heap.free_pages, frees0 = a->hdr->stats.large_frees;
    for (unsigned i = 0; i < 8; i++)
        CU_ASSERT_EQUAL(shm_lpool_free(a->base, fx_span(a, ids[i])), SHM_LFREE_POOLED);
    CU_ASSERT_EQUAL(a->hdr->heap.free_pages, free0);           /* pooled: not free */
    uint32_t bad = 0;
    CU_ASSERT_EQUAL(spd_lpool_drain(a, 6 - SHM_LPOOL_MIN_PAGES, &bad), 3);  /* 1, 4, 7 */
    CU_ASSERT_EQUAL(xpages(a), pages - 3 * 6);
    VERIFY_OK(a);
    CU_ASSERT_EQUAL(spd_lpool_drain_all(a, &bad), 5);
    CU_ASSERT_EQUAL(bad, 0);
    CU_ASSERT_EQUAL(xpages(a), 0);
    CU_ASSERT_EQUAL(a->hdr->heap.free_pages, free0 + pages);
    CU_ASSERT_EQUAL(a->hdr->stats.large_frees, frees0 + 8);
    CU_ASSERT_EQUAL(pop_id(a, 5), 0);
    VERIFY_OK(a);
    /* a broken link stops the walk, counted, without touching the heap */
    shm_spanid_t x = large(a, 9), y = large(a, 9);
    shm_lpool_free(a->base, fx_span(a, x));
    shm_lpool_free(a->base, fx_span(a, y));
    shm_store_relaxed(&fx_span(a, y)->xlarge, 999999);
    CU_ASSERT_EQUAL(spd_lpool_drain(a, 9 - SHM_LPOOL_MIN_PAGES, &bad), 1);
    CU_ASSERT_EQUAL(bad, 1);
}

/* Batches: a thread cache's spans pushed with one CAS; a pop takes what
 * it has room for (the first allocated, the rest CACHED for its session)
 * and gives the rest back as a batch; the cap counts a batch whole; the
 * drain and the verifier walk batches. */
static void test_batches(void)
{
    shm_arena_t *a = pool_arena(40);
    shm_spanid_t ids[5];
    shm_span_t *v[5];
    for (unsigned i = 0; i < 5; i++) {
        ids[i] = large(a, 6);
        v[i] = fx_span(a, ids[i]);
        shm_store_relaxed(&v[i]->xowner, SHM_LARGE_CACHED);
    }
    shm_spanid_t lone = large(a, 6);
    CU_ASSERT_EQUAL(shm_lpool_free(a->base, fx_span(a, lone)), SHM_LFREE_POOLED);
    CU_ASSERT_TRUE(shm_lpool_push_cached(a->base, v, 4));
    CU_ASSERT_EQUAL(xpages(a), 5 * 6);
    CU_ASSERT_TRUE(shm_lpool_push_cached(a->base, &v[4], 1));   /* 36 of 40 pages */
    CU_ASSERT_EQUAL(tag(a, ids[4]), SHM_LARGE_POOLED);
    /* over the cap: nothing changes */
    shm_spanid_t over = large(a, 6);
    shm_span_t *o = fx_span(a, over);
    shm_store_relaxed(&o->xowner, SHM_LARGE_CACHED);
    CU_ASSERT_FALSE(shm_lpool_push_cached(a->base, &o, 1));
    CU_ASSERT_EQUAL(tag(a, over), SHM_LARGE_CACHED);
    CU_ASSERT_EQUAL(xpages(a), 6 * 6);
    shm_store_relaxed(&o->xowner, 0);                 /* allocated again */
    CU_ASSERT_EQUAL(shm_load_relaxed(&a->hdr->lpool.bucket[1].xpushes), 6);
    VERIFY_OK(a);
    shm_span_t *got[4];
    shm_spanid_t bad;
    /* the top batch is ids[4] alone */
    CU_ASSERT_EQUAL(shm_lpool_pop_batch(a->base, 6, got, 4, 9, &bad), 1);
    CU_ASSERT(got[0] == v[4] && bad == 0 && tag(a, ids[4]) == 0);
    /* then ids[0..3]: two taken, two back as a batch on top */
    CU_ASSERT_EQUAL(shm_lpool_pop_batch(a->base, 6, got, 2, 9, &bad), 2);
    CU_ASSERT(got[0] == v[0] && got[1] == v[1]);
    CU_ASSERT_EQUAL(tag(a, ids[0]), 0);
    CU_ASSERT_EQUAL(shm_load_relaxed(&v[0]->xlarge), 0);
    CU_ASSERT_EQUAL(tag(a, ids[1]), SHM_LARGE_CACHED);
    CU_ASSERT_EQUAL(shm_load_relaxed(&v[1]->xlarge), 9);
    shm_store_relaxed(&v[1]->xowner, 0);             /* its thread allocates it */
    CU_ASSERT_EQUAL(xpages(a), 3 * 6);
    CU_ASSERT_EQUAL(shm_load_relaxed(&a->hdr->lpool.bucket[1].xpops), 3);
    CU_ASSERT_EQUAL(shm_load_relaxed(&a->hdr->lpool.bucket[1].xpushes), 6);
    VERIFY_OK(a);
    CU_ASSERT_EQUAL(pop_id(a, 6), ids[2]);
    /* ids[3] is back alone, a batch over lone's: a second span in its
     * batch that links to another batch is corrupt */
    uint64_t link = shm_load_relaxed(&v[3]->xlarge);
    CU_ASSERT_EQUAL(link, (uint64_t)lone << 32);
    shm_store_relaxed(&v[3]->xlarge, link | ids[4]);
    shm_store_relaxed(&v[4]->xowner, SHM_LARGE_POOLED);
    shm_store_relaxed(&v[4]->xlarge, (uint64_t)lone << 32);
    char m[256];
    CU_ASSERT_NOT_EQUAL(spd_heap_verify(a, m, sizeof m), 0);
    CU_ASSERT(strstr(m, "inside a batch links") != NULL);
    shm_store_relaxed(&v[3]->xlarge, link);
    shm_store_relaxed(&v[4]->xowner, 0);
    shm_store_relaxed(&v[4]->xlarge, 0);
    VERIFY_OK(a);
    /* a corrupt batch that links back to a span it holds: the pop stops
     * there and hands out no span twice */
    shm_spanid_t c1 = large(a, 6), c2 = large(a, 6);
    shm_span_t *cv[2] = { fx_span(a, c1), fx_span(a, c2) };
    shm_store_relaxed(&cv[0]->xowner, SHM_LARGE_CACHED);
    shm_store_relaxed(&cv[1]->xowner, SHM_LARGE_CACHED);
    CU_ASSERT_TRUE(shm_lpool_push_cached(a->base, cv, 2));
    shm_store_relaxed(&cv[1]->xlarge, c1);              /* c1 -> c2 -> c1 */
    CU_ASSERT_EQUAL(shm_lpool_pop_batch(a->base, 6, got, 4, 9, &bad), 2);
    CU_ASSERT(got[0] == cv[0] && got[1] == cv[1]);
    CU_ASSERT_EQUAL(bad, c1);
    CU_ASSERT_EQUAL(tag(a, c1), 0);
    CU_ASSERT_EQUAL(tag(a, c2), SHM_LARGE_CACHED);
    shm_store_relaxed(&cv[1]->xowner, 0);
    shm_store_relaxed(&cv[1]->xlarge, 0);
    /* the drain takes every batch: ids[3], then lone */
    uint32_t nbad = 0;
    CU_ASSERT_EQUAL(spd_lpool_drain(a, 6 - SHM_LPOOL_MIN_PAGES, &nbad), 2);
    CU_ASSERT_EQUAL(nbad, 0);
    CU_ASSERT_EQUAL(xpages(a), 0);
    CU_ASSERT_EQUAL(tag(a, lone), 0);                   /* freed: FREE, tag 0 */
    VERIFY_OK(a);
}

/* A batch's first span carries every span's id in its descriptor (the
 * hint a pop prefetches their descriptors from), the rest of the batch
 * given back by a pop too; the spans' pages are not written; a hint that
 * lies changes nothing a pop returns: the links are the truth. */
static void test_batch_hint(void)
{
    shm_arena_t *a = pool_arena(100);
    shm_spanid_t ids[4], other = large(a, 6);
    shm_span_t *v[4];
    for (unsigned i = 0; i < 4; i++) {
        ids[i] = large(a, 6);
        v[i] = fx_span(a, ids[i]);
        shm_store_relaxed(&v[i]->xowner, SHM_LARGE_CACHED);
        memset(fx_addr(a, ids[i]), 0xa5, 64);
    }
    CU_ASSERT_TRUE_FATAL(shm_lpool_push_cached(a->base, v, 4));
    for (unsigned k = 0; k < SHM_LPOOL_BATCH_MAX; k++)
        CU_ASSERT_EQUAL(shm_load_relaxed(&v[0]->xhint[k]), k < 4 ? ids[k] : 0);
    for (unsigned i = 0; i < 4; i++)
        for (unsigned k = 0; k < 64; k++)
            CU_ASSERT_EQUAL(fx_addr(a, ids[i])[k], 0xa5);
    shm_span_t *got[4];
    shm_spanid_t bad;
    CU_ASSERT_EQUAL(shm_lpool_pop_batch(a->base, 6, got, 1, 9, &bad), 1);
    CU_ASSERT(got[0] == v[0] && bad == 0);
    for (unsigned k = 0; k < SHM_LPOOL_BATCH_MAX; k++)  /* the rest, given back */
        CU_ASSERT_EQUAL(shm_load_relaxed(&v[1]->xhint[k]), k < 3 ? ids[k + 1] : 0);
    /* lies: past the descriptors, a span not in the batch, one twice */
    shm_store_relaxed(&v[1]->xhint[1], 0xfffffff0u);
    shm_store_relaxed(&v[1]->xhint[2], other);
    shm_store_relaxed(&v[1]->xhint[3], ids[1]);
    shm_store_relaxed(&v[1]->xhint[4], ids[2]);
    CU_ASSERT_EQUAL(shm_lpool_pop_batch(a->base, 6, got, 4, 9, &bad), 3);
    CU_ASSERT(got[0] == v[1] && got[1] == v[2] && got[2] == v[3] && bad == 0);
    CU_ASSERT_EQUAL(tag(a, other), 0);                  /* untouched */
    CU_ASSERT_EQUAL(tag(a, ids[2]), SHM_LARGE_CACHED);
    CU_ASSERT_EQUAL(xpages(a), 0);
    shm_store_relaxed(&v[2]->xowner, 0);
    shm_store_relaxed(&v[3]->xowner, 0);
    VERIFY_OK(a);
}

/* ---- processes at once ---- */

#define ST_SPANS   96u
#define ST_PROCS   4u
#define ST_ROUNDS  20000u

/* The word of a span's memory a child claims it by: its first (the pool
 * writes nothing into a pooled span's pages, shm/lpool.h). */
static _Atomic uint32_t *stress_mark(shm_arena_t *a, shm_span_t *s)
{
    return (_Atomic uint32_t *)shm_span_addr(a->base, s);
}

/* Claim span s for this child: its mark 0 -> our pid (nobody else may have
 * it).  Exit 4 if someone has it. */
static void stress_claim(shm_arena_t *a, shm_span_t *s, uint32_t me)
{
    _Atomic uint32_t *mark = stress_mark(a, s);
    uint32_t zero = 0;
    if (!atomic_compare_exchange_strong(mark, &zero, me))
        _exit(4);                              /* handed out twice */
}

static void stress_unclaim(shm_arena_t *a, shm_span_t *s)
{
    atomic_store(stress_mark(a, s), 0);
}

/* Free held[n-1], and in batch mode every other held span of its size with
 * it, as a client thread's cache does (tag CACHED, then one batch). */
static void stress_free(shm_arena_t *a, shm_span_t **held, unsigned *n, bool batches)
{
    shm_span_t *s = held[--*n];
    stress_unclaim(a, s);
    if (!batches) {
        if (shm_lpool_free(a->base, s) != SHM_LFREE_POOLED)
            _exit(5);
        return;
    }
    shm_span_t *v[8];
    unsigned m = 0;
    v[m++] = s;
    for (unsigned k = 0; k < *n;) {
        if (held[k]->npages == s->npages) {
            stress_unclaim(a, held[k]);
            v[m++] = held[k];
            held[k] = held[--*n];
        } else {
            k++;
        }
    }
    for (unsigned k = 0; k < m; k++) {
        uint32_t tag = shm_load_relaxed(&v[k]->xowner);
        if (tag == 0)
            shm_store_relaxed(&v[k]->xowner, SHM_LARGE_CACHED);   /* the free's CAS */
        else if (tag != SHM_LARGE_CACHED)
            _exit(6);
    }
    if (!shm_lpool_push_cached(a->base, v, m))
        _exit(5);
}

/* One child: pop from random buckets of 5..8 pages, claim what it got, keep
 * up to 8 at a time, free them back; one span at a time, or (batches)
 * whole batches as client thread caches do.  Exit 0, or a code that says
 * what went wrong. */
/* The start gate of the stress children (MAP_SHARED): each waits until the
 * parent has forked them all, so that they run at once, not one after
 * another in their first timeslices. */
static _Atomic int *st_gate;

static void stress_child(shm_arena_t *a, unsigned seed, bool batches)
{
    while (!atomic_load(st_gate))
        sched_yield();
    fx_seed(seed);
    shm_span_t *held[8];
    unsigned n = 0;
    uint32_t me = (uint32_t)getpid();
    for (unsigned r = 0; r < ST_ROUNDS; r++) {
        if (n < 8 && (fx_rand() & 1)) {
            shm_spanid_t bad;
            shm_span_t *got[8];
            uint32_t want = batches ? 8 - n : 1;
            uint32_t m = shm_lpool_pop_batch(a->base, 5 + fx_rand() % 4, got, want, 7, &bad);
            if (bad != 0)
                _exit(3);
            for (uint32_t k = 0; k < m; k++) {
                if (shm_load_relaxed(&got[k]->xowner) != (k == 0 ? 0 : SHM_LARGE_CACHED) ||
                    (k > 0 && shm_load_relaxed(&got[k]->xlarge) != 7))
                    _exit(7);
                stress_claim(a, got[k], me);
                held[n++] = got[k];
            }
        } else if (n > 0) {
            stress_free(a, held, &n, batches);
        }
    }
    while (n > 0)
        stress_free(a, held, &n, batches);
    _exit(0);
}

/* Reap child `pid` within 60 s, else kill it.  0, or -1 if killed. */
static int reap(pid_t pid, int *status)
{
    for (unsigned ms = 0; ms < 60000; ms += 10) {
        if (waitpid(pid, status, WNOHANG) == pid)
            return 0;
        usleep(10000);
    }
    kill(pid, SIGKILL);
    waitpid(pid, status, 0);
    return -1;
}

static void test_processes(void)
{
    shm_arena_t *a = pool_arena(4096);
    shm_spanid_t ids[ST_SPANS];
    uint64_t pages = 0;
    for (unsigned i = 0; i < ST_SPANS; i++) {
        ids[i] = large(a, 5 + i % 4);
        atomic_store(stress_mark(a, fx_span(a, ids[i])), 0);
        pages += fx_span(a, ids[i])->npages;
    }
    for (unsigned i = 0; i < ST_SPANS; i++)
        CU_ASSERT_EQUAL(shm_lpool_free(a->base, fx_span(a, ids[i])), SHM_LFREE_POOLED);
    pid_t kids[ST_PROCS];
    st_gate = mmap(NULL, sizeof *st_gate, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS,
                   -1, 0);
    CU_ASSERT_FATAL(st_gate != MAP_FAILED);
    atomic_store(st_gate, 0);
    fflush(NULL);
    for (unsigned k = 0; k < ST_PROCS; k++) {
        kids[k] = fork();
        CU_ASSERT_FATAL(kids[k] >= 0);
        if (kids[k] == 0)
            stress_child(a, 1000 + k, k % 2 == 1);   /* two of each */
    }
    atomic_store(st_gate, 1);                       /* all at once */
    for (unsigned k = 0; k < ST_PROCS; k++) {
        int status = -1;
        if (reap(kids[k], &status) != 0)
            CU_FAIL("a stress child did not finish in time");
        if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
            fprintf(stderr, "\n    stress child %u: status %#x\n", k, status);
        CU_ASSERT(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    }
    /* every span back in the pool exactly once (the verifier checks the
     * chains: no cycle, no span twice, the pages add up to xpages) */
    CU_ASSERT_EQUAL(xpages(a), pages);
    VERIFY_OK(a);
    uint8_t *seen = calloc(a->hdr->spanalloc.hwm, 1);
    CU_ASSERT_PTR_NOT_NULL_FATAL(seen);
    unsigned total = 0;
    for (uint32_t np = 5; np <= 8; np++) {
        shm_spanid_t id;
        while ((id = pop_id(a, np)) != 0) {
            CU_ASSERT_EQUAL(fx_span(a, id)->npages, np);
            CU_ASSERT_EQUAL(seen[id], 0);
            seen[id] = 1;
            total++;
        }
    }
    for (unsigned i = 0; i < ST_SPANS; i++)
        CU_ASSERT_EQUAL(seen[ids[i]], 1);
    CU_ASSERT_EQUAL(total, ST_SPANS);
    CU_ASSERT_EQUAL(xpages(a), 0);
    uint64_t pushes = 0, pops = 0;
    for (unsigned b = 0; b < SHM_LPOOL_NBUCKETS; b++) {
        pushes += a->hdr->lpool.bucket[b].xpushes;
        pops += a->hdr->lpool.bucket[b].xpops;
    }
    CU_ASSERT_EQUAL(pushes, pops);
    CU_ASSERT(pops > ST_SPANS * 10);               /* the pool was used hard */
    munmap((void *)st_gate, sizeof *st_gate);
    free(seen);
    VERIFY_OK(a);
}

CU_TestInfo lpool_tests[] = {
    { "pops in LIFO order, per page count", test_lifo },
    { "the head's generation defeats ABA", test_aba },
    { "a double free fails the tag's CAS", test_double_free },
    { "the cap and the sizes the pool takes", test_cap },
    { "batches pushed, popped in part, drained", test_batches },
    { "a batch's hint: written, given back, and lies change nothing", test_batch_hint },
    { "draining buckets back to the heap", test_drain },
    { "processes pushing and popping at once", test_processes },
    CU_TEST_INFO_NULL,
};

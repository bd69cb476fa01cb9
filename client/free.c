/* See shm/layout.h for the overview; doc/design.md section 3 for the client.
 *
 * Frees that are not the fast case of client/cache.h: objects of spans this
 * thread does not hold (remote push, one CAS), tiny pieces (atomic count),
 * large objects (the large pool, or FreeLarge), and everything that is not
 * a live object (a message naming the pointer, then abort, as glibc does).
 */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "client/cache.h"
#include "shm/lpool.h"

void spci_bogus_free(const char *fn, const void *p, const char *why)
{
    char msg[256];
    int n = snprintf(msg, sizeof msg, "spanclient: %s(%p): %s (pid %ld)\n", fn, p, why,
                     (long)getpid());
    if (n > 0) {
        ssize_t w = write(STDERR_FILENO, msg, (size_t)n < sizeof msg ? (size_t)n : sizeof msg - 1);
        (void)w;
    }
    if (spci_proc.log)
        spci_proc.log(msg, spci_proc.log_arg);
    abort();
}

shm_bad_t spci_check(const void *p, shm_span_t **span, uint32_t *index)
{
    if (spci_map.base == NULL)
        return SHM_PTR_OUTSIDE;
    return shm_ptr_check(spci_map.base, p, span, index);
}

/* The reason of a failed check, in the words of a free. */
static const char *free_reason(shm_bad_t why)
{
    if (why == SHM_PTR_NO_SPAN)
        return "not an allocated object (double free of a large object, or never "
               "allocated)";
    if (why == SHM_PTR_NOT_ALLOCATED)
        return "double free detected (the object is not allocated)";
    return shm_bad_str(why);
}

/* ---- remote frees, batched per span (spci_rfree_t in cache.h) ---- */

/* Is e the batch of span s as s is now, not of an earlier span that had
 * the same descriptor (xcut, shm/layout.h)? */
static inline bool rfree_is_for(const spci_rfree_t *e, const shm_span_t *s)
{
    return e->span == s && e->cut == shm_load_relaxed(&s->xcut);
}

/* Test the alloc bit of every object waiting in e, then push them
 * (shm_remote_push_checked: a run of consecutive objects, the common
 * batch, a bitmap word at a time and as one record).  The
 * bits were not tested at the frees: a bit written by the holder's core is
 * a cache miss, and here a batch pays it once a bitmap line.  (Prefetching
 * the line at each free, as this did once, made it worse: it pulled the
 * line the holder was writing away from it at every free, and w5 ran 1.2x
 * to 1.3x faster without.)  A clear bit is a double free in this process:
 * it aborts here, naming the object. */
static void rfree_push(spci_rfree_t *e)
{
    shm_span_t *s = e->span;
    uint8_t *base = spci_map.base;
    if (SPCI_UNLIKELY(!rfree_is_for(e, s)))
        spci_bogus_free("spc_free", base + e->first + (uint64_t)e->idx[0] * e->size,
                        "double free detected (the object's span was emptied and "
                        "reused while this thread's frees into it were waiting: one "
                        "of them freed an object that was free already)");
    uint32_t k = shm_remote_push_checked(base, s, e->idx, e->n);
    if (SPCI_UNLIKELY(k < e->n))
        spci_bogus_free("spc_free", base + e->first + (uint64_t)e->idx[k] * e->size,
                        free_reason(SHM_PTR_NOT_ALLOCATED));
    e->span = NULL;
}

void spci_rfree_flush(spci_cache_t *c)
{
    for (unsigned k = 0; k < SPCI_RFREE_SLOTS; k++)
        if (c->rfree[k].span != NULL)
            rfree_push(&c->rfree[k]);
}

/* Is object i waiting in e already?  Asked only when its mask bit is set. */
static bool rfree_has(const spci_rfree_t *e, uint32_t i)
{
    for (uint32_t k = 0; k < e->n; k++)
        if (e->idx[k] == i)
            return true;
    return false;
}

/* rfree_add's rare cases: i's mask bit is set (maybe a second free of i in
 * this thread), or i fills the batch, which is then pushed. */
static __attribute__((noinline)) void rfree_add_slow(spci_rfree_t *e, uint32_t i, void *p)
{
    uint64_t bit = 1ull << (i & 63);
    if ((e->mask & bit) && rfree_has(e, i))
        spci_bogus_free("spc_free", p, "double free detected (this thread freed it "
                        "already)");
    e->idx[e->n] = (uint16_t)i;
    e->mask |= bit;
    if (++e->n == e->cap)
        rfree_push(e);
}

/* Add object i at p to e, the batch of its span.  The common case stores
 * three fields; everything else is a tail call, so that a caller whose
 * other calls are tail calls too saves no register (spci_free_other). */
static inline void rfree_add(spci_rfree_t *e, uint32_t i, void *p)
{
    uint64_t bit = 1ull << (i & 63);
    uint32_t n = e->n;
    if (SPCI_UNLIKELY((e->mask & bit) || n + 1 == e->cap)) {
        rfree_add_slow(e, i, p);
        return;
    }
    e->idx[n] = (uint16_t)i;
    e->mask |= bit;
    e->n = n + 1;
}

/* Free object i (checked allocated) at p of span s, which this thread does
 * not hold: into the thread's batch for s.  Its bit stays set until the
 * holder drains the stack, so a second free of p anywhere else still passes
 * the check; a second free in this thread is caught here. */
static void remote_free(spci_cache_t *c, shm_span_t *s, uint32_t i, void *p)
{
    if (SPCI_UNLIKELY(c == &spci_empty_cache) && (c = spci_cache_create()) == NULL) {
        shm_remote_push(spci_map.base, s, p);     /* no cache to wait in */
        return;
    }
    spci_rfree_t *e = spci_rfree_slot(c, s);
    if (!rfree_is_for(e, s)) {
        if (e->span != NULL)
            rfree_push(e);              /* aborts if s was cut again */
        unsigned cls = s->sizeclass;
        e->span = s;
        e->mask = 0;
        e->n = 0;
        e->divmul = shm_classes[cls].divmul;
        e->size = shm_classes[cls].size;
        e->nelems = cls == SHM_CLASS_TINY ? 0 : s->nelems;
        e->first = (uint64_t)s->start << SHM_PAGE_SHIFT;
        e->cap = SPCI_RFREE_BYTES / e->size < SPCI_RFREE_BATCH ? SPCI_RFREE_BYTES / e->size
                                                                : SPCI_RFREE_BATCH;
        e->cut = shm_load_relaxed(&s->xcut);
    }
    rfree_add(e, i, p);
    if (SPCI_UNLIKELY(shm_load_relaxed(&spci_exiting)) && e->span != NULL)
        rfree_push(e);                  /* nothing would push it later */
}

void spci_tiny_block_free(spci_cache_t *c, shm_span_t *s, uint32_t i)
{
    if (shm_load_relaxed(&s->xowner) == c->tid)
        spci_free_owned(c, s, i);
    else
        remote_free(c, s, i, shm_page_addr(spci_map.base, s->start) + (uint64_t)i * 16);
}

/* One piece of tiny block i: check its granule, then one atomic decrement;
 * whoever takes the count to zero frees the block. */
static void tiny_free(void *p, shm_span_t *s, uint32_t i)
{
    _Atomic uint8_t *cnt = shm_tiny_count(spci_map.base, s, i);
    uint8_t v = shm_load_relaxed(cnt);
    unsigned g = 1u << (v >> 6);
    if ((v & SPCI_TINY_COUNT_MASK) == 0)
        spci_bogus_free("spc_free", p, free_reason(SHM_PTR_NOT_ALLOCATED));
    if (((uintptr_t)p & 15u & (g - 1)) != 0)
        spci_bogus_free("spc_free", p, shm_bad_str(SHM_PTR_NOT_START));
    uint8_t old = shm_fetch_sub_acq_rel(cnt, 1);
    if ((old & SPCI_TINY_COUNT_MASK) == 0)
        spci_bogus_free("spc_free", p, free_reason(SHM_PTR_NOT_ALLOCATED));
    if ((old & SPCI_TINY_COUNT_MASK) == 1)
        spci_tiny_block_free(spci_tls.tc, s, i);
}

#define LARGE_TWICE "double free of a large object (it is in the large pool or a " \
                    "thread's cache already, or another free of it is under way)"

/* A large object that this thread does not keep goes to the large pool
 * (shm/lpool.h) when there is room and the pool takes its size: no round
 * trip.  The tag (xowner) CAS catches a double free at once, whichever
 * process freed it first.  Otherwise, tagged RETURNING, it goes back by
 * FreeLarge, without waiting for the answer (client/rpc.c): a refused free
 * aborts at this process's next request or detach.  When an earlier free of
 * the same object is still unanswered, rpc.c reads that answer first and we
 * look again: still a large object starting at p means another process got
 * those pages as a new large object meanwhile; anything else is a double
 * free. */
static void large_free_shared(void *p, shm_span_t *s)
{
    switch (shm_lpool_free(spci_map.base, s)) {
    case SHM_LFREE_POOLED:
        return;
    case SHM_LFREE_TWICE:
        spci_bogus_free("spc_free", p, LARGE_TWICE);
    case SHM_LFREE_RETURN:
        break;
    }
    uint64_t off = (uint64_t)((uint8_t *)p - spci_map.base);
    pthread_mutex_lock(&spci_proc.lock);
    int rc = spci_ensure_attached();
    while (rc == 0 && (rc = spci_rpc_free_large_locked(off)) == -EAGAIN) {
        shm_span_t *now;
        uint32_t i;
        shm_bad_t why = spci_check(p, &now, &i);
        if (why == SHM_PTR_OK && shm_load_acquire(&now->xstate) != SHM_SPAN_LARGE)
            why = SHM_PTR_NO_SPAN;
        if (why != SHM_PTR_OK) {
            pthread_mutex_unlock(&spci_proc.lock);
            spci_bogus_free("spc_free", p, free_reason(why));
        }
        rc = 0;
    }
    pthread_mutex_unlock(&spci_proc.lock);
    if (rc != 0)
        spci_log("FreeLarge of %p failed: %s; the object stays allocated", p,
                 strerror(-rc));
}

/* Free large span s at p: kept in this thread's cache (the pool would take
 * its size, so --large-pool 0 turns this off too), with one CAS of its tag
 * 0 -> CACHED, which catches a double free as the pool's does.  A full
 * cache first gives the pool every span it keeps of s's size, s with them,
 * as one batch (one CAS: a thread that only frees, the consumer of a
 * producer, pays the shared lines once a batch); s alone when it keeps none
 * of that size, or when the pool is full (then large_free_shared). */
static void large_free(void *p, shm_span_t *s)
{
    spci_cache_t *c = spci_tls.tc;
    if (shm_lpool_bucket(spci_map.base, s->npages) == NULL ||
        (c == &spci_empty_cache && (c = spci_cache_create()) == NULL)) {
        large_free_shared(p, s);
        return;
    }
    uint32_t tag = 0;
    if (!shm_cas_strong_acq_rel(&s->xowner, &tag, SHM_LARGE_CACHED))
        spci_bogus_free("spc_free", p, LARGE_TWICE);
    /* whose cache: the daemon frees it when this session ends unflushed */
    shm_store_relaxed(&s->xlarge, spci_proc.session);
    for (unsigned k = 0; k < SPCI_LCACHE_SLOTS; k++) {
        if (c->lcache[k] == NULL) {
            c->lcache[k] = s;
            return;
        }
    }
    shm_span_t *batch[SPCI_LCACHE_SLOTS + 1];
    unsigned n = 0, taken[SPCI_LCACHE_SLOTS];
    for (unsigned k = 0; k < SPCI_LCACHE_SLOTS; k++)
        if (c->lcache[k]->npages == s->npages)
            taken[n] = k, batch[n++] = c->lcache[k];
    batch[n++] = s;
    if (shm_lpool_push_cached(spci_map.base, batch, n)) {
        for (unsigned k = 0; k + 1 < n; k++)
            c->lcache[taken[k]] = NULL;
        return;
    }
    spci_uncache_large(s);                      /* then a free of its own */
    large_free_shared(p, s);
}

void spci_lcache_flush(spci_cache_t *c)
{
    for (unsigned k = 0; k < SPCI_LCACHE_SLOTS; k++) {
        shm_span_t *s = c->lcache[k];
        if (s == NULL)
            continue;
        c->lcache[k] = NULL;
        if (spci_map.base == NULL)
            continue;                           /* unmapped: nothing to give */
        spci_uncache_large(s);                  /* then a free of its own */
        large_free_shared(shm_span_addr(spci_map.base, s), s);
    }
}

/* The free fast path found p's span (off is p's offset, inside the data
 * pages) held by someone else: the common remote free without checking
 * again what the fast path checked.  Anything unusual goes to
 * spci_free_slow, which checks everything from scratch. */
static void free_other_unbatched(void *p, shm_span_t *s, uint64_t off, spci_cache_t *c);

void spci_free_other(void *p, shm_span_t *s, uint64_t off, spci_cache_t *c)
{
    spci_rfree_t *e = spci_rfree_slot(c, s);
    __asm__("" : "+r"(e));              /* one register: with the slot's index
                                           kept apart, the compiler ran out of
                                           scratch registers and saved three */
    if (SPCI_LIKELY(rfree_is_for(e, s))) {  /* its batch is open: shape known */
        uint64_t rel = off - e->first;
        uint64_t prod = rel * e->divmul;
        uint32_t i = (uint32_t)(prod >> 32);
        if (SPCI_LIKELY(i < e->nelems && shm_obj_starts(prod, e->divmul))) {
            rfree_add(e, i, p);         /* its bit is tested at the push */
            return;
        }
    }
    free_other_unbatched(p, s, off, c); /* every call out of here is a tail
                                           call: the common case saves no
                                           register */
}

/* spci_free_other for a free that no open batch of this thread takes. */
static __attribute__((noinline)) void free_other_unbatched(void *p, shm_span_t *s, uint64_t off,
                                                          spci_cache_t *c)
{
    uint8_t state = shm_load_acquire(&s->xstate);
    if (state == SHM_SPAN_LARGE) {      /* its start: the tag CAS checks the rest */
        if (SPCI_LIKELY(off == (uint64_t)s->start << SHM_PAGE_SHIFT)) {
            large_free(p, s);
            return;
        }
        spci_free_slow(p);              /* inside one: reports it */
        return;
    }
    unsigned cls = s->sizeclass;
    if (SPCI_UNLIKELY((state != SHM_SPAN_HELD && state != SHM_SPAN_CENTRAL) ||
                      cls == SHM_CLASS_TINY || c == &spci_empty_cache)) {
        spci_free_slow(p);              /* large, tiny, bogus; or no cache yet */
        return;
    }
    uint64_t rel = off - ((uint64_t)s->start << SHM_PAGE_SHIFT);
    const spci_bin_t *b = &c->bins[cls];
    uint64_t prod = rel * b->divmul;
    uint32_t i = (uint32_t)(prod >> 32);
    if (SPCI_UNLIKELY(rel >= ((uint64_t)s->npages << SHM_PAGE_SHIFT) ||
                      i >= s->nelems || !shm_obj_starts(prod, b->divmul))) {
        spci_free_slow(p);              /* reports it */
        return;
    }
    remote_free(c, s, i, p);            /* its bit is tested at the push */
}

void spci_free_slow(void *p)
{
    if (spci_map.base == NULL && spci_ensure_attached() != 0)
        spci_bogus_free("spc_free", p, "not attached to a spand arena, and attaching failed");
    shm_span_t *s;
    uint32_t i;
    shm_bad_t why = shm_ptr_locate(spci_map.base, p, &s, &i);
    if (why != SHM_PTR_OK)
        spci_bogus_free("spc_free", p, free_reason(why));
    if (shm_load_acquire(&s->xstate) == SHM_SPAN_LARGE) {
        large_free(p, s);
        return;
    }
    spci_cache_t *c = spci_tls.tc;
    if (shm_load_relaxed(&s->xowner) != c->tid && s->sizeclass != SHM_CLASS_TINY) {
        remote_free(c, s, i, p);        /* its bit is tested at the push */
        return;
    }
    if (!shm_bit_test(shm_span_bitmap(spci_map.base, s), i))
        spci_bogus_free("spc_free", p, free_reason(SHM_PTR_NOT_ALLOCATED));
    if (s->sizeclass == SHM_CLASS_TINY)
        tiny_free(p, s, i);
    else
        spci_free_owned(c, s, i);
}

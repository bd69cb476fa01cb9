/* See shm/lpool.h. */
#include "config.h"

#include "shm/lpool.h"
#include "shm/span.h"

/* Spans ids a descriptor of this arena can have: [1, max). */
static inline uint32_t id_limit(uint8_t *base)
{
    const shm_header_t *h = (const shm_header_t *)base;
    return (uint32_t)((h->data_off - h->spans_off) / sizeof(shm_span_t));
}

/* Push spans v[0..n), linked here and tagged POOLED by the caller, as one
 * batch: one CAS (release) of the head, retried only when another push or
 * pop won the race.  `count`: new pushes for xpushes (not the rest of a
 * batch a pop gives back).  A batch of more than one span also has every
 * span's id written into its first span's xhint (see shm_lpool_pop_batch),
 * before the release. */
static void push_batch(uint8_t *base, shm_lpool_bucket_t *b, shm_span_t *const *v, uint32_t n,
                       bool count)
{
    if (n > 1)
        for (uint32_t k = 0; k < SHM_LPOOL_BATCH_MAX; k++)
            shm_store_relaxed(&v[0]->xhint[k], k < n ? shm_span_id(base, v[k]) : 0);
    for (uint32_t k = 1; k < n; k++)
        shm_store_relaxed(&v[k]->xlarge, k + 1 < n ? (uint64_t)shm_span_id(base, v[k + 1]) : 0);
    uint64_t in_batch = n > 1 ? (uint64_t)shm_span_id(base, v[1]) : 0;
    shm_spanid_t id = shm_span_id(base, v[0]);
    uint64_t head = shm_load_relaxed(&b->xhead);
    do {
        shm_store_relaxed(&v[0]->xlarge, ((uint64_t)SHM_LPOOL_ID(head) << 32) | in_batch);
    } while (!shm_cas_weak_release(&b->xhead, &head, SHM_LPOOL_NEXT(head, id)));
    if (count)
        shm_fetch_add_relaxed(&b->xpushes, n);
}

shm_lfree_t shm_lpool_free(uint8_t *base, shm_span_t *s)
{
    shm_lpool_t *lp = &((shm_header_t *)base)->lpool;
    uint32_t n = s->npages;
    shm_lpool_bucket_t *b = shm_lpool_bucket(base, n);
    if (b != NULL && shm_fetch_add_relaxed(&lp->xpages, n) + n > lp->cap_pages) {
        shm_fetch_sub_relaxed(&lp->xpages, n);          /* full: back to the heap */
        b = NULL;
    }
    uint32_t tag = 0;
    if (!shm_cas_strong_acq_rel(&s->xowner, &tag,
                                b != NULL ? SHM_LARGE_POOLED : SHM_LARGE_RETURNING)) {
        if (b != NULL)
            shm_fetch_sub_relaxed(&lp->xpages, n);
        return SHM_LFREE_TWICE;
    }
    if (b == NULL)
        return SHM_LFREE_RETURN;
    push_batch(base, b, &s, 1, true);
    return SHM_LFREE_POOLED;
}

bool shm_lpool_push_cached(uint8_t *base, shm_span_t *const *v, uint32_t n)
{
    if (n == 0 || n > SHM_LPOOL_BATCH_MAX)
        return false;
    shm_lpool_t *lp = &((shm_header_t *)base)->lpool;
    uint64_t npages = v[0]->npages, pages = npages * n;
    shm_lpool_bucket_t *b = shm_lpool_bucket(base, npages);
    if (b == NULL)
        return false;
    if (shm_fetch_add_relaxed(&lp->xpages, pages) + pages > lp->cap_pages) {
        shm_fetch_sub_relaxed(&lp->xpages, pages);
        return false;
    }
    for (uint32_t k = 0; k < n; k++)
        shm_store_release(&v[k]->xowner, SHM_LARGE_POOLED);   /* CACHED -> POOLED */
    push_batch(base, b, v, n, true);
    return true;
}

uint32_t shm_lpool_pop_batch(uint8_t *base, uint64_t npages, shm_span_t **out, uint32_t max,
                             uint32_t session, shm_spanid_t *bad)
{
    *bad = 0;
    shm_lpool_bucket_t *b = shm_lpool_bucket(base, npages);
    if (b == NULL || max == 0)
        return 0;
    uint32_t limit = id_limit(base);
    shm_spanid_t id;
    uint64_t head = shm_load_acquire(&b->xhead), x;
    for (;;) {
        id = SHM_LPOOL_ID(head);
        if (id == 0)
            return 0;
        if (id >= limit) {
            *bad = id;       /* a head no push could have made: leave it */
            return 0;
        }
        /* the span may have been popped (even freed to the heap and reused)
         * since we loaded head: then the CAS fails, as the generation moved.
         * Its hint's line is fetched with its tag's, not after the CAS */
        __builtin_prefetch(&shm_span(base, id)->xhint[0], 0);
        x = shm_load_relaxed(&shm_span(base, id)->xlarge);
        if (shm_cas_strong_acq_rel(&b->xhead, &head, SHM_LPOOL_NEXT(head, SHM_LPOOL_NEXT_BATCH(x))))
            break;
    }
    /* the batch is ours alone now.  Its spans are linked through their
     * descriptors, each of which the freer's tag CAS last wrote: walking
     * the links waits for one line after another.  So first fetch them all
     * at once from the ids its pusher wrote into the first span's xhint: a
     * hint only (prefetches of whatever it says), the links stay the
     * truth */
    shm_span_t *first = shm_span(base, id);
    if (SHM_LPOOL_IN_BATCH(x) != 0) {
        for (uint32_t k = 1; k < SHM_LPOOL_BATCH_MAX && k < max; k++) {
            uint32_t h = shm_load_relaxed(&first->xhint[k]);
            if (h == 0 || h >= limit)
                break;
            __builtin_prefetch(shm_span(base, h), 1);
        }
    }
    uint32_t n = 0;
    while (id != 0) {
        shm_span_t *s = id < limit ? shm_span(base, id) : NULL;
        if (s == NULL || n == SHM_LPOOL_BATCH_MAX || !shm_lpool_is_pooled(s, npages)) {
            *bad = id;
            break;
        }
        shm_spanid_t next = SHM_LPOOL_IN_BATCH(shm_load_relaxed(&s->xlarge));
        if (n == max) {                 /* the rest, from s on, goes back */
            shm_span_t *rest[SHM_LPOOL_BATCH_MAX];
            uint32_t r = 0;
            for (shm_spanid_t k = id; k != 0 && k < limit && r < SHM_LPOOL_BATCH_MAX; r++) {
                rest[r] = shm_span(base, k);
                k = SHM_LPOOL_IN_BATCH(shm_load_relaxed(&rest[r]->xlarge));
            }
            push_batch(base, b, rest, r, false);
            break;
        }
        /* tagged at once: a corrupt batch that links to a span twice finds
         * it no longer POOLED the second time, and never hands it out twice */
        if (n == 0) {
            shm_store_relaxed(&s->xlarge, 0);
            shm_store_release(&s->xowner, 0);                  /* POOLED -> 0 */
        } else {
            shm_lpool_mark_cached(s, session);                 /* POOLED -> CACHED */
        }
        out[n++] = s;
        id = next;
    }
    if (n == 0)
        return 0;
    shm_fetch_add_relaxed(&b->xpops, n);
    shm_fetch_sub_relaxed(&((shm_header_t *)base)->lpool.xpages, n * npages);
    return n;
}

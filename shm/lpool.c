/* See shm/lpool.h. */
#include "config.h"

#include "shm/lpool.h"

/* Spans ids a descriptor of this arena can have: [1, max). */
static inline uint32_t id_limit(uint8_t *base)
{
    const shm_header_t *h = (const shm_header_t *)base;
    return (uint32_t)((h->data_off - h->spans_off) / sizeof(shm_span_t));
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
    shm_spanid_t id = shm_span_id(base, s);
    uint64_t head = shm_load_relaxed(&b->xhead);
    do {
        shm_store_relaxed(&s->xremote, (uint64_t)SHM_LPOOL_ID(head));
    } while (!shm_cas_weak_release(&b->xhead, &head, SHM_LPOOL_NEXT(head, id)));
    shm_fetch_add_relaxed(&b->xpushes, 1);
    return SHM_LFREE_POOLED;
}

shm_span_t *shm_lpool_pop(uint8_t *base, uint64_t npages, shm_spanid_t *bad)
{
    *bad = 0;
    shm_lpool_bucket_t *b = shm_lpool_bucket(base, npages);
    if (b == NULL)
        return NULL;
    uint32_t limit = id_limit(base);
    shm_spanid_t id;
    shm_span_t *s;
    uint64_t head = shm_load_acquire(&b->xhead);
    for (;;) {
        id = SHM_LPOOL_ID(head);
        if (id == 0)
            return NULL;
        if (id >= limit) {
            *bad = id;       /* a head no push could have made: leave it */
            return NULL;
        }
        s = shm_span(base, id);
        /* s may have been popped (even freed to the heap and reused) since
         * we loaded head: then the CAS fails, as the generation moved */
        shm_spanid_t next = (shm_spanid_t)shm_load_relaxed(&s->xremote);
        if (shm_cas_strong_acq_rel(&b->xhead, &head, SHM_LPOOL_NEXT(head, next)))
            break;
    }
    shm_fetch_add_relaxed(&b->xpops, 1);
    shm_fetch_sub_relaxed(&((shm_header_t *)base)->lpool.xpages, npages);
    if (shm_load_acquire(&s->xstate) != SHM_SPAN_LARGE || s->npages != npages ||
        shm_load_relaxed(&s->xowner) != SHM_LARGE_POOLED) {
        *bad = id;
        return NULL;
    }
    shm_store_relaxed(&s->xremote, 0);
    shm_store_release(&s->xowner, 0);
    return s;
}

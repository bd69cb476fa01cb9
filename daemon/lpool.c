/* See shm/layout.h for the overview; shm/lpool.h for the large pool.
 *
 * Draining a bucket: one CAS takes its whole chain of batches (head ->
 * generation + 1, empty), so clients pushing and popping meanwhile see an
 * empty bucket and the chain is the daemon's alone.  Each span is tagged RETURNING (as if a
 * client had sent FreeLarge), unreserved (xpages) and freed through
 * spd_heap_free_large, the path of FreeLarge: merged with its free
 * neighbours and counted in large_frees.
 */
#include "config.h"

#include "daemon/heap.h"
#include "daemon/lpool.h"
#include "shm/lpool.h"

uint32_t spd_lpool_drain(shm_arena_t *a, unsigned b, uint32_t *bad)
{
    shm_header_t *h = a->hdr;
    if (b >= SHM_LPOOL_NBUCKETS)
        return 0;
    shm_lpool_bucket_t *bk = &h->lpool.bucket[b];
    uint32_t npages = SHM_LPOOL_MIN_PAGES + b, hwm = h->spanalloc.hwm, freed = 0;
    uint64_t head = shm_load_acquire(&bk->xhead);
    do {
        if (SHM_LPOOL_ID(head) == 0)
            return 0;
    } while (!shm_cas_strong_acq_rel(&bk->xhead, &head, SHM_LPOOL_NEXT(head, 0)));
    /* batch after batch; n bounds the walk on a corrupt chain */
    shm_spanid_t batch = SHM_LPOOL_ID(head);
    for (uint32_t n = 0; batch != 0;) {
        shm_spanid_t id = batch;
        batch = 0;
        for (uint32_t k = 0; id != 0; k++, n++) {
            shm_span_t *s = id < hwm ? shm_span(a->base, id) : NULL;
            if (n >= hwm || k >= SHM_LPOOL_BATCH_MAX || s == NULL ||
                !shm_lpool_is_pooled(s, npages)) {
                (*bad)++;
                return freed;
            }
            uint64_t x = shm_load_relaxed(&s->xlarge);
            if (k == 0)
                batch = SHM_LPOOL_NEXT_BATCH(x);
            shm_store_relaxed(&s->xlarge, 0);
            /* the span is ours alone now; RETURNING (not 0) keeps a client's
             * double free of it failing its CAS until the heap has it */
            shm_store_release(&s->xowner, SHM_LARGE_RETURNING);
            shm_fetch_sub_relaxed(&h->lpool.xpages, npages);
            spd_heap_free_large(a, (uint64_t)s->start << SHM_PAGE_SHIFT);
            freed++;
            id = SHM_LPOOL_IN_BATCH(x);
        }
    }
    return freed;
}

uint32_t spd_lpool_drain_all(shm_arena_t *a, uint32_t *bad)
{
    uint32_t freed = 0;
    for (unsigned b = 0; b < SHM_LPOOL_NBUCKETS; b++)
        freed += spd_lpool_drain(a, b, bad);
    return freed;
}

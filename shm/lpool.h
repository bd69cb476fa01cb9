/* See shm/layout.h for the overview; doc/design.md section 1.11.
 *
 * The large pool: freed LARGE spans of SHM_LPOOL_MIN_PAGES..MAX_PAGES pages
 * that any process can take again without asking the daemon.  One Treiber
 * stack per page count (shm_lpool_bucket_t) of batches: a batch is 1 to
 * SHM_LPOOL_BATCH_MAX spans pushed and popped with one CAS, linked through
 * the spans' xlarge (SHM_LPOOL_IN_BATCH, SHM_LPOOL_NEXT_BATCH below), with
 * a generation in the head against ABA; the span's xowner
 * carries the large-object tag (SHM_LARGE_*, shm/layout.h) so that a double
 * free fails a CAS before anything is pushed.  Capacity is counted in
 * lpool.xpages and reserved before a push, so the pool never holds more
 * than cap_pages (pushes in flight included).
 *
 * Clients free into it (shm_lpool_free, shm_lpool_push_cached) and
 * allocate from it (shm_lpool_pop_batch); the daemon drains whole buckets
 * back to the heap (daemon/lpool.c).  Nothing in it belongs to a session:
 * a span popped by a process that then dies is an allocated large object
 * like any other.
 */
#ifndef SHM_LPOOL_H
#define SHM_LPOOL_H

#include <stdbool.h>
#include <stdint.h>

#include "shm/atomic.h"
#include "shm/layout.h"

#define SHM_LPOOL_ID(head)   ((shm_spanid_t)((head) & 0xffffffffu))
#define SHM_LPOOL_GEN(head)  ((uint64_t)(head) >> 32)
/* The head after `head` whose first span is `id`. */
#define SHM_LPOOL_NEXT(head, id) (((SHM_LPOOL_GEN(head) + 1) << 32) | (uint64_t)(id))

/* A POOLED span's xlarge: the next span of its batch (0: the batch's
 * last) and, on the first span of a batch, the first span of the next batch
 * on the bucket (0: the bucket's last).  Written by the pusher (relaxed,
 * before its CAS release of the head), read by a popper (relaxed, after its
 * acquire load of the head; a stale value fails the CAS) and by whoever
 * owns the batch after taking it (a pop, the daemon's drain). */
#define SHM_LPOOL_IN_BATCH(x)    ((shm_spanid_t)((x) & 0xffffffffu))
#define SHM_LPOOL_NEXT_BATCH(x)  ((shm_spanid_t)((uint64_t)(x) >> 32))
#define SHM_LPOOL_BATCH_MAX      16u   /* spans a batch may hold */
/* A batch of more than one span also carries its spans' ids, in order, 0
 * after the last, in its first span's descriptor (xhint, the line after
 * the tag's, which a large span has no other use for): the pusher writes
 * them before its CAS release; a popper prefetches that line with the
 * tag's before its CAS, and reads it after to prefetch every descriptor at
 * once, trusting only the links (shm/lpool.c, shm_lpool_pop_batch). */
_Static_assert(sizeof(((shm_span_t *)0)->xhint) / sizeof(uint32_t) == SHM_LPOOL_BATCH_MAX,
               "a batch's hint names every span of a full batch");

/* The bucket of spans of `npages` pages, or NULL when the pool is off or
 * takes no spans of that size. */
static inline shm_lpool_bucket_t *shm_lpool_bucket(uint8_t *base, uint64_t npages)
{
    shm_lpool_t *lp = &((shm_header_t *)base)->lpool;
    if (lp->cap_pages == 0 || npages < SHM_LPOOL_MIN_PAGES || npages > SHM_LPOOL_MAX_PAGES)
        return NULL;
    return &lp->bucket[npages - SHM_LPOOL_MIN_PAGES];
}

/* Tag LARGE span s CACHED for session `session` (shm/layout.h): the session
 * in xlarge first (relaxed), then the tag (release), so that whoever sees
 * the tag sees whose cache it is in.  A popper does it for the spans it
 * keeps, the daemon for AllocLarge's extra spans. */
static inline void shm_lpool_mark_cached(shm_span_t *s, uint32_t session)
{
    shm_store_relaxed(&s->xlarge, session);
    shm_store_release(&s->xowner, SHM_LARGE_CACHED);
}

/* Is s a LARGE span of npages pages tagged POOLED, as every span on the
 * bucket of npages must be?  What a pop and the daemon's drain check of
 * each span they take before they trust it. */
static inline bool shm_lpool_is_pooled(const shm_span_t *s, uint64_t npages)
{
    return shm_load_acquire(&s->xstate) == SHM_SPAN_LARGE && s->npages == npages &&
           shm_load_relaxed(&s->xowner) == SHM_LARGE_POOLED;
}

/* What shm_lpool_free did with a LARGE span. */
typedef enum shm_lfree_e {
    SHM_LFREE_POOLED = 0,  /* pushed on its bucket: nothing more to do */
    SHM_LFREE_RETURN,      /* tagged RETURNING: the caller sends FreeLarge */
    SHM_LFREE_TWICE,       /* the tag was not 0: a double free; nothing changed */
} shm_lfree_t;

/* Free LARGE span s (checked by shm_ptr_check): reserve its pages in
 * xpages (over cap_pages, or a size the pool does not take: no), claim it
 * with a CAS of xowner 0 -> POOLED (or -> RETURNING), then push it. */
shm_lfree_t shm_lpool_free(uint8_t *base, shm_span_t *s);

/* Push spans v[0..n) (1 <= n <= SHM_LPOOL_BATCH_MAX), all of one page
 * count the pool takes and all tagged CACHED by the calling thread (their
 * owner), as one batch: reserve their pages in xpages (over cap_pages:
 * false, nothing changed), tag them POOLED (store_release), one CAS. */
bool shm_lpool_push_cached(uint8_t *base, shm_span_t *const *v, uint32_t n);

/* Pop the top batch of spans of `npages` pages (one CAS) and take up to
 * `max` (>= 1) of its spans into out[]; a rest goes back as a batch of its
 * own (one more CAS).  out[0] comes back allocated (xowner 0), the others
 * tagged CACHED for the session `session` (xlarge), for the caller's
 * thread cache; every one with store_release.  Returns how many: 0 when the
 * bucket is empty or the pool takes no such size.  A link to a span that
 * is not a POOLED LARGE span of npages pages (which must never happen: the
 * pool is corrupt) ends the walk there, the rest of that batch is dropped
 * and *bad gets its id (else *bad = 0). */
uint32_t shm_lpool_pop_batch(uint8_t *base, uint64_t npages, shm_span_t **out, uint32_t max,
                             uint32_t session, shm_spanid_t *bad);

/* One span of `npages` pages, allocated: shm_lpool_pop_batch with max 1. */
static inline shm_span_t *shm_lpool_pop(uint8_t *base, uint64_t npages, shm_spanid_t *bad)
{
    shm_span_t *s;
    return shm_lpool_pop_batch(base, npages, &s, 1, 0, bad) ? s : NULL;
}

#endif /* SHM_LPOOL_H */

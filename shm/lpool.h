/* See shm/layout.h for the overview; doc/design.md section 1.11.
 *
 * The large pool: freed LARGE spans of SHM_LPOOL_MIN_PAGES..MAX_PAGES pages
 * that any process can take again without asking the daemon.  One Treiber
 * stack per page count (shm_lpool_bucket_t), linked through the spans'
 * xremote, with a generation in the head against ABA; the span's xowner
 * carries the large-object tag (SHM_LARGE_*, shm/layout.h) so that a double
 * free fails a CAS before anything is pushed.  Capacity is counted in
 * lpool.xpages and reserved before a push, so the pool never holds more
 * than cap_pages (pushes in flight included).
 *
 * Clients free into it (shm_lpool_free) and allocate from it
 * (shm_lpool_pop); the daemon drains whole buckets back to the heap
 * (daemon/lpool.c).  Nothing in it belongs to a session: a span popped by a
 * process that then dies is an allocated large object like any other.
 */
#ifndef SHM_LPOOL_H
#define SHM_LPOOL_H

#include <stdint.h>

#include "shm/atomic.h"
#include "shm/layout.h"

#define SHM_LPOOL_ID(head)   ((shm_spanid_t)((head) & 0xffffffffu))
#define SHM_LPOOL_GEN(head)  ((uint64_t)(head) >> 32)
/* The head after `head` whose first span is `id`. */
#define SHM_LPOOL_NEXT(head, id) (((SHM_LPOOL_GEN(head) + 1) << 32) | (uint64_t)(id))

/* The bucket of spans of `npages` pages, or NULL when the pool is off or
 * takes no spans of that size. */
static inline shm_lpool_bucket_t *shm_lpool_bucket(uint8_t *base, uint64_t npages)
{
    shm_lpool_t *lp = &((shm_header_t *)base)->lpool;
    if (lp->cap_pages == 0 || npages < SHM_LPOOL_MIN_PAGES || npages > SHM_LPOOL_MAX_PAGES)
        return NULL;
    return &lp->bucket[npages - SHM_LPOOL_MIN_PAGES];
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

/* Pop a span of `npages` pages.  NULL when the bucket is empty or the pool
 * takes no such size.  When the popped span is not a POOLED LARGE span of
 * npages pages (which must never happen: the pool is corrupt) it is
 * dropped, NULL is returned and *bad gets its id (else *bad = 0).  On
 * success the span is allocated (xowner 0, stored with release). */
shm_span_t *shm_lpool_pop(uint8_t *base, uint64_t npages, shm_spanid_t *bad);

#endif /* SHM_LPOOL_H */

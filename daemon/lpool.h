/* See shm/layout.h for the overview; shm/lpool.h for the large pool.
 *
 * The daemon's side of the large pool: give pooled spans back to the heap.
 * Only the daemon's thread calls these (they free to the heap).
 */
#ifndef SPD_LPOOL_H
#define SPD_LPOOL_H

#include <stdint.h>

#include "shm/arena.h"

/* Take every span of bucket `b` (0..SHM_LPOOL_NBUCKETS-1) with one CAS and
 * free each to the heap the way FreeLarge does.  The walk stops at the
 * first link that is not a POOLED LARGE span of the bucket's size (never
 * more than the descriptors ever handed out); those are counted in *bad
 * (the rest of the chain is left alone: leaked, never corrupting the heap).
 * Returns the spans freed. */
uint32_t spd_lpool_drain(shm_arena_t *a, unsigned b, uint32_t *bad);

/* Every bucket.  Returns the spans freed; *bad as above, summed. */
uint32_t spd_lpool_drain_all(shm_arena_t *a, uint32_t *bad);

#endif /* SPD_LPOOL_H */

/* See shm/layout.h for the overview.
 *
 * Central lists (Go's mcentral): per size class, the CENTRAL spans that no
 * client holds, split into partial (free objects) and full.  Daemon only.
 */
#ifndef SPD_CENTRAL_H
#define SPD_CENTRAL_H

#include <stdint.h>

#include "shm/arena.h"

/* Where a span went back to. */
typedef enum spd_put_e {
    SPD_PUT_PARTIAL,     /* central, with free objects */
    SPD_PUT_FULL,        /* central, no free object */
    SPD_PUT_HEAP,        /* it was empty: back to the heap */
    SPD_PUT_CORRUPT,     /* its remote stack held a bogus node; quarantined on
                            the full list with what could be drained */
} spd_put_t;

/* A span of class `cls` with at least one free object, taken off central's
 * lists (partial first, then full spans whose remote stacks brought objects
 * back, then a new span from the heap), state CENTRAL, holder index reset.
 * 0 and *err = -ENOMEM when the arena is full, -EINVAL for a bad class. */
shm_spanid_t spd_central_take(shm_arena_t *a, unsigned cls, int *err);

/* Take back a small span that is on no daemon list (released by a client or
 * adopted from a dead one): drain its remote-free stack, forget the holder's
 * index, and put it on the partial or full list, or give it to the heap when
 * no object is live.  Sets xowner to 0 and state CENTRAL (or FREE). */
spd_put_t spd_central_put(shm_arena_t *a, shm_spanid_t id);

/* Look at up to `budget` central spans, full ones first: drain their
 * remote stacks, move full spans that got objects back to partial, and give
 * spans with no live object left to the heap.  Returns the number of spans
 * moved. */
uint32_t spd_central_sweep(shm_arena_t *a, uint32_t budget);

#endif /* SPD_CENTRAL_H */

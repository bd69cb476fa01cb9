/* See shm/layout.h for the overview.
 *
 * The page heap (Go's mheap): free spans in the arena's metadata, exact
 * lists for 1..127 pages and a treap for larger runs.  Only the daemon calls
 * these, from its one event-loop thread, so there are no locks.  A span the
 * heap hands out has every page of it in the span map, and its state is
 * published last with a release store.
 */
#ifndef SPD_HEAP_H
#define SPD_HEAP_H

#include <stdbool.h>
#include <stdint.h>

#include "shm/arena.h"

/* Set up the empty heap and the span-descriptor allocator of a freshly
 * created arena.  0 or -errno. */
int spd_heap_init(shm_arena_t *a);

/* A new small span of class `cls`, cut into objects (shm_span_cut), state
 * CENTRAL and on no list.  0 and *err = -ENOMEM when the arena is full. */
shm_spanid_t spd_heap_alloc_small(shm_arena_t *a, unsigned cls, int *err);

/* A large object of at least `bytes` bytes whose start is aligned to
 * `align` (a power of two; <= page size means page aligned), state LARGE.
 * 0 and *err = -ENOMEM (no room) or -EINVAL (bad size or alignment). */
shm_spanid_t spd_heap_alloc_large(shm_arena_t *a, uint64_t bytes, uint64_t align, int *err);

/* Free the large object at arena offset `off`: 0, -EINVAL when `off` is
 * not the start of a LARGE span (never allocated, or freed already), or
 * -EALREADY when it is in the large pool or a client thread's cache (freed
 * already: its xowner tag is POOLED or CACHED).  Accepts tag 0 or
 * RETURNING, claimed with a CAS. */
int spd_heap_free_large(shm_arena_t *a, uint64_t off);
/* The large spans session `id` (slot + 1) has cached (SHM_LARGE_CACHED):
 * a walk over every descriptor.  With `free_them` (the session has ended),
 * each is freed to the heap.  Returns how many were found, or freed. */
uint32_t spd_heap_cached_large(shm_arena_t *a, uint32_t id, bool free_them);

/* Give span `id` (any state but FREE and DEAD, on no daemon list) back to
 * the heap, merging with free neighbours. */
void spd_heap_free(shm_arena_t *a, shm_spanid_t id);

/* Punch out the pages of free spans that went free at least `idle` ticks
 * before `now` (spd_now() ticks) and are not punched yet.  At most
 * `budget_pages` pages a call, except that the first span punched may be
 * larger than the budget (so a huge idle span is not skipped for ever).
 * Returns the bytes given back (the drop in shm_arena_resident). */
uint64_t spd_heap_scavenge(shm_arena_t *a, uint32_t now, uint32_t idle, uint64_t budget_pages);

/* The clock of free_since: monotonic time in ticks of 1/SPD_TICKS_PER_SEC
 * seconds (a uint32 lasts 8 years of uptime).  Finer than a second so that
 * an idle threshold of half a second means what it says. */
#define SPD_TICKS_PER_SEC 16u
uint32_t spd_now(void);

/* The treap priority of span `id` (a hash of the id): a parent's priority
 * is >= its children's, the lower id above on a tie.  For the verifier. */
uint32_t spd_treap_priority(shm_spanid_t id);

#endif /* SPD_HEAP_H */

/* See shm/layout.h for the overview.
 *
 * Central lists (Go's mcentral): per size class, the CENTRAL spans that no
 * client holds.  `partial` holds spans with at least one free object (nobody
 * allocates from a span in central, so that stays true until it is taken);
 * `full` holds spans that had none when last looked at.  Objects of a full
 * span come back only through its remote-free stack, so take and sweep drain
 * those stacks, a bounded number of spans at a time (Go's spanBudget).
 *
 * While a span is in central the daemon is its holder: it alone drains the
 * remote stack and touches the bitmap.
 *
 * Quarantine: a span whose remote stack held a bogus node (a double free or
 * a stray write) gets SHM_SPAN_CORRUPT and goes to the END of its class's
 * full list, where it stays: take and sweep stop at the first such span, so
 * the corrupt spans are a suffix of the list that is never handed out again.
 * Its live objects stay readable; its pages are never reused.
 */
#include "config.h"

#include <errno.h>

#include "daemon/central.h"
#include "daemon/heap.h"
#include "daemon/list.h"
#include "shm/atomic.h"
#include "shm/span.h"

/* Full spans one take looks at before it asks the heap for a new span. */
#define TAKE_BUDGET 100

static inline shm_span_t *span_at(shm_arena_t *a, shm_spanid_t id)
{
    return shm_span(a->base, id);
}

/* Hand the span over as the daemon keeps it: no holder, no index. */
static void span_unhold(shm_span_t *s)
{
    shm_span_reset_holder(s);
    shm_store_relaxed(&s->xowner, 0);
    s->session = 0;
}

/* Append `id` at the tail of `*head` (the quarantine end of a full list). */
static void list_append(uint8_t *base, shm_spanid_t *head, shm_spanid_t id)
{
    shm_span_t *s = shm_span(base, id), *t;
    shm_spanid_t last = 0;
    spd_list_foreach(base, *head, cur, t)
        last = cur;
    s->next = 0;
    s->prev = last;
    if (last)
        shm_span(base, last)->next = id;
    else
        *head = id;
}

/* Keep `id` (CENTRAL, on no list) out of circulation for good. */
static void quarantine(shm_arena_t *a, shm_central_t *c, shm_spanid_t id)
{
    span_at(a, id)->flags = SHM_SPAN_CORRUPT;
    list_append(a->base, &c->full, id);
    c->nfull++;
}

static bool span_has_free(uint8_t *base, const shm_span_t *s)
{
    return shm_span_count(base, s) < s->nelems;
}

static bool span_is_empty(uint8_t *base, const shm_span_t *s)
{
    return shm_span_count(base, s) <= shm_classes[s->sizeclass].nreserved;
}

shm_spanid_t spd_central_take(shm_arena_t *a, unsigned cls, int *err)
{
    if (cls == 0 || cls >= SHM_NCLASSES) {
        if (err)
            *err = -EINVAL;
        return 0;
    }
    shm_central_t *c = &a->hdr->central[cls];
    if (c->partial != 0) {
        shm_spanid_t id = c->partial;
        spd_list_remove(a->base, &c->partial, id);
        c->npartial--;
        span_unhold(span_at(a, id));
        if (err)
            *err = 0;
        return id;
    }
    uint32_t looked = 0;
    shm_span_t *s;
    spd_list_foreach(a->base, c->full, id, s) {
        if (looked++ >= TAKE_BUDGET || (s->flags & SHM_SPAN_CORRUPT))
            break;
        uint64_t bad;
        int n = shm_span_drain_remote(a->base, s, &bad);
        if (n < 0) {
            spd_list_remove(a->base, &c->full, id);
            c->nfull--;
            quarantine(a, c, id);
            continue;
        }
        if (n > 0 && span_has_free(a->base, s)) {
            spd_list_remove(a->base, &c->full, id);
            c->nfull--;
            span_unhold(s);
            if (err)
                *err = 0;
            return id;
        }
    }
    return spd_heap_alloc_small(a, cls, err);
}

spd_put_t spd_central_put(shm_arena_t *a, shm_spanid_t id)
{
    shm_span_t *s = span_at(a, id);
    shm_central_t *c = &a->hdr->central[s->sizeclass];
    uint64_t bad;
    span_unhold(s);
    int n = shm_span_drain_remote(a->base, s, &bad);
    s->flags = 0;
    shm_store_release(&s->xstate, SHM_SPAN_CENTRAL);
    if (n < 0) {
        quarantine(a, c, id);
        return SPD_PUT_CORRUPT;
    }
    if (span_is_empty(a->base, s)) {
        spd_heap_free(a, id);
        return SPD_PUT_HEAP;
    }
    if (span_has_free(a->base, s)) {
        spd_list_push(a->base, &c->partial, id);
        c->npartial++;
        return SPD_PUT_PARTIAL;
    }
    spd_list_push(a->base, &c->full, id);
    c->nfull++;
    return SPD_PUT_FULL;
}

/* Drain span `id`, on its class's full list (`full`) or partial list, and
 * move it where it belongs now: a span no object of which is live goes to
 * the heap, a full one that got objects back to partial, a corrupt one to
 * quarantine.  Returns 1 when it moved to partial or the heap. */
static uint32_t resweep(shm_arena_t *a, unsigned cls, shm_spanid_t id, bool full)
{
    shm_central_t *c = &a->hdr->central[cls];
    shm_spanid_t *head = full ? &c->full : &c->partial;
    uint32_t *count = full ? &c->nfull : &c->npartial;
    shm_span_t *s = span_at(a, id);
    uint64_t bad;
    /* a plain load first: most spans a sweep looks at got nothing, and the
     * load does not take the line away from a freer the way the exchange
     * does (a push it misses is seen by the next sweep) */
    if (shm_load_relaxed(&s->xremote) == 0)
        return 0;
    int n = shm_span_drain_remote(a->base, s, &bad);
    if (n == 0)
        return 0;
    bool empty = n > 0 && span_is_empty(a->base, s);
    if (n > 0 && !empty && !full)
        return 0;                       /* partial, and it stays so */
    spd_list_remove(a->base, head, id);
    (*count)--;
    if (n < 0) {
        quarantine(a, c, id);
        return 0;
    }
    if (empty) {
        spd_heap_free(a, id);
        return 1;
    }
    spd_list_push(a->base, &c->partial, id);   /* n > 0 objects came back */
    c->npartial++;
    return 1;
}

/* Look at the full spans of one class, then its partial ones, until
 * `*budget` runs out or a list's quarantined tail is reached.  Returns the
 * spans moved. */
static uint32_t sweep_class(shm_arena_t *a, unsigned cls, uint32_t *budget)
{
    shm_central_t *c = &a->hdr->central[cls];
    uint32_t moved = 0;
    shm_span_t *s;
    for (int full = 1; full >= 0; full--) {
        spd_list_foreach(a->base, full ? c->full : c->partial, id, s) {
            if (*budget == 0 || (s->flags & SHM_SPAN_CORRUPT))
                break;
            (*budget)--;
            moved += resweep(a, cls, id, full);
        }
    }
    return moved;
}

uint32_t spd_central_sweep(shm_arena_t *a, uint32_t budget)
{
    /* Where the last sweep stopped: a fairness hint kept by the daemon, not
     * state of the arena (any start is correct). */
    static unsigned cursor;
    uint32_t moved = 0;
    for (unsigned k = 0; k < SHM_NCLASSES - 1 && budget > 0; k++) {
        unsigned cls = 1 + (cursor + k) % (SHM_NCLASSES - 1);
        moved += sweep_class(a, cls, &budget);
        if (budget == 0)
            cursor = cls % (SHM_NCLASSES - 1);
    }
    return moved;
}

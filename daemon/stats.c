/* See shm/layout.h for the overview.
 *
 * The Stats answer: the heap's sizes from the arena header, the counters of
 * SHM_STAT_FIELDS (one X-macro list drives the struct, this message and
 * spanctl's output), the resident bytes from the kernel, and live objects
 * counted from the alloc bitmaps.  The bitmaps of HELD spans change under
 * our feet (their holders write them without telling us): those counts are
 * "as last seen", which is all a statistic needs.  Spans in central are the
 * daemon's own: Stats first drains their remote-free stacks (a sweep), so
 * objects other processes freed into them no longer count as live.  Large
 * spans in the large pool or a client thread's cache of them (tag POOLED or
 * CACHED) are counted apart, as freed; the
 * pool's hits and puts are the sums of its buckets' counters.
 */
#include "config.h"

#include <time.h>

#include "daemon/central.h"
#include "daemon/rpc.h"
#include "shm/atomic.h"
#include "shm/span.h"

static const struct {
    const char *name, *help;
    size_t off;
} counters[] = {
#define SPD_COUNTER(n, h) { #n, h, offsetof(shm_stats_t, n) },
    SHM_STAT_FIELDS(SPD_COUNTER)
#undef SPD_COUNTER
};
#define NCOUNTERS (sizeof counters / sizeof counters[0])

static void fill_counters(spd_call_t *call, Spand__StatsReply *r)
{
    const uint8_t *st = (const uint8_t *)&call->d->arena.hdr->stats;
    r->counters = spd_call_alloc(call, NCOUNTERS * sizeof *r->counters);
    for (size_t i = 0; i < NCOUNTERS; i++) {
        Spand__Counter *c = spd_call_alloc(call, sizeof *c);
        spand__counter__init(c);
        c->name = (char *)counters[i].name;
        c->help = (char *)counters[i].help;
        c->value = *(const uint64_t *)(st + counters[i].off);
        r->counters[i] = c;
    }
    r->n_counters = NCOUNTERS;
}

static Spand__ClassStats **new_class_table(spd_call_t *call)
{
    Spand__ClassStats **t = spd_call_alloc(call, SHM_NCLASSES * sizeof *t);
    for (unsigned cls = 1; cls < SHM_NCLASSES; cls++) {
        Spand__ClassStats *cs = spd_call_alloc(call, sizeof *cs);
        spand__class_stats__init(cs);
        cs->sizeclass = cls;
        cs->size = shm_classes[cls].size;
        cs->npages = shm_classes[cls].npages;
        t[cls] = cs;
    }
    return t;
}

/* Walk every span descriptor ever handed out and add up what it holds. */
static void walk_spans(spd_call_t *call, Spand__StatsReply *r, Spand__ClassStats **t)
{
    uint8_t *base = call->d->arena.base;
    uint32_t hwm = call->d->arena.hdr->spanalloc.hwm;
    for (shm_spanid_t id = 1; id < hwm; id++) {
        shm_span_t *s = shm_span(base, id);
        uint8_t state = shm_load_acquire(&s->xstate);
        uint64_t bytes = (uint64_t)s->npages << SHM_PAGE_SHIFT;
        uint32_t tag = state == SHM_SPAN_LARGE ? shm_load_relaxed(&s->xowner) : 0;
        if (tag == SHM_LARGE_POOLED || tag == SHM_LARGE_CACHED) {
            r->large_pool_bytes += bytes;       /* freed, kept for reuse */
            continue;
        }
        if (state == SHM_SPAN_LARGE) {
            r->large_bytes += bytes;
            r->live_bytes += bytes;
            continue;
        }
        if (state != SHM_SPAN_CENTRAL && state != SHM_SPAN_HELD)
            continue;
        unsigned cls = s->sizeclass;
        if (cls == 0 || cls >= SHM_NCLASSES)
            continue;
        uint32_t used = shm_span_count(base, s), res = shm_classes[cls].nreserved;
        uint64_t live = used > res ? used - res : 0;
        r->small_bytes += bytes;
        r->live_objects += live;
        r->live_bytes += live * shm_classes[cls].size;
        if (t) {
            Spand__ClassStats *cs = t[cls];
            if (state == SHM_SPAN_HELD)
                cs->spans_held++;
            else
                cs->spans_central++;
            cs->live_objects += live;
            cs->free_objects += s->nelems - (used > s->nelems ? s->nelems : used);
        }
    }
}

Spand__StatsReply *spd_stats_fill(spd_call_t *call, bool classes)
{
    const shm_header_t *h = call->d->arena.hdr;
    spd_central_sweep(&call->d->arena, UINT32_MAX);
    Spand__StatsReply *r = spd_call_alloc(call, sizeof *r);
    spand__stats_reply__init(r);
    r->arena_size = h->arena_size;
    r->heap_bytes = (uint64_t)(h->heap.end_page - h->heap.first_page) << SHM_PAGE_SHIFT;
    r->free_bytes = h->heap.free_pages << SHM_PAGE_SHIFT;
    r->unbacked_bytes = h->heap.unbacked_pages << SHM_PAGE_SHIFT;
    r->resident_bytes = shm_arena_resident(&call->d->arena);
    r->clients = h->nsessions;
    r->spans = h->spanalloc.inuse;
    r->daemon_pid = shm_load_relaxed(&((shm_header_t *)h)->xdaemon_pid);
    r->uptime_seconds = (uint64_t)(time(NULL) - call->d->started);
    fill_counters(call, r);
    for (unsigned b = 0; b < SHM_LPOOL_NBUCKETS; b++) {
        r->large_pool_hits += shm_load_relaxed(&h->lpool.bucket[b].xpops);
        r->large_pool_puts += shm_load_relaxed(&h->lpool.bucket[b].xpushes);
    }

    Spand__ClassStats **t = classes ? new_class_table(call) : NULL;
    walk_spans(call, r, t);
    if (t) {
        r->classes = t + 1;             /* class 0 is no class */
        r->n_classes = SHM_NCLASSES - 1;
    }
    return r;
}

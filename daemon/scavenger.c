/* See shm/layout.h for the overview.
 *
 * The scavenger: a timer that looks twice every --scavenge-interval
 * seconds (default 5).  Each look sweeps up to SPD_SWEEP_BUDGET spans of
 * central (their remote-free stacks may have emptied them; a span whose
 * stack is empty costs one plain load, so a look over 100,000 central spans
 * costs a few ms at most), then punches out the pages of free spans idle
 * for at least half an interval (less one clock tick), at most
 * SPD_SCAVENGE_BUDGET_PAGES pages a look.  So memory freed to the heap or
 * emptied in central goes back to the kernel about one interval later at
 * most (plus the kernel's time: ~0.2 s of system time per GiB on tmpfs),
 * and a span freed and taken again within half an interval is never
 * punched and backed again (the reason for an idle threshold at all).  The
 * budgets bound the loop's stall (Go's bounded background scavenger) but
 * are large: with 256 central spans and 128 MiB a tick and a one-interval
 * threshold in whole seconds, spanbench w8 at 256 B got 1.5 % of 1 GiB back
 * within 2 s (--scavenge-interval 1), now 100 % (doc/design.md 2.6).
 * Each look also drains the large pool's buckets that nobody popped from
 * since the previous look (idle: their spans go to the heap, and are
 * punched one look later like any free span).
 * `spanctl release` (Scavenge) does it all at once: the large pool drained,
 * all central spans swept, every free page given back whatever its idle
 * time (Go's debug.FreeOSMemory).  With the timer off, only Scavenge
 * drains the large pool.  The heap counts what it gives back (stats
 * scavenges, scavenged_bytes).
 */
#include "config.h"

#include <event2/event.h>

#include "daemon/central.h"
#include "daemon/daemon.h"
#include "daemon/heap.h"
#include "daemon/log.h"
#include "daemon/lpool.h"
#include "shm/lpool.h"

#define SPD_SWEEP_BUDGET          131072u    /* central spans a look */
#define SPD_SCAVENGE_BUDGET_PAGES (131072u)  /* 1 GiB a look */

/* A drain of the large pool stopped at links that are no POOLED span. */
static void warn_bad_links(uint32_t bad)
{
    if (bad)
        log_warnx("large pool: %u bad links (corrupt pool); the rest of those "
                  "buckets is leaked", bad);
}

static void scavenger_tick(evutil_socket_t fd, short what, void *arg)
{
    spd_daemon_t *d = arg;
    shm_arena_t *a = &d->arena;
    (void)fd, (void)what;

    /* large-pool buckets nobody popped from since the last look go back to
     * the heap (then to the kernel like any free span) */
    uint32_t drained = 0, bad = 0;
    for (unsigned b = 0; b < SHM_LPOOL_NBUCKETS; b++) {
        uint64_t pops = shm_load_relaxed(&a->hdr->lpool.bucket[b].xpops);
        if (pops == d->lpool_pops[b])
            drained += spd_lpool_drain(a, b, &bad);
        d->lpool_pops[b] = pops;
    }
    warn_bad_links(bad);
    uint32_t swept = spd_central_sweep(a, SPD_SWEEP_BUDGET);
    /* half an interval, less one clock tick: a span that went free at one
     * look is punched at the next, whatever the timer's jitter */
    uint32_t idle = d->cfg.scavenge_interval * SPD_TICKS_PER_SEC / 2 - 1;
    uint64_t bytes = spd_heap_scavenge(a, spd_now(), idle, SPD_SCAVENGE_BUDGET_PAGES);
    if (swept || bytes || drained)
        log_debug("scavenger swept=%u pool_drained=%u released_bytes=%llu", swept,
                  drained, (unsigned long long)bytes);
}

int spd_scavenger_start(spd_daemon_t *d)
{
    if (d->cfg.scavenge_interval == 0) {
        log_info("scavenger off (--scavenge-interval 0)");
        return 0;
    }
    unsigned half_ms = d->cfg.scavenge_interval * 500u;
    struct timeval tv = { (time_t)(half_ms / 1000), (suseconds_t)(half_ms % 1000) * 1000 };
    d->scavenger = event_new(d->base, -1, EV_PERSIST, scavenger_tick, d);
    if (d->scavenger == NULL || event_add(d->scavenger, &tv) != 0) {
        log_warnx("cannot start the scavenger timer");
        return -1;
    }
    return 0;
}

uint64_t spd_scavenge_all(spd_daemon_t *d)
{
    shm_arena_t *a = &d->arena;
    uint32_t bad = 0, drained = spd_lpool_drain_all(a, &bad);
    warn_bad_links(bad);
    uint32_t ncentral = 0;
    for (unsigned cls = 1; cls < SHM_NCLASSES; cls++)
        ncentral += a->hdr->central[cls].nfull + a->hdr->central[cls].npartial;
    spd_central_sweep(a, ncentral);
    uint64_t bytes = spd_heap_scavenge(a, spd_now(), 0, a->hdr->heap.free_pages);
    log_info("scavenge pool_drained=%u released_bytes=%llu", drained,
             (unsigned long long)bytes);
    return bytes;
}

/* See shm/layout.h for the overview.
 *
 * The scavenger: a timer every --scavenge-interval seconds (default 5).
 * Each tick sweeps up to SPD_SWEEP_BUDGET spans of central (their
 * remote-free stacks may have emptied them), then punches out the
 * pages of free spans idle for at least one interval, at most
 * SPD_SCAVENGE_BUDGET_PAGES pages a tick (Go's bounded background
 * scavenger: the loop never stalls for long).  `spanctl release` (Scavenge)
 * does the same at once for everything: all central spans swept, every free
 * page given back whatever its idle time (Go's debug.FreeOSMemory).  The
 * heap counts what it gives back (stats scavenges, scavenged_bytes).
 */
#include "config.h"

#include <event2/event.h>

#include "daemon/central.h"
#include "daemon/daemon.h"
#include "daemon/heap.h"
#include "daemon/log.h"

#define SPD_SWEEP_BUDGET          256u
#define SPD_SCAVENGE_BUDGET_PAGES (16384u)   /* 128 MiB a tick */

static void scavenger_tick(evutil_socket_t fd, short what, void *arg)
{
    spd_daemon_t *d = arg;
    shm_arena_t *a = &d->arena;
    (void)fd, (void)what;

    uint32_t swept = spd_central_sweep(a, SPD_SWEEP_BUDGET);
    uint32_t idle = d->cfg.scavenge_interval;
    uint64_t bytes = spd_heap_scavenge(a, spd_now(), idle, SPD_SCAVENGE_BUDGET_PAGES);
    if (swept || bytes)
        log_debug("scavenger swept=%u released_bytes=%llu", swept,
                  (unsigned long long)bytes);
}

int spd_scavenger_start(spd_daemon_t *d)
{
    if (d->cfg.scavenge_interval == 0) {
        log_info("scavenger off (--scavenge-interval 0)");
        return 0;
    }
    struct timeval tv = { (time_t)d->cfg.scavenge_interval, 0 };
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
    uint32_t ncentral = 0;
    for (unsigned cls = 1; cls < SHM_NCLASSES; cls++)
        ncentral += a->hdr->central[cls].nfull + a->hdr->central[cls].npartial;
    spd_central_sweep(a, ncentral);
    uint64_t bytes = spd_heap_scavenge(a, spd_now(), 0, a->hdr->heap.free_pages);
    log_info("scavenge released_bytes=%llu", (unsigned long long)bytes);
    return bytes;
}

/* See shm/layout.h for the overview.  Client sessions; see daemon/session.h. */
#include "config.h"

#include <errno.h>
#include <time.h>

#include "daemon/heap.h"
#include "daemon/list.h"
#include "daemon/session.h"
#include "shm/atomic.h"

int spd_session_open(shm_arena_t *a, pid_t pid, uid_t uid, uint32_t *slot)
{
    shm_header_t *h = a->hdr;
    for (uint32_t i = 0; i < SHM_MAX_SESSIONS; i++) {
        shm_session_t *s = &h->sessions[i];
        if (s->pid != 0)
            continue;
        s->pid = pid > 0 ? (uint32_t)pid : 1;  /* 0 means free */
        s->uid = (uint32_t)uid;
        s->started = (uint64_t)time(NULL);
        s->spans = 0;
        s->nspans = 0;
        s->gen++;
        h->nsessions++;
        h->stats.clients_total++;
        *slot = i;
        return 0;
    }
    return -ENOSPC;
}

void spd_session_hold(shm_arena_t *a, uint32_t slot, shm_spanid_t id)
{
    shm_session_t *ss = &a->hdr->sessions[slot];
    shm_span_t *s = shm_span(a->base, id);
    spd_list_push(a->base, &ss->spans, id);
    ss->nspans++;
    s->session = slot + 1;
    /* everything above is visible to the client before it sees HELD; the
     * socket answer that names the span orders it as well */
    shm_store_release(&s->xstate, SHM_SPAN_HELD);
}

int spd_session_check(shm_arena_t *a, uint32_t slot, uint64_t id, const char **why)
{
    const shm_header_t *h = a->hdr;
    if (id == 0 || id >= h->spanalloc.hwm) {
        *why = "no such span";
        return -EINVAL;
    }
    shm_span_t *s = shm_span(a->base, (shm_spanid_t)id);
    if (shm_load_acquire(&s->xstate) != SHM_SPAN_HELD) {
        *why = "span is not held by any client";
        return -EINVAL;
    }
    if (s->session != slot + 1) {
        *why = "span is held by another client";
        return -EINVAL;
    }
    return 0;
}

spd_put_t spd_session_release(shm_arena_t *a, uint32_t slot, shm_spanid_t id)
{
    shm_session_t *ss = &a->hdr->sessions[slot];
    spd_list_remove(a->base, &ss->spans, id);
    ss->nspans--;
    shm_span(a->base, id)->session = 0;
    return spd_central_put(a, id);
}

bool spd_session_holds(shm_arena_t *a, uint32_t slot)
{
    return a->hdr->sessions[slot].nspans != 0 || spd_heap_cached_large(a, slot + 1, false) != 0;
}

uint32_t spd_session_close(shm_arena_t *a, uint32_t slot)
{
    shm_header_t *h = a->hdr;
    shm_session_t *ss = &h->sessions[slot];
    uint32_t n = 0;
    while (ss->spans != 0) {
        spd_session_release(a, slot, ss->spans);
        n++;
    }
    n += spd_heap_cached_large(a, slot + 1, true);
    h->stats.adopted_spans += n;
    ss->pid = 0;
    ss->uid = 0;
    ss->nspans = 0;
    h->nsessions--;
    return n;
}

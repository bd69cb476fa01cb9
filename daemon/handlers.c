/* See shm/layout.h for the overview.
 *
 * One small function per request body (the table is in daemon/rpc.c).
 * Each reads call->req, answers in call->resp with memory from
 * spd_call_alloc, and returns 0 or a positive errno (spd_call_fail).
 * None touches the socket; each does bounded work.
 */
#include "config.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/pidfd.h>
#include <unistd.h>

#include "daemon/central.h"
#include "daemon/heap.h"
#include "daemon/log.h"
#include "daemon/rpc.h"
#include "daemon/session.h"
#include "daemon/verify.h"
#include "shm/atomic.h"
#include "shm/lpool.h"

/* Spans one Refill hands out at most.  The client asks for growing batches;
 * 256 spans of the smallest class are 256 * 1024 objects; the client takes
 * at most 256 (SPCI_REFILL_MAX) and asks for batches of up to 16 MiB. */
#define SPD_REFILL_MAX_SPANS 256u

int spd_h_hello(spd_call_t *call)
{
    const Spand__Hello *m = call->req->hello;
    spd_conn_t *c = call->conn;
    shm_arena_t *a = &call->d->arena;
    uint32_t slot;

    if (m->protocol_version != SPAND_PROTOCOL_VERSION)
        return spd_call_fail(call, EPROTO, "protocol version %u is not supported "
                             "(this daemon speaks version %u)",
                             m->protocol_version, SPAND_PROTOCOL_VERSION);
    if (c->session != 0)
        return spd_call_fail(call, EINVAL, "this connection said Hello already "
                             "(session %u)", c->session);
    spd_rpc_end_kept(call->d, c->pid);  /* its old image's or its detached spans */
    if (spd_session_open(a, c->pid, c->uid, &slot) != 0)
        return spd_call_fail(call, ENOSPC, "too many clients (%u sessions)",
                             SHM_MAX_SESSIONS);
    c->session = slot + 1;
    call->d->by_session[slot] = c;
    /* to tell, when the connection closes, whether the process still runs
     * (rpc.c, conn_keep); without it the session ends with the connection */
    c->pidfd = pidfd_open(c->pid, 0);
    if (c->pidfd < 0)
        log_debug("conn=%llu pid=%ld: pidfd_open: %s", (unsigned long long)c->num,
                  (long)c->pid, strerror(errno));
    snprintf(c->name, sizeof c->name, "%s", m->client_name ? m->client_name : "");

    Spand__HelloReply *r = spd_call_alloc(call, sizeof *r);
    spand__hello_reply__init(r);
    r->protocol_version = SPAND_PROTOCOL_VERSION;
    r->layout_version = a->hdr->version;
    r->arena_size = a->hdr->arena_size;
    r->base_address = a->hdr->base;
    r->session_id = slot + 1;
    r->page_size = SHM_PAGE_SIZE;
    call->resp.body_case = SPAND__RESPONSE__BODY_HELLO;
    call->resp.hello = r;
    call->pass_fd = a->fd;
    log_info("conn=%llu session=%u pid=%ld uid=%lu name=\"%s\" hello",
             (unsigned long long)c->num, slot + 1, (long)c->pid, (unsigned long)c->uid,
             c->name);
    return 0;
}

static int cmp_u32(const void *x, const void *y)
{
    uint32_t a = *(const uint32_t *)x, b = *(const uint32_t *)y;
    return a < b ? -1 : a > b;
}

/* Check that the session holds every span of ids[0..n), each once; nothing
 * is changed when one is not (the whole request is refused). */
static int check_release(spd_call_t *call, const uint32_t *ids, size_t n)
{
    uint32_t slot = call->conn->session - 1;
    const char *why;
    for (size_t i = 0; i < n; i++)
        if (spd_session_check(&call->d->arena, slot, ids[i], &why) != 0)
            return spd_call_fail(call, EINVAL, "cannot release span %u: %s; "
                                 "nothing was released", ids[i], why);
    if (n > 1) {
        uint32_t *sorted = spd_call_alloc(call, n * sizeof *sorted);
        memcpy(sorted, ids, n * sizeof *sorted);
        qsort(sorted, n, sizeof *sorted, cmp_u32);
        for (size_t i = 1; i < n; i++)
            if (sorted[i] == sorted[i - 1])
                return spd_call_fail(call, EINVAL, "span %u is released twice in "
                                     "one request; nothing was released", sorted[i]);
    }
    return 0;
}

/* Take back spans checked by check_release; counts where they went. */
static void do_release(spd_call_t *call, const uint32_t *ids, size_t n,
                       uint32_t *to_central, uint32_t *to_heap)
{
    shm_arena_t *a = &call->d->arena;
    for (size_t i = 0; i < n; i++) {
        spd_put_t where = spd_session_release(a, call->conn->session - 1, ids[i]);
        if (where == SPD_PUT_HEAP)
            (*to_heap)++;
        else
            (*to_central)++;
        if (where == SPD_PUT_CORRUPT)
            log_warnx("conn=%llu span=%u bad node on its remote-free stack "
                      "(double or bogus free); span quarantined",
                      (unsigned long long)call->conn->num, ids[i]);
    }
    a->hdr->stats.releases += n;
}

int spd_h_refill(spd_call_t *call)
{
    const Spand__Refill *m = call->req->refill;
    shm_arena_t *a = &call->d->arena;
    uint32_t want = m->nspans == 0 ? 1 : m->nspans, got = 0, dummy = 0;
    int err = 0;

    if (m->sizeclass == 0 || m->sizeclass >= SHM_NCLASSES)
        return spd_call_fail(call, EINVAL, "no size class %u (classes are 1..%u)",
                             m->sizeclass, SHM_NCLASSES - 1);
    if ((err = check_release(call, m->release, m->n_release)) != 0)
        return err;
    do_release(call, m->release, m->n_release, &dummy, &dummy);

    if (want > SPD_REFILL_MAX_SPANS)
        want = SPD_REFILL_MAX_SPANS;
    Spand__RefillReply *r = spd_call_alloc(call, sizeof *r);
    spand__refill_reply__init(r);
    r->spans = spd_call_alloc(call, want * sizeof *r->spans);
    while (got < want) {
        shm_spanid_t id = spd_central_take(a, m->sizeclass, &err);
        if (id == 0)
            break;
        spd_session_hold(a, call->conn->session - 1, id);
        r->spans[got++] = id;
    }
    if (got == 0)
        return spd_call_fail(call, err ? -err : ENOMEM, "no span of class %u: %s",
                             m->sizeclass, strerror(err ? -err : ENOMEM));
    r->n_spans = got;
    a->hdr->stats.refills++;
    a->hdr->stats.refill_spans += got;
    call->resp.body_case = SPAND__RESPONSE__BODY_REFILL;
    call->resp.refill = r;
    return 0;
}

int spd_h_release(spd_call_t *call)
{
    const Spand__Release *m = call->req->release;
    int err = check_release(call, m->spans, m->n_spans);
    if (err != 0)
        return err;
    Spand__ReleaseReply *r = spd_call_alloc(call, sizeof *r);
    spand__release_reply__init(r);
    do_release(call, m->spans, m->n_spans, &r->to_central, &r->to_heap);
    call->resp.body_case = SPAND__RESPONSE__BODY_RELEASE;
    call->resp.release = r;
    return 0;
}

int spd_h_alloc_large(spd_call_t *call)
{
    const Spand__AllocLarge *m = call->req->alloc_large;
    shm_arena_t *a = &call->d->arena;
    int err = 0;

    if (m->size == 0)
        return spd_call_fail(call, EINVAL, "a large object of 0 bytes");
    if (m->align & (m->align - 1))
        return spd_call_fail(call, EINVAL, "alignment %llu is not a power of two",
                             (unsigned long long)m->align);
    /* the heap refuses it too, but its EINVAL would read "no room" below */
    if (m->align > a->hdr->arena_size)
        return spd_call_fail(call, EINVAL, "alignment %llu is more than the arena's "
                             "%llu bytes", (unsigned long long)m->align,
                             (unsigned long long)a->hdr->arena_size);
    if (m->size > a->hdr->arena_size)
        return spd_call_fail(call, ENOMEM, "%llu bytes is more than the arena holds",
                             (unsigned long long)m->size);
    shm_spanid_t id = spd_heap_alloc_large(a, m->size, m->align, &err);
    if (id == 0)
        return spd_call_fail(call, err ? -err : ENOMEM, "no room for %llu bytes: %s",
                             (unsigned long long)m->size, strerror(err ? -err : ENOMEM));
    const shm_span_t *s = shm_span(a->base, id);
    Spand__AllocLargeReply *r = spd_call_alloc(call, sizeof *r);
    spand__alloc_large_reply__init(r);
    r->offset = (uint64_t)s->start << SHM_PAGE_SHIFT;
    r->usable_size = (uint64_t)s->npages << SHM_PAGE_SHIFT;
    a->hdr->stats.large_alloc_calls++;
    /* extra spans for the caller's thread cache, tagged as its own cached
     * spans (shm/layout.h): a thread that allocates large objects one after
     * another, with none freed back yet, pays one round trip for several.
     * Only sizes a thread cache keeps (those the pool takes), page aligned,
     * and only as far as the heap has room: no error for fewer */
    uint32_t want = m->extra < SHM_LPOOL_BATCH_MAX - 1 ? m->extra : SHM_LPOOL_BATCH_MAX - 1;
    if (want > 0 && call->conn->session != 0 && m->align <= SHM_PAGE_SIZE &&
        shm_lpool_bucket(a->base, s->npages) != NULL) {
        r->extra = spd_call_alloc(call, want * sizeof *r->extra);
        while (r->n_extra < want) {
            int e = 0;
            shm_spanid_t x = spd_heap_alloc_large(a, m->size, m->align, &e);
            if (x == 0)
                break;
            shm_span_t *xs = shm_span(a->base, x);
            shm_lpool_mark_cached(xs, call->conn->session);
            r->extra[r->n_extra++] = (uint64_t)xs->start << SHM_PAGE_SHIFT;
        }
    }
    call->resp.body_case = SPAND__RESPONSE__BODY_ALLOC_LARGE;
    call->resp.alloc_large = r;
    return 0;
}

int spd_h_free_large(spd_call_t *call)
{
    uint64_t off = call->req->free_large->offset;
    int rc = spd_heap_free_large(&call->d->arena, off);
    if (rc == -EALREADY)
        return spd_call_fail(call, EINVAL, "offset %#llx is a large object in the large "
                             "pool or a thread's cache (freed already)",
                             (unsigned long long)off);
    if (rc != 0)
        return spd_call_fail(call, EINVAL, "offset %#llx is not the start of a large "
                             "object (freed already, or never allocated)",
                             (unsigned long long)off);
    Spand__FreeLargeReply *r = spd_call_alloc(call, sizeof *r);
    spand__free_large_reply__init(r);
    call->resp.body_case = SPAND__RESPONSE__BODY_FREE_LARGE;
    call->resp.free_large = r;
    return 0;
}

int spd_h_stats(spd_call_t *call)
{
    call->resp.stats = spd_stats_fill(call, call->req->stats->classes);
    call->resp.body_case = SPAND__RESPONSE__BODY_STATS;
    return 0;
}

int spd_h_scavenge(spd_call_t *call)
{
    Spand__ScavengeReply *r = spd_call_alloc(call, sizeof *r);
    spand__scavenge_reply__init(r);
    r->released_bytes = spd_scavenge_all(call->d);
    call->resp.body_case = SPAND__RESPONSE__BODY_SCAVENGE;
    call->resp.scavenge = r;
    return 0;
}

int spd_h_ping(spd_call_t *call)
{
    Spand__Pong *r = spd_call_alloc(call, sizeof *r);
    spand__pong__init(r);
    r->token = call->req->ping->token;
    call->resp.body_case = SPAND__RESPONSE__BODY_PING;
    call->resp.ping = r;
    return 0;
}

static Spand__ClientInfo *client_info(spd_call_t *call, uint32_t slot)
{
    const shm_session_t *s = &call->d->arena.hdr->sessions[slot];
    const spd_conn_t *c = call->d->by_session[slot];
    Spand__ClientInfo *ci = spd_call_alloc(call, sizeof *ci);
    spand__client_info__init(ci);
    ci->session_id = slot + 1;
    ci->pid = s->pid;
    ci->uid = s->uid;
    ci->started = s->started;
    ci->spans = s->nspans;
    ci->name = c ? (char *)c->name : (char *)"";
    return ci;
}

int spd_h_clients(spd_call_t *call)
{
    const shm_header_t *h = call->d->arena.hdr;
    Spand__ClientsReply *r = spd_call_alloc(call, sizeof *r);
    spand__clients_reply__init(r);
    r->clients = spd_call_alloc(call, (h->nsessions + 1) * sizeof *r->clients);
    for (uint32_t i = 0; i < SHM_MAX_SESSIONS && r->n_clients < h->nsessions; i++)
        if (h->sessions[i].pid != 0)
            r->clients[r->n_clients++] = client_info(call, i);
    call->resp.body_case = SPAND__RESPONSE__BODY_CLIENTS;
    call->resp.clients = r;
    return 0;
}

int spd_h_verify(spd_call_t *call)
{
    Spand__VerifyReply *r = spd_call_alloc(call, sizeof *r);
    char *msg = spd_call_alloc(call, 512);
    spand__verify_reply__init(r);
    r->ok = spd_heap_verify(&call->d->arena, msg, 512) == 0;
    r->message = msg;
    if (!r->ok)
        log_warnx("verify failed: %s", msg);
    call->resp.body_case = SPAND__RESPONSE__BODY_VERIFY;
    call->resp.verify = r;
    return 0;
}

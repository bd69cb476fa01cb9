/* See shm/layout.h for the overview.
 *
 * Tests of spand as a whole: each starts the real binary ($SPAND_BIN) on a
 * private socket and shared-memory name (tests/daemon_helper.h) and drives
 * it over the socket with the blocking client of tools/ctlclient.h.  After
 * every bad input the daemon must still answer Ping and pass its verifier.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "shm/arena.h"
#include "shm/lpool.h"
#include "shm/span.h"
#include "tests/cutest.h"
#include "tests/daemon_helper.h"
#include "tests/span_take.h"
#include "tools/ctlclient.h"

/* ---- small tools ---- */

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void sleep_ms(unsigned ms)
{
    struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };
    nanosleep(&ts, NULL);
}

static dh_daemon_t *start(const char *const *args)
{
    dh_daemon_t *d = dh_new();
    CU_ASSERT_PTR_NOT_NULL_FATAL(d);
    CU_ASSERT_FATAL(dh_start(d, args) == 0);
    return d;
}

static void open_client(const dh_daemon_t *d, ctl_client_t *c)
{
    CU_ASSERT_FATAL(ctl_connect(c, d->sock, 5000) == 0);
}

/* One request with body `body` of case `bc`; the answer (NULL on a
 * transport failure, which fails the test). */
static Spand__Response *call(ctl_client_t *c, Spand__Request__BodyCase bc, void *body)
{
    Spand__Request req = SPAND__REQUEST__INIT;
    Spand__Response *resp = NULL;
    req.body_case = bc;
    req.hello = body;           /* every body member is a pointer in one union */
    int rc = ctl_call(c, &req, &resp);
    CU_ASSERT_EQUAL(rc, 0);
    if (rc != 0)
        fprintf(stderr, "call(case %d): %s\n", (int)bc, strerror(-rc));
    return rc == 0 ? resp : NULL;
}

static void done(Spand__Response *r)
{
    if (r)
        spand__response__free_unpacked(r, NULL);
}

static uint32_t err_of(Spand__Response *r)
{
    return r ? r->error : 0xffffffffu;
}

static Spand__Response *ping(ctl_client_t *c, uint64_t token)
{
    Spand__Ping p = SPAND__PING__INIT;
    p.token = token;
    return call(c, SPAND__REQUEST__BODY_PING, &p);
}

static Spand__Response *hello(ctl_client_t *c, uint32_t version, const char *name)
{
    Spand__Hello h = SPAND__HELLO__INIT;
    h.protocol_version = version;
    h.client_name = (char *)name;
    return call(c, SPAND__REQUEST__BODY_HELLO, &h);
}

static Spand__Response *refill(ctl_client_t *c, uint32_t cls, uint32_t n,
                               const uint32_t *rel, size_t nrel)
{
    Spand__Refill m = SPAND__REFILL__INIT;
    m.sizeclass = cls;
    m.nspans = n;
    m.release = (uint32_t *)rel;
    m.n_release = nrel;
    return call(c, SPAND__REQUEST__BODY_REFILL, &m);
}

static Spand__Response *release(ctl_client_t *c, const uint32_t *ids, size_t n)
{
    Spand__Release m = SPAND__RELEASE__INIT;
    m.spans = (uint32_t *)ids;
    m.n_spans = n;
    return call(c, SPAND__REQUEST__BODY_RELEASE, &m);
}

static Spand__Response *alloc_large_extra(ctl_client_t *c, uint64_t size, uint64_t align,
                                          uint32_t extra)
{
    Spand__AllocLarge m = SPAND__ALLOC_LARGE__INIT;
    m.size = size;
    m.align = align;
    m.extra = extra;
    return call(c, SPAND__REQUEST__BODY_ALLOC_LARGE, &m);
}

static Spand__Response *alloc_large(ctl_client_t *c, uint64_t size, uint64_t align)
{
    return alloc_large_extra(c, size, align, 0);
}

static Spand__Response *free_large(ctl_client_t *c, uint64_t off)
{
    Spand__FreeLarge m = SPAND__FREE_LARGE__INIT;
    m.offset = off;
    return call(c, SPAND__REQUEST__BODY_FREE_LARGE, &m);
}

static Spand__Response *stats(ctl_client_t *c, bool classes)
{
    Spand__StatsRequest m = SPAND__STATS_REQUEST__INIT;
    m.classes = classes;
    return call(c, SPAND__REQUEST__BODY_STATS, &m);
}

static Spand__Response *clients(ctl_client_t *c)
{
    Spand__Clients m = SPAND__CLIENTS__INIT;
    return call(c, SPAND__REQUEST__BODY_CLIENTS, &m);
}

static Spand__Response *scavenge(ctl_client_t *c)
{
    Spand__Scavenge m = SPAND__SCAVENGE__INIT;
    return call(c, SPAND__REQUEST__BODY_SCAVENGE, &m);
}

static uint64_t counter(const Spand__StatsReply *s, const char *name)
{
    for (size_t i = 0; i < s->n_counters; i++)
        if (strcmp(s->counters[i]->name, name) == 0)
            return s->counters[i]->value;
    CU_FAIL("counter missing from Stats");
    fprintf(stderr, "counter %s missing\n", name);
    return 0;
}

/* A fresh connection's view of one counter. */
static uint64_t counter_now(const dh_daemon_t *d, const char *name)
{
    ctl_client_t c;
    uint64_t v = 0;
    open_client(d, &c);
    Spand__Response *r = stats(&c, false);
    if (r && r->body_case == SPAND__RESPONSE__BODY_STATS)
        v = counter(r->stats, name);
    done(r);
    ctl_close(&c);
    return v;
}

/* The daemon answers Ping on a new connection and its verifier passes. */
static void check_healthy(const dh_daemon_t *d)
{
    ctl_client_t c;
    open_client(d, &c);
    Spand__Response *r = ping(&c, 0x5eed);
    CU_ASSERT_EQUAL(err_of(r), 0);
    CU_ASSERT(r && r->body_case == SPAND__RESPONSE__BODY_PING && r->ping->token == 0x5eed);
    done(r);
    Spand__Verify v = SPAND__VERIFY__INIT;
    r = call(&c, SPAND__REQUEST__BODY_VERIFY, &v);
    CU_ASSERT(r && r->body_case == SPAND__RESPONSE__BODY_VERIFY);
    if (r && r->body_case == SPAND__RESPONSE__BODY_VERIFY) {
        CU_ASSERT(r->verify->ok);
        if (!r->verify->ok)
            fprintf(stderr, "verify: %s\n", r->verify->message);
    }
    done(r);
    ctl_close(&c);
}

/* Does the daemon's log hold `what`? */
static bool log_has(const dh_daemon_t *d, const char *what)
{
    char line[1024];
    bool found = false;
    FILE *f = fopen(d->log, "r");
    while (f && !found && fgets(line, sizeof line, f))
        found = strstr(line, what) != NULL;
    if (f)
        fclose(f);
    return found;
}

/* Stop the daemon (exit status 0 expected) and remove everything of it.
 * Debug builds verify the heap after every request: no failure logged. */
static void finish(dh_daemon_t *d)
{
    check_healthy(d);
    CU_ASSERT_EQUAL(dh_stop(d), 0);
    CU_ASSERT(!log_has(d, "VERIFY FAILED"));
    if (log_has(d, "VERIFY FAILED"))
        dh_dump_log(d);
    dh_cleanup(d);
}

/* Hello on `c`; returns the session id (0 on failure). */
static uint32_t say_hello(ctl_client_t *c, const char *name)
{
    Spand__Response *r = hello(c, SPAND_PROTOCOL_VERSION, name);
    uint32_t id = 0;
    CU_ASSERT_EQUAL(err_of(r), 0);
    if (r && r->error == 0 && r->body_case == SPAND__RESPONSE__BODY_HELLO)
        id = r->hello->session_id;
    done(r);
    CU_ASSERT(id != 0);
    return id;
}

/* Map the arena from the fd that came with Hello (the fd stays c's). */
static bool map_arena(ctl_client_t *c, shm_arena_t *a)
{
    char err[SHM_ERRLEN];
    int fd = dup(c->arena_fd);
    CU_ASSERT(fd >= 0);
    int rc = shm_arena_map_fd(a, fd, err);
    CU_ASSERT_EQUAL(rc, 0);
    if (rc != 0) {
        fprintf(stderr, "map: %s\n", err);
        close(fd);
        return false;
    }
    return true;
}

static uint32_t session_spans(ctl_client_t *c, uint32_t session, bool *found)
{
    uint32_t n = 0;
    *found = false;
    Spand__Response *r = clients(c);
    if (r && r->body_case == SPAND__RESPONSE__BODY_CLIENTS)
        for (size_t i = 0; i < r->clients->n_clients; i++)
            if (r->clients->clients[i]->session_id == session) {
                *found = true;
                n = r->clients->clients[i]->spans;
            }
    done(r);
    return n;
}

/* ---- tests ---- */

static void test_ping_stats_verify(void)
{
    dh_daemon_t *d = start(NULL);
    ctl_client_t c;
    open_client(d, &c);
    Spand__Response *r = ping(&c, 123456789);
    CU_ASSERT(r && r->error == 0 && r->ping && r->ping->token == 123456789);
    done(r);

    r = stats(&c, true);
    CU_ASSERT(r && r->body_case == SPAND__RESPONSE__BODY_STATS);
    if (r && r->body_case == SPAND__RESPONSE__BODY_STATS) {
        const Spand__StatsReply *s = r->stats;
        CU_ASSERT_EQUAL(s->arena_size, 64u << 20);
        CU_ASSERT_EQUAL(s->daemon_pid, (uint32_t)d->pid);
        CU_ASSERT_EQUAL(s->clients, 0);
        CU_ASSERT(s->resident_bytes > 0);
        CU_ASSERT_EQUAL(s->n_classes, SHM_NCLASSES - 1);
        if (s->n_classes == SHM_NCLASSES - 1) {
            CU_ASSERT_EQUAL(s->classes[0]->sizeclass, 1);
            CU_ASSERT_EQUAL(s->classes[0]->size, shm_classes[1].size);
        }
#define CHECK_COUNTER(name, help) CU_ASSERT_EQUAL(counter(s, #name), 0);
        SHM_STAT_FIELDS(CHECK_COUNTER)
#undef CHECK_COUNTER
    }
    done(r);
    r = stats(&c, false);
    CU_ASSERT(r && r->stats && r->stats->n_classes == 0);
    done(r);
    ctl_close(&c);
    finish(d);
}

static void test_hello(void)
{
    dh_daemon_t *d = start(NULL);
    ctl_client_t c;
    open_client(d, &c);
    Spand__Response *r = hello(&c, SPAND_PROTOCOL_VERSION + 7, "old");
    CU_ASSERT_EQUAL(err_of(r), EPROTO);
    CU_ASSERT(r && r->message && strstr(r->message, "protocol version"));
    CU_ASSERT_EQUAL(c.arena_fd, -1);          /* no fd with an error */
    done(r);

    r = hello(&c, SPAND_PROTOCOL_VERSION, "test_hello");
    CU_ASSERT_EQUAL(err_of(r), 0);
    CU_ASSERT(r && r->body_case == SPAND__RESPONSE__BODY_HELLO);
    if (r && r->body_case == SPAND__RESPONSE__BODY_HELLO) {
        CU_ASSERT_EQUAL(r->hello->protocol_version, SPAND_PROTOCOL_VERSION);
        CU_ASSERT_EQUAL(r->hello->layout_version, SHM_LAYOUT_VERSION);
        CU_ASSERT_EQUAL(r->hello->arena_size, 64u << 20);
        CU_ASSERT_EQUAL(r->hello->base_address, SHM_DEFAULT_BASE);
        CU_ASSERT_EQUAL(r->hello->page_size, SHM_PAGE_SIZE);
        CU_ASSERT(r->hello->session_id >= 1);
    }
    done(r);
    CU_ASSERT(c.arena_fd >= 0);
    struct stat st;
    CU_ASSERT(c.arena_fd >= 0 && fstat(c.arena_fd, &st) == 0 &&
              (uint64_t)st.st_size == 64u << 20);
    shm_arena_t a;
    if (map_arena(&c, &a)) {
        CU_ASSERT_EQUAL(a.hdr->magic, SHM_MAGIC);
        CU_ASSERT_EQUAL(a.hdr->xdaemon_pid, (uint32_t)d->pid);
        CU_ASSERT_EQUAL(a.hdr->nsessions, 1);
        shm_arena_close(&a);
    }
    r = hello(&c, SPAND_PROTOCOL_VERSION, "again");    /* once per connection */
    CU_ASSERT_EQUAL(err_of(r), EINVAL);
    done(r);
    ctl_close(&c);
    finish(d);
}

static void test_refill_release(void)
{
    dh_daemon_t *d = start(NULL);
    ctl_client_t c;
    shm_arena_t a;
    open_client(d, &c);
    uint32_t sess = say_hello(&c, "refill");
    CU_ASSERT_FATAL(map_arena(&c, &a));

    uint32_t ids[4] = { 0 };
    Spand__Response *r = refill(&c, 5, 4, NULL, 0);
    CU_ASSERT_EQUAL(err_of(r), 0);
    CU_ASSERT(r && r->refill && r->refill->n_spans == 4);
    if (r && r->refill && r->refill->n_spans == 4)
        memcpy(ids, r->refill->spans, sizeof ids);
    done(r);
    for (int i = 0; i < 4; i++) {
        CU_ASSERT(ids[i] != 0);
        for (int j = 0; j < i; j++)
            CU_ASSERT(ids[i] != ids[j]);
        if (ids[i] == 0)
            continue;
        shm_span_t *s = shm_span(a.base, ids[i]);
        CU_ASSERT_EQUAL(shm_load_acquire(&s->xstate), SHM_SPAN_HELD);
        CU_ASSERT_EQUAL(s->sizeclass, 5);
        CU_ASSERT_EQUAL(s->session, sess);
    }
    bool found;
    CU_ASSERT_EQUAL(session_spans(&c, sess, &found), 4);
    CU_ASSERT(found);

    /* give two back: empty spans go to the heap */
    r = release(&c, ids, 2);
    CU_ASSERT_EQUAL(err_of(r), 0);
    CU_ASSERT(r && r->release && r->release->to_heap + r->release->to_central == 2);
    done(r);
    CU_ASSERT_EQUAL(session_spans(&c, sess, &found), 2);

    /* a Refill that gives the other two back on the way */
    r = refill(&c, 7, 1000, ids + 2, 2);
    CU_ASSERT_EQUAL(err_of(r), 0);
    CU_ASSERT(r && r->refill && r->refill->n_spans >= 1 && r->refill->n_spans <= 256);
    uint32_t got = r && r->refill ? (uint32_t)r->refill->n_spans : 0;
    done(r);
    CU_ASSERT_EQUAL(session_spans(&c, sess, &found), got);

    r = stats(&c, true);
    if (r && r->stats) {
        CU_ASSERT_EQUAL(counter(r->stats, "refills"), 2);
        CU_ASSERT_EQUAL(counter(r->stats, "refill_spans"), 4 + got);
        CU_ASSERT_EQUAL(counter(r->stats, "releases"), 4);
        CU_ASSERT_EQUAL(r->stats->classes[6]->spans_held, got);   /* class 7 */
        CU_ASSERT_EQUAL(r->stats->clients, 1);
    }
    done(r);
    shm_arena_close(&a);
    ctl_close(&c);
    finish(d);
}

/* Every way to release what one does not hold is refused as a whole. */
static void test_release_refused(void)
{
    dh_daemon_t *d = start(NULL);
    ctl_client_t c1, c2;
    open_client(d, &c1);
    open_client(d, &c2);
    uint32_t s1 = say_hello(&c1, "one");
    say_hello(&c2, "two");
    uint32_t mine[2] = { 0 }, theirs = 0;
    Spand__Response *r = refill(&c1, 3, 2, NULL, 0);
    if (r && r->refill && r->refill->n_spans == 2)
        memcpy(mine, r->refill->spans, sizeof mine);
    done(r);
    r = refill(&c2, 3, 1, NULL, 0);
    if (r && r->refill && r->refill->n_spans == 1)
        theirs = r->refill->spans[0];
    done(r);
    CU_ASSERT_FATAL(mine[0] && mine[1] && theirs);

    uint32_t other[2] = { mine[0], theirs };
    r = release(&c1, other, 2);                          /* one is not ours */
    CU_ASSERT_EQUAL(err_of(r), EINVAL);
    CU_ASSERT(r && r->message && strstr(r->message, "another client"));
    done(r);
    uint32_t dup[2] = { mine[0], mine[0] };
    r = release(&c1, dup, 2);                            /* twice in one request */
    CU_ASSERT_EQUAL(err_of(r), EINVAL);
    done(r);
    uint32_t out[2] = { mine[1], 0x7fffffff };
    r = release(&c1, out, 2);                            /* out of range */
    CU_ASSERT_EQUAL(err_of(r), EINVAL);
    CU_ASSERT(r && r->message && strstr(r->message, "no such span"));
    done(r);
    uint32_t zero = 0;
    r = release(&c1, &zero, 1);
    CU_ASSERT_EQUAL(err_of(r), EINVAL);
    done(r);
    r = refill(&c1, 3, 1, other, 2);                     /* piggybacked: same rules */
    CU_ASSERT_EQUAL(err_of(r), EINVAL);
    done(r);
    bool found;
    CU_ASSERT_EQUAL(session_spans(&c1, s1, &found), 2);  /* nothing changed */

    r = release(&c1, mine, 2);                           /* now properly */
    CU_ASSERT_EQUAL(err_of(r), 0);
    done(r);
    r = release(&c1, mine, 1);                           /* not held any more */
    CU_ASSERT_EQUAL(err_of(r), EINVAL);
    CU_ASSERT(r && r->message && strstr(r->message, "not held"));
    done(r);
    CU_ASSERT(counter_now(d, "bad_requests") >= 6);
    ctl_close(&c1);
    ctl_close(&c2);
    finish(d);
}

static void test_bad_class_and_no_session(void)
{
    dh_daemon_t *d = start(NULL);
    ctl_client_t c;
    open_client(d, &c);
    Spand__Response *r = refill(&c, 3, 1, NULL, 0);      /* before Hello */
    CU_ASSERT_EQUAL(err_of(r), EPROTO);
    CU_ASSERT(r && r->message && strstr(r->message, "before Hello"));
    done(r);
    r = alloc_large(&c, 1 << 20, 0);
    CU_ASSERT_EQUAL(err_of(r), EPROTO);
    done(r);
    say_hello(&c, "classes");
    r = refill(&c, 0, 1, NULL, 0);
    CU_ASSERT_EQUAL(err_of(r), EINVAL);
    CU_ASSERT(r && r->body_case == SPAND__RESPONSE__BODY__NOT_SET);
    done(r);
    r = refill(&c, SHM_NCLASSES, 1, NULL, 0);
    CU_ASSERT_EQUAL(err_of(r), EINVAL);
    CU_ASSERT(r && r->message && strstr(r->message, "no size class"));
    done(r);
    r = refill(&c, 0xffffffffu, 1, NULL, 0);
    CU_ASSERT_EQUAL(err_of(r), EINVAL);
    done(r);
    r = ping(&c, 9);                                      /* same connection goes on */
    CU_ASSERT(r && r->error == 0 && r->ping && r->ping->token == 9);
    done(r);
    ctl_close(&c);
    finish(d);
}

/* AllocLarge's extra spans for the caller's thread cache: at most 15, each
 * tagged CACHED for the caller's session; none for a size the pool does not
 * take or an alignment beyond a page; the session's end frees them. */
static void test_large_extra(void)
{
    dh_daemon_t *d = start(NULL);
    ctl_client_t c;
    open_client(d, &c);
    uint32_t session = say_hello(&c, "extra");
    shm_arena_t a;
    CU_ASSERT_FATAL(map_arena(&c, &a));
    Spand__Response *r = alloc_large_extra(&c, 256 << 10, 0, 1000);
    CU_ASSERT_EQUAL(err_of(r), 0);
    CU_ASSERT(r && r->alloc_large && r->alloc_large->n_extra == 15);
    for (size_t i = 0; r && r->alloc_large && i < r->alloc_large->n_extra; i++) {
        uint64_t off = r->alloc_large->extra[i];
        CU_ASSERT(off != r->alloc_large->offset && off % SHM_PAGE_SIZE == 0);
        shm_span_t *s = shm_span(a.base, shm_load_relaxed(&shm_spanmap(a.base)[off >> SHM_PAGE_SHIFT]));
        CU_ASSERT_EQUAL(shm_load_relaxed(&s->xstate), SHM_SPAN_LARGE);
        CU_ASSERT_EQUAL((uint64_t)s->start << SHM_PAGE_SHIFT, off);
        CU_ASSERT_EQUAL(s->npages, (256u << 10) / SHM_PAGE_SIZE);
        CU_ASSERT_EQUAL(shm_load_relaxed(&s->xowner), SHM_LARGE_CACHED);
        CU_ASSERT_EQUAL(shm_load_relaxed(&s->xlarge), session);
    }
    done(r);
    r = alloc_large_extra(&c, 2 << 20, 0, 3);            /* past the pool's sizes */
    CU_ASSERT_EQUAL(err_of(r), 0);
    CU_ASSERT(r && r->alloc_large && r->alloc_large->n_extra == 0);
    done(r);
    r = alloc_large_extra(&c, 256 << 10, 1 << 16, 3);    /* aligned beyond a page */
    CU_ASSERT_EQUAL(err_of(r), 0);
    CU_ASSERT(r && r->alloc_large && r->alloc_large->n_extra == 0);
    done(r);
    r = stats(&c, false);
    CU_ASSERT(r && r->stats && counter(r->stats, "large_alloc_calls") == 3);
    CU_ASSERT(r && r->stats && counter(r->stats, "large_allocs") == 18);
    CU_ASSERT(r && r->stats && r->stats->large_pool_bytes == 15u * (256 << 10));
    done(r);
    check_healthy(d);                                   /* CACHED by an open session */
    shm_arena_close(&a);
    ctl_close(&c);                                      /* the session ends */
    ctl_client_t c2;
    open_client(d, &c2);
    uint64_t frees = 0;
    for (int i = 0; i < 200 && frees != 15; i++) {
        r = stats(&c2, false);
        frees = r && r->stats ? counter(r->stats, "large_frees") : 0;
        if (frees != 15)
            nanosleep(&(struct timespec){ 0, 10 * 1000 * 1000 }, NULL);
        done(r);
    }
    CU_ASSERT_EQUAL(frees, 15);                         /* the extras, not the three */
    r = stats(&c2, false);
    CU_ASSERT(r && r->stats && r->stats->large_pool_bytes == 0);
    CU_ASSERT(r && r->stats && r->stats->large_bytes >= (2u << 20) + (512u << 10));
    done(r);
    ctl_close(&c2);
    finish(d);
}

static void test_large(void)
{
    dh_daemon_t *d = start(NULL);
    ctl_client_t c;
    open_client(d, &c);
    say_hello(&c, "large");
    Spand__Response *r = alloc_large(&c, 1 << 20, 0);
    CU_ASSERT_EQUAL(err_of(r), 0);
    uint64_t off = 0;
    if (r && r->alloc_large) {
        off = r->alloc_large->offset;
        CU_ASSERT(r->alloc_large->usable_size >= 1 << 20);
        CU_ASSERT_EQUAL(off % SHM_PAGE_SIZE, 0);
    }
    done(r);
    CU_ASSERT(off != 0);
    r = stats(&c, false);
    CU_ASSERT(r && r->stats && r->stats->large_bytes >= 1 << 20);
    CU_ASSERT(r && r->stats && counter(r->stats, "large_allocs") == 1);
    done(r);

    r = alloc_large(&c, 3 << 16, 1 << 16);               /* aligned */
    CU_ASSERT_EQUAL(err_of(r), 0);
    uint64_t off2 = r && r->alloc_large ? r->alloc_large->offset : 0;
    CU_ASSERT(off2 != 0 && (SHM_DEFAULT_BASE + off2) % (1 << 16) == 0);
    done(r);

    r = free_large(&c, off);
    CU_ASSERT_EQUAL(err_of(r), 0);
    done(r);
    r = free_large(&c, off);                             /* twice */
    CU_ASSERT_EQUAL(err_of(r), EINVAL);
    char hex[32];
    snprintf(hex, sizeof hex, "%#llx", (unsigned long long)off);
    CU_ASSERT(r && r->message && strstr(r->message, hex));
    done(r);
    r = free_large(&c, 12345);                           /* never allocated */
    CU_ASSERT_EQUAL(err_of(r), EINVAL);
    done(r);
    r = free_large(&c, 1ULL << 50);                      /* outside the arena */
    CU_ASSERT_EQUAL(err_of(r), EINVAL);
    done(r);
    r = alloc_large(&c, 1ULL << 30, 0);                  /* more than the arena */
    CU_ASSERT_EQUAL(err_of(r), ENOMEM);
    done(r);
    r = alloc_large(&c, 1 << 20, 3 << 12);               /* bad alignment */
    CU_ASSERT_EQUAL(err_of(r), EINVAL);
    done(r);
    r = alloc_large(&c, 0, 0);
    CU_ASSERT_EQUAL(err_of(r), EINVAL);
    done(r);
    r = free_large(&c, off2);
    CU_ASSERT_EQUAL(err_of(r), 0);
    done(r);
    r = stats(&c, false);
    CU_ASSERT(r && r->stats && r->stats->large_bytes == 0);
    done(r);
    ctl_close(&c);
    finish(d);
}

/* The large pool from the daemon's side: this process maps the arena and
 * pools a large object as a client would (shm/lpool.h); FreeLarge of it is
 * refused and the daemon goes on; Stats counts it apart; Scavenge drains
 * it; its size is an eighth of the arena unless --large-pool says; a bad
 * --large-pool is refused. */
static void test_large_pool(void)
{
    const char *args[] = { "-m", "64M", "--scavenge-interval", "0", NULL };
    dh_daemon_t *d = start(args);
    shm_arena_t a;
    char err[SHM_ERRLEN];
    CU_ASSERT_EQUAL_FATAL(shm_arena_open(&a, d->shm, err), 0);
    /* no --large-pool: an eighth of the arena */
    CU_ASSERT_EQUAL(a.hdr->lpool.cap_pages, ((64u << 20) / 8) >> SHM_PAGE_SHIFT);
    ctl_client_t c;
    open_client(d, &c);
    say_hello(&c, "pool");
    Spand__Response *r = alloc_large(&c, 256 << 10, 0);
    CU_ASSERT_EQUAL(err_of(r), 0);
    uint64_t off = r && r->alloc_large ? r->alloc_large->offset : 0;
    done(r);
    CU_ASSERT_FATAL(off != 0);
    shm_span_t *s = shm_span_of(a.base, a.base + off);
    CU_ASSERT_PTR_NOT_NULL_FATAL(s);
    CU_ASSERT_EQUAL(shm_lpool_free(a.base, s), SHM_LFREE_POOLED);
    r = free_large(&c, off);                             /* pooled: freed already */
    CU_ASSERT_EQUAL(err_of(r), EINVAL);
    CU_ASSERT(r && r->message && strstr(r->message, "large pool"));
    done(r);
    r = stats(&c, false);
    CU_ASSERT(r && r->stats && r->stats->large_bytes == 0);
    CU_ASSERT(r && r->stats && r->stats->large_pool_bytes == 256 << 10);
    CU_ASSERT(r && r->stats && r->stats->large_pool_puts == 1);
    CU_ASSERT(r && r->stats && counter(r->stats, "large_frees") == 0);
    done(r);
    ctl_close(&c);                                       /* no session: verify walks the pool */
    check_healthy(d);
    open_client(d, &c);
    r = scavenge(&c);
    CU_ASSERT_EQUAL(err_of(r), 0);
    done(r);
    r = stats(&c, false);
    CU_ASSERT(r && r->stats && r->stats->large_pool_bytes == 0);
    CU_ASSERT(r && r->stats && counter(r->stats, "large_frees") == 1);
    done(r);
    CU_ASSERT_EQUAL(shm_load_relaxed(&a.hdr->lpool.xpages), 0);
    ctl_close(&c);
    shm_arena_close(&a);
    const char *bad[] = { "--large-pool", "lots", NULL };
    CU_ASSERT_EQUAL(dh_run_expect_exit(d, bad, err, sizeof err), 2);
    CU_ASSERT(strstr(err, "bad size") != NULL);
    finish(d);
}

/* A full arena: Refill answers ENOMEM, or hands out what it could get. */
static void test_arena_full(void)
{
    const char *args[] = { "-m", "16M", NULL };
    dh_daemon_t *d = start(args);
    ctl_client_t c;
    open_client(d, &c);
    say_hello(&c, "full");
    uint64_t big[64];
    unsigned nbig = 0, nsmall = 0;
    Spand__Response *r;
    for (;;) {                                       /* fill it: 1 MiB at a time */
        r = alloc_large(&c, 1 << 20, 0);
        bool ok = r && r->error == 0 && r->alloc_large;
        if (ok && nbig < 64)
            big[nbig++] = r->alloc_large->offset;
        CU_ASSERT(ok || err_of(r) == ENOMEM);
        done(r);
        if (!ok || nbig == 64)
            break;
    }
    for (;;) {                                       /* then page by page */
        r = alloc_large(&c, SHM_PAGE_SIZE, 0);
        bool ok = r && r->error == 0;
        CU_ASSERT(ok || err_of(r) == ENOMEM);
        done(r);
        if (!ok || ++nsmall > 4096)
            break;
    }
    CU_ASSERT(nbig >= 8 && nbig < 64);
    r = refill(&c, 1, 4, NULL, 0);
    CU_ASSERT_EQUAL(err_of(r), ENOMEM);
    CU_ASSERT(r && r->message && strlen(r->message) > 0);
    done(r);

    /* room for part of a batch: what fits is handed out, without error */
    unsigned cls = 1;
    for (unsigned k = 1; k < SHM_NCLASSES; k++)
        if (shm_classes[k].npages > shm_classes[cls].npages)
            cls = k;
    unsigned fits = (1u << 20) / (shm_classes[cls].npages * SHM_PAGE_SIZE);
    CU_ASSERT_FATAL(nbig >= 1 && fits < 64);
    r = free_large(&c, big[0]);
    CU_ASSERT_EQUAL(err_of(r), 0);
    done(r);
    r = refill(&c, cls, 64, NULL, 0);
    CU_ASSERT_EQUAL(err_of(r), 0);
    CU_ASSERT(r && r->refill && r->refill->n_spans == fits);
    done(r);
    r = refill(&c, cls, 1, NULL, 0);
    CU_ASSERT_EQUAL(err_of(r), ENOMEM);
    done(r);
    CU_ASSERT_EQUAL(counter_now(d, "bad_requests"), 0);  /* ENOMEM is not bad input */
    ctl_close(&c);
    finish(d);
}

static Spand__Response *recv_one(ctl_client_t *c)
{
    Spand__Response *r = NULL;
    int rc = ctl_recv(c, &r);
    CU_ASSERT_EQUAL(rc, 0);
    return rc == 0 ? r : NULL;
}

static void test_bad_frames(void)
{
    dh_daemon_t *d = start(NULL);
    ctl_client_t c;
    Spand__Response *r;

    /* bytes that do not decode: an error, and the connection goes on */
    open_client(d, &c);
    const uint8_t junk[] = { 0, 0, 0, 5, 0xff, 0xff, 0xff, 0xff, 0xff };
    CU_ASSERT_EQUAL(ctl_send_raw(&c, junk, sizeof junk), 0);
    r = recv_one(&c);
    CU_ASSERT_EQUAL(err_of(r), EPROTO);
    CU_ASSERT(r && r->id == 0);
    done(r);
    /* an empty frame: a Request with no body */
    const uint8_t empty[] = { 0, 0, 0, 0 };
    CU_ASSERT_EQUAL(ctl_send_raw(&c, empty, sizeof empty), 0);
    r = recv_one(&c);
    CU_ASSERT_EQUAL(err_of(r), EPROTO);
    done(r);
    /* id 7 and an unknown field number 30 */
    const uint8_t unknown[] = { 0, 0, 0, 5, 0x08, 0x07, 0xf0, 0x01, 0x01 };
    CU_ASSERT_EQUAL(ctl_send_raw(&c, unknown, sizeof unknown), 0);
    r = recv_one(&c);
    CU_ASSERT_EQUAL(err_of(r), EPROTO);
    CU_ASSERT(r && r->id == 7 && r->message && strstr(r->message, "unknown"));
    done(r);
    /* a well-formed Request with no body keeps its id */
    Spand__Request req = SPAND__REQUEST__INIT;
    req.id = 42;
    CU_ASSERT_EQUAL(ctl_send(&c, &req), 0);
    r = recv_one(&c);
    CU_ASSERT(r && r->id == 42 && r->error == EPROTO);
    done(r);
    r = ping(&c, 77);
    CU_ASSERT(r && r->error == 0 && r->ping && r->ping->token == 77);
    done(r);
    ctl_close(&c);

    /* a frame over the limit: an error, then that connection is closed */
    open_client(d, &c);
    uint8_t big[4];
    spand_frame_put_len(big, SPAND_MAX_FRAME + 1);
    CU_ASSERT_EQUAL(ctl_send_raw(&c, big, sizeof big), 0);
    r = recv_one(&c);
    CU_ASSERT_EQUAL(err_of(r), EMSGSIZE);
    done(r);
    r = NULL;
    int rc = ctl_recv(&c, &r);
    CU_ASSERT(rc == -EPIPE || rc == -ECONNRESET);
    done(r);
    ctl_close(&c);

    /* a frame exactly at the limit is read whole (and does not decode) */
    open_client(d, &c);
    uint8_t *max = calloc(1, SPAND_FRAME_HDR + SPAND_MAX_FRAME);
    CU_ASSERT_FATAL(max != NULL);
    spand_frame_put_len(max, SPAND_MAX_FRAME);
    memset(max + SPAND_FRAME_HDR, 0xff, SPAND_MAX_FRAME);
    CU_ASSERT_EQUAL(ctl_send_raw(&c, max, SPAND_FRAME_HDR + SPAND_MAX_FRAME), 0);
    free(max);
    r = recv_one(&c);
    CU_ASSERT_EQUAL(err_of(r), EPROTO);
    done(r);
    r = ping(&c, 78);
    CU_ASSERT(r && r->error == 0);
    done(r);
    ctl_close(&c);

    /* a client that hangs up in the middle of a frame */
    open_client(d, &c);
    const uint8_t half[] = { 0, 0, 0, 100, 1, 2, 3 };
    CU_ASSERT_EQUAL(ctl_send_raw(&c, half, sizeof half), 0);
    ctl_close(&c);

    CU_ASSERT(counter_now(d, "bad_requests") >= 6);
    finish(d);
}

/* Many frames in one write are all answered, in order, with their ids;
 * a Hello among them brings its fd and keeps the order. */
static void test_pipelined(void)
{
    dh_daemon_t *d = start(NULL);
    ctl_client_t c;
    open_client(d, &c);
    enum { N = 201, HELLO_AT = 100 };
    size_t cap = N * 64, len = 0;
    uint8_t *buf = malloc(cap);
    CU_ASSERT_FATAL(buf != NULL);
    for (unsigned i = 0; i < N; i++) {
        Spand__Request req = SPAND__REQUEST__INIT;
        Spand__Ping p = SPAND__PING__INIT;
        Spand__Hello h = SPAND__HELLO__INIT;
        req.id = i + 1;
        if (i == HELLO_AT) {
            h.protocol_version = SPAND_PROTOCOL_VERSION;
            req.body_case = SPAND__REQUEST__BODY_HELLO;
            req.hello = &h;
        } else {
            p.token = 1000 + i;
            req.body_case = SPAND__REQUEST__BODY_PING;
            req.ping = &p;
        }
        size_t n = spand__request__get_packed_size(&req);
        spand_frame_put_len(buf + len, (uint32_t)n);
        spand__request__pack(&req, buf + len + SPAND_FRAME_HDR);
        len += SPAND_FRAME_HDR + n;
    }
    CU_ASSERT_EQUAL(ctl_send_raw(&c, buf, len), 0);
    free(buf);
    unsigned in_order = 0;
    for (unsigned i = 0; i < N; i++) {
        Spand__Response *r = recv_one(&c);
        if (r == NULL)
            break;
        bool ok = r->id == i + 1 && r->error == 0;
        if (i == HELLO_AT)
            ok = ok && r->body_case == SPAND__RESPONSE__BODY_HELLO;
        else
            ok = ok && r->body_case == SPAND__RESPONSE__BODY_PING && r->ping->token == 1000 + i;
        in_order += ok;
        done(r);
    }
    CU_ASSERT_EQUAL(in_order, N);
    CU_ASSERT(c.arena_fd >= 0);
    ctl_close(&c);

    /* a client that sends much and reads late: answers wait, none is lost */
    open_client(d, &c);
    enum { M = 3000 };
    Spand__Request req = SPAND__REQUEST__INIT;
    Spand__StatsRequest st = SPAND__STATS_REQUEST__INIT;
    st.classes = true;
    req.body_case = SPAND__REQUEST__BODY_STATS;
    req.stats = &st;
    size_t one = spand__request__get_packed_size(&req) + 8;
    buf = malloc(M * (one + SPAND_FRAME_HDR));
    CU_ASSERT_FATAL(buf != NULL);
    len = 0;
    for (unsigned i = 0; i < M; i++) {
        req.id = i + 1;
        size_t n = spand__request__get_packed_size(&req);
        spand_frame_put_len(buf + len, (uint32_t)n);
        spand__request__pack(&req, buf + len + SPAND_FRAME_HDR);
        len += SPAND_FRAME_HDR + n;
    }
    CU_ASSERT_EQUAL(ctl_send_raw(&c, buf, len), 0);
    free(buf);
    sleep_ms(200);
    unsigned good = 0;
    for (unsigned i = 0; i < M; i++) {
        Spand__Response *r = recv_one(&c);
        if (r == NULL)
            break;
        good += r->id == i + 1 && r->error == 0 && r->stats &&
                r->stats->n_classes == SHM_NCLASSES - 1;
        done(r);
    }
    CU_ASSERT_EQUAL(good, M);
    ctl_close(&c);
    finish(d);
}

/* A peer of another uid is refused by SO_PEERCRED even when the socket's
 * permissions let it connect. */
static void test_other_uid_refused(void)
{
    if (geteuid() != 0) {
        fprintf(stderr, "(not root: cannot switch to another uid; test skipped)\n");
        return;
    }
    dh_daemon_t *d = start(NULL);
    struct passwd *pw = getpwnam("nobody");
    uid_t uid = pw ? pw->pw_uid : 65534;
    gid_t gid = pw ? pw->pw_gid : 65534;
    /* for this test only: let anyone reach the socket */
    CU_ASSERT_EQUAL(chmod(d->dir, 0755), 0);
    CU_ASSERT_EQUAL(chmod(d->sock, 0666), 0);
    pid_t pid = fork();
    if (pid == 0) {
        ctl_client_t c;
        Spand__Response *r = NULL;
        if (setgroups(0, NULL) != 0 || setgid(gid) != 0 || setuid(uid) != 0)
            _exit(2);
        if (ctl_connect(&c, d->sock, 3000) != 0)
            _exit(3);
        Spand__Request req = SPAND__REQUEST__INIT;
        Spand__Hello h = SPAND__HELLO__INIT;
        h.protocol_version = SPAND_PROTOCOL_VERSION;
        req.body_case = SPAND__REQUEST__BODY_HELLO;
        req.hello = &h;
        if (ctl_call(&c, &req, &r) != 0)
            _exit(4);
        if (r->error != EACCES || c.arena_fd >= 0)
            _exit(5);
        spand__response__free_unpacked(r, NULL);
        r = NULL;
        int rc = ctl_recv(&c, &r);             /* and then it hangs up */
        _exit(rc == -EPIPE || rc == -ECONNRESET ? 0 : 6);
    }
    int status = -1;
    CU_ASSERT_EQUAL(dh_waitpid_timeout(pid, &status, 10000), 0);
    CU_ASSERT(WIFEXITED(status));
    CU_ASSERT_EQUAL(WEXITSTATUS(status), 0);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
        fprintf(stderr, "other-uid child: status %#x\n", status);
    ctl_client_t c;
    open_client(d, &c);
    bool found;
    Spand__Response *r = stats(&c, false);
    CU_ASSERT(r && r->stats && r->stats->clients == 0);
    done(r);
    (void)found;
    ctl_close(&c);
    finish(d);
}

/* A child that says Hello, takes spans of class 3, allocates `nobj` objects
 * in the first, says so on `ready_fd`, then exits when `go_fd` reaches its
 * end (or waits there to be killed). */
static void client_child(const char *sock, int ready_fd, int go_fd, int nobj)
{
    ctl_client_t c;
    shm_arena_t a;
    char err[SHM_ERRLEN];
    Spand__Response *r = NULL;
    Spand__Request req = SPAND__REQUEST__INIT;
    Spand__Hello h = SPAND__HELLO__INIT;
    Spand__Refill rf = SPAND__REFILL__INIT;
    if (ctl_connect(&c, sock, 3000) != 0)
        _exit(3);
    h.protocol_version = SPAND_PROTOCOL_VERSION;
    h.client_name = "doomed";
    req.body_case = SPAND__REQUEST__BODY_HELLO;
    req.hello = &h;
    if (ctl_call(&c, &req, &r) != 0 || r->error != 0 || c.arena_fd < 0)
        _exit(4);
    if (shm_arena_map_fd(&a, c.arena_fd, err) != 0)
        _exit(5);
    c.arena_fd = -1;
    rf.sizeclass = 3;
    rf.nspans = 8;
    req = (Spand__Request)SPAND__REQUEST__INIT;
    req.body_case = SPAND__REQUEST__BODY_REFILL;
    req.refill = &rf;
    if (ctl_call(&c, &req, &r) != 0 || r->error != 0 || r->refill->n_spans != 8)
        _exit(6);
    shm_span_t *s = shm_span(a.base, r->refill->spans[0]);
    for (int i = 0; i < nobj; i++)
        if (fx_take(a.base, s) == NULL)
            _exit(7);
    if (write(ready_fd, "r", 1) != 1)
        _exit(8);
    char ch;
    while (read(go_fd, &ch, 1) > 0)
        ;
    _exit(0);                 /* no Release, no goodbye */
}

/* Fork a client, end it (exit or SIGKILL), and check its spans come back
 * within one second with its objects still allocated. */
static void check_adoption(bool by_kill)
{
    dh_daemon_t *d = start(NULL);
    int p[2], go[2];
    CU_ASSERT_FATAL(pipe(p) == 0 && pipe(go) == 0);
    uint64_t adopted0 = counter_now(d, "adopted_spans");
    pid_t pid = fork();
    if (pid == 0) {
        close(p[0]);
        close(go[1]);
        client_child(d->sock, p[1], go[0], 5);
    }
    close(p[1]);
    close(go[0]);
    char ch;
    CU_ASSERT_EQUAL(read(p[0], &ch, 1), 1);   /* it holds its spans now */
    close(p[0]);
    ctl_client_t c;
    open_client(d, &c);
    Spand__Response *r = clients(&c);
    CU_ASSERT(r && r->clients && r->clients->n_clients == 1 &&
              r->clients->clients[0]->spans == 8 &&
              r->clients->clients[0]->pid == (uint32_t)pid &&
              strcmp(r->clients->clients[0]->name, "doomed") == 0);
    done(r);

    int status;
    if (by_kill)
        kill(pid, SIGKILL);
    close(go[1]);                             /* exits, if still alive */
    CU_ASSERT_EQUAL(dh_waitpid_timeout(pid, &status, 5000), 0);
    CU_ASSERT(by_kill ? WIFSIGNALED(status) : (WIFEXITED(status) && !WEXITSTATUS(status)));
    double t0 = now_s(), waited = 0;
    uint32_t nclients = 1;
    while (waited < 2.0) {
        r = stats(&c, false);
        nclients = r && r->stats ? r->stats->clients : 1;
        done(r);
        if (nclients == 0)
            break;
        sleep_ms(10);
        waited = now_s() - t0;
    }
    CU_ASSERT_EQUAL(nclients, 0);
    CU_ASSERT(waited < 1.0);
    CU_ASSERT_EQUAL(counter_now(d, "adopted_spans") - adopted0, 8);
    r = stats(&c, true);
    if (r && r->stats && r->stats->n_classes >= 3) {
        const Spand__ClassStats *cs = r->stats->classes[2];         /* class 3 */
        CU_ASSERT_EQUAL(cs->sizeclass, 3);
        CU_ASSERT_EQUAL(cs->spans_held, 0);
        CU_ASSERT_EQUAL(cs->live_objects, 5);                      /* still allocated */
        CU_ASSERT(cs->spans_central >= 1);
    } else {
        CU_FAIL("no class table");
    }
    done(r);
    ctl_close(&c);
    finish(d);
}

static void test_client_exit_adopted(void)
{
    check_adoption(false);
}

static void test_client_killed_adopted(void)
{
    check_adoption(true);
}

static uint64_t fd_resident(int fd)
{
    struct stat st;
    return fstat(fd, &st) == 0 ? (uint64_t)st.st_blocks * 512 : 0;
}

/* Allocate `mib` MiB as one large object, touch it, free it; returns the
 * arena's resident bytes before the free. */
static uint64_t dirty_and_free(ctl_client_t *c, unsigned mib)
{
    shm_arena_t a;
    uint64_t resident = 0;
    Spand__Response *r = alloc_large(c, (uint64_t)mib << 20, 0);
    CU_ASSERT_EQUAL(err_of(r), 0);
    uint64_t off = r && r->alloc_large ? r->alloc_large->offset : 0;
    done(r);
    if (off == 0 || !map_arena(c, &a))
        return 0;
    memset(a.base + off, 0xa5, (size_t)mib << 20);
    shm_arena_close(&a);
    resident = fd_resident(c->arena_fd);
    r = free_large(c, off);
    CU_ASSERT_EQUAL(err_of(r), 0);
    done(r);
    return resident;
}

static void test_scavenge_now(void)
{
    const char *args[] = { "-m", "256M", "--scavenge-interval", "0", NULL };
    dh_daemon_t *d = start(args);
    ctl_client_t c;
    open_client(d, &c);
    say_hello(&c, "scavenge");
    uint64_t before = dirty_and_free(&c, 48);
    CU_ASSERT(before >= 48u << 20);
    CU_ASSERT(fd_resident(c.arena_fd) >= 48u << 20);     /* free, still resident */
    Spand__Response *r = scavenge(&c);
    CU_ASSERT_EQUAL(err_of(r), 0);
    CU_ASSERT(r && r->scavenge && r->scavenge->released_bytes >= 46u << 20);
    done(r);
    uint64_t after = fd_resident(c.arena_fd);
    CU_ASSERT(after + (46u << 20) <= before);
    r = stats(&c, false);
    if (r && r->stats) {
        CU_ASSERT(r->stats->resident_bytes + (46u << 20) <= before);
        CU_ASSERT(r->stats->unbacked_bytes >= 46u << 20);
        CU_ASSERT(counter(r->stats, "scavenged_bytes") >= 46u << 20);
        CU_ASSERT_EQUAL(counter(r->stats, "scavenges"), 1);
    }
    done(r);
    ctl_close(&c);
    finish(d);
}

static void test_scavenger_timer(void)
{
    const char *args[] = { "-m", "256M", "--scavenge-interval", "1", NULL };
    dh_daemon_t *d = start(args);
    ctl_client_t c;
    open_client(d, &c);
    say_hello(&c, "timer");
    uint64_t before = dirty_and_free(&c, 32);
    CU_ASSERT(before >= 32u << 20);
    uint64_t released = 0;
    for (int i = 0; i < 60 && released < (30u << 20); i++) {  /* up to 6 s */
        sleep_ms(100);
        Spand__Response *r = stats(&c, false);
        if (r && r->stats)
            released = counter(r->stats, "scavenged_bytes");
        done(r);
    }
    CU_ASSERT(released >= 30u << 20);
    CU_ASSERT(fd_resident(c.arena_fd) + (30u << 20) <= before);
    ctl_close(&c);
    finish(d);
}

/* Run a program; its exit status and stdout. */
static int run_capture(const char *const *argv, char *out, size_t len)
{
    int p[2], status;
    if (pipe(p) != 0)
        return -1;
    pid_t pid = fork();
    if (pid == 0) {
        dup2(p[1], 1);
        dup2(p[1], 2);
        close(p[0]);
        close(p[1]);
        execv(argv[0], (char *const *)argv);
        _exit(127);
    }
    close(p[1]);
    size_t n = 0;
    ssize_t k;
    while (n + 1 < len && (k = read(p[0], out + n, len - 1 - n)) > 0)
        n += (size_t)k;
    out[n] = '\0';
    close(p[0]);
    if (dh_waitpid_timeout(pid, &status, 10000) != 0) {
        kill(pid, SIGKILL);
        waitpid(pid, &status, 0);
        return -1;
    }
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

/* ---- a small JSON checker: is `s` one JSON value? ---- */

static const char *json_value(const char *s);

static const char *json_ws(const char *s)
{
    while (*s == ' ' || *s == '\n' || *s == '\t' || *s == '\r')
        s++;
    return s;
}

static const char *json_string(const char *s)
{
    if (*s++ != '"')
        return NULL;
    for (; *s && *s != '"'; s++) {
        if ((unsigned char)*s < 0x20)
            return NULL;
        if (*s == '\\' && !*++s)
            return NULL;
    }
    return *s == '"' ? s + 1 : NULL;
}

static const char *json_list(const char *s, char close, bool object)
{
    s = json_ws(s + 1);
    if (*s == close)
        return s + 1;
    for (;;) {
        if (object) {
            if (!(s = json_string(json_ws(s))))
                return NULL;
            s = json_ws(s);
            if (*s++ != ':')
                return NULL;
        }
        if (!(s = json_value(s)))
            return NULL;
        s = json_ws(s);
        if (*s == close)
            return s + 1;
        if (*s++ != ',')
            return NULL;
    }
}

static const char *json_value(const char *s)
{
    s = json_ws(s);
    if (*s == '{')
        return json_list(s, '}', true);
    if (*s == '[')
        return json_list(s, ']', false);
    if (*s == '"')
        return json_string(s);
    if (!strncmp(s, "true", 4) || !strncmp(s, "null", 4))
        return s + 4;
    if (!strncmp(s, "false", 5))
        return s + 5;
    const char *start = s;
    if (*s == '-')
        s++;
    while ((*s >= '0' && *s <= '9') || *s == '.' || *s == 'e' || *s == 'E' || *s == '+')
        s++;
    return s > start ? s : NULL;
}

static bool json_ok(const char *s)
{
    const char *e = json_value(s);
    return e != NULL && *json_ws(e) == '\0';
}

static void test_json_checker(void)
{
    CU_ASSERT(json_ok("{\"a\": 1, \"b\": [true, null, \"x\\\"y\"], \"c\": {}}\n"));
    CU_ASSERT(!json_ok("{\"a\": 1,}"));
    CU_ASSERT(!json_ok("{\"a\" 1}"));
    CU_ASSERT(!json_ok("{\"a\": 1} x"));
    CU_ASSERT(!json_ok("[1, 2"));
}

static void test_spanctl(void)
{
    const char *ctl = getenv("SPANCTL_BIN");
    CU_ASSERT_FATAL(ctl != NULL);
    dh_daemon_t *d = start(NULL);
    static char out[1 << 16];

    const char *ping_argv[] = { ctl, "-s", d->sock, "ping", NULL };
    CU_ASSERT_EQUAL(run_capture(ping_argv, out, sizeof out), 0);
    CU_ASSERT(strstr(out, "pong") != NULL);

    const char *json_argv[] = { ctl, "-s", d->sock, "stats", "--json", NULL };
    CU_ASSERT_EQUAL(run_capture(json_argv, out, sizeof out), 0);
    CU_ASSERT(json_ok(out));
    char want[64];
    snprintf(want, sizeof want, "\"daemon_pid\": %ld", (long)d->pid);
    CU_ASSERT(strstr(out, want) != NULL);
    CU_ASSERT(strstr(out, "\"arena_size\": 67108864") != NULL);
    CU_ASSERT(strstr(out, "\"resident_bytes\": ") != NULL);
    CU_ASSERT(strstr(out, "\"counters\": {") != NULL);
#define WANT_KEY(name, help) CU_ASSERT(strstr(out, "\"" #name "\": ") != NULL);
    SHM_STAT_FIELDS(WANT_KEY)
#undef WANT_KEY
    CU_ASSERT(strstr(out, "\"large_pool_bytes\": 0") != NULL);
    CU_ASSERT(strstr(out, "\"large_pool_hits\": 0") != NULL);
    CU_ASSERT(strstr(out, "\"large_pool_puts\": 0") != NULL);

    const char *text_argv[] = { ctl, "-s", d->sock, "stats", NULL };
    CU_ASSERT_EQUAL(run_capture(text_argv, out, sizeof out), 0);
    CU_ASSERT(strstr(out, "arena_size: 67108864\n") != NULL);
    CU_ASSERT(strstr(out, "\nrefills: 0\n") != NULL);
    CU_ASSERT(strstr(out, "\nlarge_pool_bytes: 0\n") != NULL);

    const char *classes_argv[] = { ctl, "-s", d->sock, "--json", "classes", NULL };
    CU_ASSERT_EQUAL(run_capture(classes_argv, out, sizeof out), 0);
    CU_ASSERT(json_ok(out) && out[0] == '[');

    ctl_client_t c;
    open_client(d, &c);
    say_hello(&c, "listed");
    const char *clients_argv[] = { ctl, "-s", d->sock, "clients", "--json", NULL };
    CU_ASSERT_EQUAL(run_capture(clients_argv, out, sizeof out), 0);
    CU_ASSERT(json_ok(out) && strstr(out, "\"name\": \"listed\"") != NULL);
    ctl_close(&c);

    const char *release_argv[] = { ctl, "-s", d->sock, "release", NULL };
    CU_ASSERT_EQUAL(run_capture(release_argv, out, sizeof out), 0);
    CU_ASSERT(strncmp(out, "released_bytes: ", 16) == 0);

    const char *verify_argv[] = { ctl, "-s", d->sock, "verify", NULL };
    CU_ASSERT_EQUAL(run_capture(verify_argv, out, sizeof out), 0);

    const char *bad_argv[] = { ctl, "-s", d->sock, "frobnicate", NULL };
    CU_ASSERT_EQUAL(run_capture(bad_argv, out, sizeof out), 2);
    CU_ASSERT(strstr(out, "unknown command 'frobnicate'") != NULL);
    char nowhere[160];
    snprintf(nowhere, sizeof nowhere, "%s/nobody-here.sock", d->dir);
    const char *gone_argv[] = { ctl, "-s", nowhere, "ping", NULL };
    CU_ASSERT_EQUAL(run_capture(gone_argv, out, sizeof out), 3);
    CU_ASSERT(strstr(out, "cannot connect to spand at ") != NULL &&
              strstr(out, nowhere) != NULL);
    finish(d);
}

static void test_second_daemon_refused(void)
{
    dh_daemon_t *d = start(NULL);
    char err[2048];
    char other_name[96];
    snprintf(other_name, sizeof other_name, "%s-other", d->shm);

    /* same socket, another shm name */
    const char *args[] = { "-n", other_name, NULL };
    CU_ASSERT_EQUAL(dh_run_expect_exit(d, args, err, sizeof err), 1);
    CU_ASSERT(strstr(err, "already running") != NULL);
    if (!strstr(err, "already running"))
        fprintf(stderr, "second spand said: %s\n", err);
    shm_unlink(other_name);

    /* same shm name, another socket */
    dh_daemon_t *d2 = dh_new();
    CU_ASSERT_FATAL(d2 != NULL);
    const char *args2[] = { "-n", d->shm, NULL };
    CU_ASSERT_EQUAL(dh_run_expect_exit(d2, args2, err, sizeof err), 1);
    CU_ASSERT(strstr(err, "running spand") != NULL);
    CU_ASSERT_EQUAL(access(d2->sock, F_OK), -1);       /* it cleaned up after itself */
    dh_cleanup(d2);
    /* bad usage */
    const char *args3[] = { "--arena-size", "lots", NULL };
    CU_ASSERT_EQUAL(dh_run_expect_exit(d, args3, err, sizeof err), 2);
    CU_ASSERT(strstr(err, "bad size") != NULL);
    finish(d);                                           /* the first one is fine */
}

static void test_sigterm_cleanup(void)
{
    dh_daemon_t *d = start(NULL);
    char buf[32] = "";
    FILE *f = fopen(d->pidfile, "r");
    CU_ASSERT_PTR_NOT_NULL(f);
    if (f) {
        CU_ASSERT(fgets(buf, sizeof buf, f) != NULL);
        fclose(f);
    }
    CU_ASSERT_EQUAL(atol(buf), (long)d->pid);
    struct stat st;
    CU_ASSERT(stat(d->sock, &st) == 0 && (st.st_mode & 0777) == 0600);
    ctl_client_t c;
    open_client(d, &c);                                  /* a session still open */
    say_hello(&c, "open at stop");
    CU_ASSERT_EQUAL(dh_stop(d), 0);
    ctl_close(&c);
    CU_ASSERT(access(d->sock, F_OK) != 0 && errno == ENOENT);
    CU_ASSERT(access(d->pidfile, F_OK) != 0 && errno == ENOENT);
    int fd = shm_open(d->shm, O_RDONLY, 0);
    CU_ASSERT(fd < 0 && errno == ENOENT);
    if (fd >= 0)
        close(fd);
    dh_cleanup(d);
}

/* A daemon killed with SIGKILL leaves its socket and arena; the next one
 * replaces both. */
static void test_stale_replaced(void)
{
    dh_daemon_t *d = start(NULL);
    dh_kill(d);
    CU_ASSERT_EQUAL(access(d->sock, F_OK), 0);
    int fd = shm_open(d->shm, O_RDONLY, 0);
    CU_ASSERT(fd >= 0);
    if (fd >= 0)
        close(fd);
    CU_ASSERT_FATAL(dh_start(d, NULL) == 0);
    CU_ASSERT(log_has(d, "stale arena"));
    finish(d);
}

/* The child of test_allowed_uid: connect as `nobody`, say Hello; exit 0
 * when the daemon answered as `want` says (0: accepted with an fd). */
static void nobody_hello(const char *sock, uint32_t want)
{
    struct passwd *pw = getpwnam("nobody");
    uid_t uid = pw ? pw->pw_uid : 65534;
    gid_t gid = pw ? pw->pw_gid : 65534;
    ctl_client_t c;
    Spand__Response *r = NULL;
    if (setgroups(0, NULL) != 0 || setgid(gid) != 0 || setuid(uid) != 0)
        _exit(2);
    if (ctl_connect(&c, sock, 3000) != 0)
        _exit(3);
    Spand__Request req = SPAND__REQUEST__INIT;
    Spand__Hello h = SPAND__HELLO__INIT;
    h.protocol_version = SPAND_PROTOCOL_VERSION;
    req.body_case = SPAND__REQUEST__BODY_HELLO;
    req.hello = &h;
    if (ctl_call(&c, &req, &r) != 0)
        _exit(4);
    if (r->error != want || (want == 0) != (c.arena_fd >= 0))
        _exit(5);
    _exit(0);
}

/* --allow-uid lets another user in; --socket-group from a config file
 * makes the socket 0660 with that group. */
static void test_allowed_uid_and_config(void)
{
    if (geteuid() != 0) {
        fprintf(stderr, "(not root: cannot switch to another uid; test skipped)\n");
        return;
    }
    dh_daemon_t *d = dh_new();
    CU_ASSERT_FATAL(d != NULL);
    char conf[160];
    snprintf(conf, sizeof conf, "%s/spand.conf", d->dir);
    FILE *f = fopen(conf, "w");
    CU_ASSERT_FATAL(f != NULL);
    fprintf(f, "# test configuration\n  scavenge-interval = 0   # off\n"
               "socket-group = %u\nallow-uid = nobody\n", (unsigned)getgid());
    fclose(f);
    const char *args[] = { "-c", conf, NULL };
    CU_ASSERT_FATAL(dh_start(d, args) == 0);
    struct stat st;
    CU_ASSERT(stat(d->sock, &st) == 0 && (st.st_mode & 0777) == 0660 &&
              st.st_gid == getgid());
    CU_ASSERT_EQUAL(chmod(d->dir, 0755), 0);
    CU_ASSERT_EQUAL(chmod(d->sock, 0666), 0);
    pid_t pid = fork();
    if (pid == 0)
        nobody_hello(d->sock, 0);
    int status = -1;
    CU_ASSERT_EQUAL(dh_waitpid_timeout(pid, &status, 10000), 0);
    CU_ASSERT(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
        fprintf(stderr, "allowed-uid child: status %#x\n", status);
    unlink(conf);
    finish(d);

    /* a bad line in the file: a clear message and exit status 2 */
    dh_daemon_t *d2 = dh_new();
    CU_ASSERT_FATAL(d2 != NULL);
    snprintf(conf, sizeof conf, "%s/bad.conf", d2->dir);
    f = fopen(conf, "w");
    CU_ASSERT_FATAL(f != NULL);
    fprintf(f, "socket-group = %u\nthis line is wrong\n", (unsigned)getgid());
    fclose(f);
    char err[1024];
    const char *bad[] = { "-c", conf, NULL };
    CU_ASSERT_EQUAL(dh_run_expect_exit(d2, bad, err, sizeof err), 2);
    CU_ASSERT(strstr(err, "bad.conf:2") != NULL);
    unlink(conf);
    dh_cleanup(d2);
}

/* Without -f spand forks into the background; the command returns once
 * the daemon serves, and the pid file names the daemon. */
static void test_daemonize(void)
{
    const char *bin = getenv("SPAND_BIN");
    CU_ASSERT_FATAL(bin != NULL);
    dh_daemon_t *d = dh_new();
    CU_ASSERT_FATAL(d != NULL);
    const char *argv[] = { bin, "-s", d->sock, "-n", d->shm, "-m", "64M", NULL };
    char out[1024];
    CU_ASSERT_EQUAL(run_capture(argv, out, sizeof out), 0);
    long pid = 0;
    FILE *f = fopen(d->pidfile, "r");
    CU_ASSERT_PTR_NOT_NULL(f);
    if (f) {
        CU_ASSERT(fscanf(f, "%ld", &pid) == 1);
        fclose(f);
    }
    CU_ASSERT(pid > 0 && kill((pid_t)pid, 0) == 0);
    if (pid > 0)
        check_healthy(d);
    if (pid > 0) {
        kill((pid_t)pid, SIGTERM);
        int i;
        for (i = 0; i < 500 && kill((pid_t)pid, 0) == 0; i++)
            sleep_ms(10);
        CU_ASSERT(i < 500);
        if (i == 500)
            kill((pid_t)pid, SIGKILL);
    }
    CU_ASSERT(access(d->sock, F_OK) != 0);
    CU_ASSERT(access(d->pidfile, F_OK) != 0);
    dh_cleanup(d);
}

/* Without -s the socket is $SPAND_SOCKET, else $XDG_RUNTIME_DIR/spand.sock. */
static void test_default_socket(void)
{
    char *saved_sock = getenv("SPAND_SOCKET") ? strdup(getenv("SPAND_SOCKET")) : NULL;
    char *saved_xdg = getenv("XDG_RUNTIME_DIR") ? strdup(getenv("XDG_RUNTIME_DIR")) : NULL;
    dh_daemon_t *d = dh_new();
    CU_ASSERT_FATAL(d != NULL);
    d->no_socket_arg = true;

    setenv("SPAND_SOCKET", d->sock, 1);
    setenv("XDG_RUNTIME_DIR", "/nonexistent-for-this-test", 1);
    int rc = dh_start(d, NULL);
    CU_ASSERT_EQUAL(rc, 0);
    if (rc == 0) {
        ctl_client_t c;
        CU_ASSERT_EQUAL(ctl_connect(&c, NULL, 2000), 0);  /* clients agree */
        ctl_close(&c);
        CU_ASSERT_EQUAL(dh_stop(d), 0);
    }

    unsetenv("SPAND_SOCKET");
    setenv("XDG_RUNTIME_DIR", d->dir, 1);         /* d->sock is DIR/spand.sock */
    rc = dh_start(d, NULL);
    CU_ASSERT_EQUAL(rc, 0);
    if (rc == 0) {
        char def[SPAND_PATH_MAX];
        CU_ASSERT(spand_default_socket(def, sizeof def) == 0 && strcmp(def, d->sock) == 0);
        finish(d);
    }
    if (saved_sock)
        setenv("SPAND_SOCKET", saved_sock, 1);
    else
        unsetenv("SPAND_SOCKET");
    if (saved_xdg)
        setenv("XDG_RUNTIME_DIR", saved_xdg, 1);
    else
        unsetenv("XDG_RUNTIME_DIR");
    free(saved_sock);
    free(saved_xdg);
    dh_cleanup(d);
}

static int suite_cleanup(void)
{
    dh_stop_all();
    return 0;
}

static CU_TestInfo daemon_tests[] = {
    { "ping, stats, verify", test_ping_stats_verify },
    { "hello passes the arena fd", test_hello },
    { "refill and release", test_refill_release },
    { "release of spans not held is refused", test_release_refused },
    { "bad class, no session", test_bad_class_and_no_session },
    { "large objects, double free", test_large },
    { "AllocLarge's extra spans, freed with the session", test_large_extra },
    { "the large pool: FreeLarge refused, Stats, Scavenge", test_large_pool },
    { "full arena: ENOMEM and partial refills", test_arena_full },
    { "bad frames", test_bad_frames },
    { "pipelined frames", test_pipelined },
    { "other uid refused", test_other_uid_refused },
    { "allowed uid, config file", test_allowed_uid_and_config },
    { "exited client's spans adopted", test_client_exit_adopted },
    { "killed client's spans adopted", test_client_killed_adopted },
    { "scavenge returns memory", test_scavenge_now },
    { "scavenger timer returns memory", test_scavenger_timer },
    { "json checker", test_json_checker },
    { "spanctl", test_spanctl },
    { "second daemon refused", test_second_daemon_refused },
    { "SIGTERM cleans up", test_sigterm_cleanup },
    { "daemonizes without -f", test_daemonize },
    { "default socket from the environment", test_default_socket },
    { "stale socket and arena replaced", test_stale_replaced },
    CU_TEST_INFO_NULL,
};

static CU_SuiteInfo suites[] = {
    { "daemon", NULL, suite_cleanup, NULL, NULL, daemon_tests },
    CU_SUITE_INFO_NULL,
};

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    int rc = cutest_run(suites);
    dh_stop_all();
    return rc;
}

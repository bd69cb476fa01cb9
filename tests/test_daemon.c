/* See shm/layout.h for the overview.
 *
 * Tests of spand as a whole: each starts the real binary ($SPAND_BIN) on a
 * private socket and shared-memory name (tests/daemon_helper.h) and drives
 * it over the socket with the blocking client of tools/ctlclient.h.  After
 * every bad input the daemon must still answer Ping and pass its verifier.
 */
#include "config.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
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
    else
        CU_FAIL("Stats failed: no counter to read");     /* not a silent 0 */
    done(r);
    ctl_close(&c);
    return v;
}

/* The shared-memory object of d exists (a refused start, a clean stop leave none). */
static bool shm_exists(const dh_daemon_t *d)
{
    int fd = shm_open(d->shm, O_RDONLY, 0);
    if (fd >= 0)
        close(fd);
    return fd >= 0;
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
    } else {
        CU_FAIL("Stats failed");
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

/* Append request `req` with id `id` as one frame to buf[*len..]. */
static void put_frame(uint8_t *buf, size_t *len, Spand__Request *req, uint64_t id)
{
    req->id = id;
    size_t n = spand__request__get_packed_size(req);
    spand_frame_put_len(buf + *len, (uint32_t)n);
    spand__request__pack(req, buf + *len + SPAND_FRAME_HDR);
    *len += SPAND_FRAME_HDR + n;
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
        if (i == HELLO_AT) {
            h.protocol_version = SPAND_PROTOCOL_VERSION;
            req.body_case = SPAND__REQUEST__BODY_HELLO;
            req.hello = &h;
        } else {
            p.token = 1000 + i;
            req.body_case = SPAND__REQUEST__BODY_PING;
            req.ping = &p;
        }
        put_frame(buf, &len, &req, i + 1);
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

    finish(d);
}

/* ---- out of file descriptors ---- */

/* A daemon that runs out of file descriptors (a client opening connection
 * after connection, say) stops accepting for a second at a time, logs
 * it, and serves the connections it has; the ones waiting in the listen
 * backlog are accepted once descriptors free up, and their requests
 * answered.  The daemon gets a limit of six descriptors more than it has
 * open when it starts. */
static void test_out_of_fds(void)
{
    dh_daemon_t *d = start(NULL);
    /* its limit: what it has open now and six more (prlimit, the hard
     * limit too: spand raises its soft limit to the hard one at start) */
    char fddir[64];
    snprintf(fddir, sizeof fddir, "/proc/%ld/fd", (long)d->pid);
    DIR *dir = opendir(fddir);
    CU_ASSERT_FATAL(dir != NULL);
    unsigned nopen = 0;
    for (struct dirent *e; (e = readdir(dir)) != NULL;)
        nopen += e->d_name[0] != '.';
    closedir(dir);
    struct rlimit low = { nopen + 6, nopen + 6 };
    CU_ASSERT_FATAL(prlimit(d->pid, RLIMIT_NOFILE, &low, NULL) == 0);

    enum { K = 14 };
    ctl_client_t c[K];
    bool answered[K];
    unsigned nans = 0;
    for (unsigned i = 0; i < K; i++) {
        /* the backlog takes it; the first is surely accepted: a long wait */
        CU_ASSERT_FATAL(ctl_connect(&c[i], d->sock, i == 0 ? 5000 : 150) == 0);
        Spand__Ping p = SPAND__PING__INIT;
        p.token = 100 + i;
        Spand__Request req = SPAND__REQUEST__INIT;
        req.body_case = SPAND__REQUEST__BODY_PING;
        req.ping = &p;
        Spand__Response *r = NULL;
        CU_ASSERT_EQUAL_FATAL(ctl_send(&c[i], &req), 0);
        int rc = ctl_recv(&c[i], &r);
        answered[i] = rc == 0 && r && r->ping && r->ping->token == 100 + i;
        CU_ASSERT(answered[i] || rc == -ETIMEDOUT);
        nans += answered[i];
        done(r);
    }
    CU_ASSERT(nans >= 1 && nans < K);
    /* the ones it has are served as before */
    for (unsigned i = 0; i < K; i++) {
        if (!answered[i])
            continue;
        Spand__Response *r = ping(&c[i], 7);
        CU_ASSERT(r && r->error == 0 && r->ping && r->ping->token == 7);
        done(r);
    }
    /* descriptors free up: every waiting connection is taken and its
     * Ping answered, late */
    for (unsigned i = 0; i < K; i++)
        if (answered[i])
            ctl_close(&c[i]);
    unsigned late = 0;
    struct timeval tv = { 5, 0 };
    for (unsigned i = 0; i < K; i++) {
        if (answered[i])
            continue;
        setsockopt(c[i].fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
        Spand__Response *r = NULL;
        late += ctl_recv(&c[i], &r) == 0 && r && r->ping && r->ping->token == 100 + i;
        done(r);
        ctl_close(&c[i]);               /* and makes room for the next */
    }
    CU_ASSERT_EQUAL(late, K - nans);
    CU_ASSERT(log_has(d, "not accepting for 1 s"));
    finish(d);
}

/* ---- a client that does not read its answers ---- */

typedef struct slow_writer_s {
    int fd;
    const uint8_t *buf;
    size_t len;
    _Atomic size_t sent;        /* bytes written so far */
    int err;                    /* errno of a failed write, 0 none */
} slow_writer_t;

/* Write w->buf in pieces, publishing the progress (blocking writes: the
 * socket refuses more once the daemon stops reading). */
static void *slow_writer(void *arg)
{
    slow_writer_t *w = arg;
    size_t off = 0;
    while (off < w->len) {
        size_t n = w->len - off < 16384 ? w->len - off : 16384;
        ssize_t k = write(w->fd, w->buf + off, n);
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0) {
            w->err = k < 0 ? errno : EPIPE;
            break;
        }
        off += (size_t)k;
        atomic_store(&w->sent, off);
    }
    return NULL;
}


/* A client that sends much and does not read: once its answers waiting in
 * the daemon pass SPD_OUTPUT_MAX (4 MiB), the daemon parses nothing more
 * of its input, and stops reading its socket once the input buffer is
 * full too (two frames), so the client's writes block: its memory in the
 * daemon is bounded, and meanwhile the daemon serves others.  (The stall
 * comes before the Hello, which would stop the parsing by itself until
 * everything before its answer has gone.)  Then the client reads, and
 * every answer comes, in order: the Stats answers, the refusals of the big
 * Releases (before Hello), the Hello answer with the arena's fd, a Ping. */
static void test_back_pressure(void)
{
    dh_daemon_t *d = start(NULL);
    ctl_client_t c, other;
    open_client(d, &c);
    open_client(d, &other);

    /* the size of one Stats answer with its class table */
    Spand__Request req = SPAND__REQUEST__INIT;
    Spand__StatsRequest st = SPAND__STATS_REQUEST__INIT;
    st.classes = true;
    req.body_case = SPAND__REQUEST__BODY_STATS;
    req.stats = &st;
    Spand__Response *r = NULL;
    CU_ASSERT_FATAL(ctl_call(&other, &req, &r) == 0 && r != NULL);
    size_t answer = spand__response__get_packed_size(r);
    done(r);
    /* answers of twice SPD_OUTPUT_MAX, then Releases (each nearly a
     * whole frame, refused: no Hello yet), then Hello, then Ping */
    size_t nstats = (8u << 20) / answer + 1;
    enum { NBIG = 6, NIDS = 200000 };     /* 5-byte varints: 1 MB a frame */
    uint32_t *ids = malloc(NIDS * sizeof *ids);
    CU_ASSERT_FATAL(ids != NULL);
    for (uint32_t i = 0; i < NIDS; i++)
        ids[i] = 0x7fff0000u + i;
    size_t cap = nstats * 16 + NBIG * ((size_t)NIDS * 5 + 64) + 256, len = 0;
    uint8_t *buf = malloc(cap);
    CU_ASSERT_FATAL(buf != NULL);
    uint64_t id = 1;
    for (size_t i = 0; i < nstats; i++)
        put_frame(buf, &len, &req, id++);
    Spand__Release rel = SPAND__RELEASE__INIT;
    rel.spans = ids;
    rel.n_spans = NIDS;
    Spand__Request rreq = SPAND__REQUEST__INIT;
    rreq.body_case = SPAND__REQUEST__BODY_RELEASE;
    rreq.release = &rel;
    CU_ASSERT_FATAL(spand__request__get_packed_size(&rreq) <= SPAND_MAX_FRAME);
    for (int k = 0; k < NBIG; k++)
        put_frame(buf, &len, &rreq, id++);
    Spand__Hello h = SPAND__HELLO__INIT;
    h.protocol_version = SPAND_PROTOCOL_VERSION;
    Spand__Request hreq = SPAND__REQUEST__INIT;
    hreq.body_case = SPAND__REQUEST__BODY_HELLO;
    hreq.hello = &h;
    put_frame(buf, &len, &hreq, id++);
    Spand__Ping p = SPAND__PING__INIT;
    p.token = 4242;
    Spand__Request preq = SPAND__REQUEST__INIT;
    preq.body_case = SPAND__REQUEST__BODY_PING;
    preq.ping = &p;
    put_frame(buf, &len, &preq, id++);
    CU_ASSERT_FATAL(len <= cap);
    CU_ASSERT_FATAL(len - nstats * 16 > (size_t)NBIG * NIDS * 4);
    free(ids);

    slow_writer_t w = { .fd = c.fd, .buf = buf, .len = len };
    pthread_t th;
    CU_ASSERT_FATAL(pthread_create(&th, NULL, slow_writer, &w) == 0);
    /* the writes stall short of the end: the daemon stopped reading */
    size_t last = (size_t)-1;
    unsigned still = 0;
    for (unsigned t = 0; t < 200 && still < 6; t++) {      /* 10 s at most */
        sleep_ms(50);
        size_t now = atomic_load(&w.sent);
        still = now == last && now < len ? still + 1 : 0;
        last = now;
    }
    CU_ASSERT(still >= 6 && last < len);
    if (still < 6)
        fprintf(stderr, "back pressure: the client wrote %zu of %zu bytes unread\n", last, len);
    /* meanwhile another client is served */
    r = ping(&other, 77);
    CU_ASSERT(r && r->error == 0 && r->ping && r->ping->token == 77);
    done(r);

    unsigned good = 0;
    for (size_t i = 0; i < nstats; i++) {
        r = recv_one(&c);
        if (r == NULL)
            break;
        good += r->id == i + 1 && r->error == 0 && r->stats &&
                r->stats->n_classes == SHM_NCLASSES - 1;
        done(r);
    }
    CU_ASSERT_EQUAL(good, nstats);
    for (int k = 0; k < NBIG; k++) {
        r = recv_one(&c);
        CU_ASSERT(r && r->id == nstats + 1 + (uint64_t)k && r->error == EPROTO &&
                  r->message && strstr(r->message, "before Hello"));
        done(r);
    }
    r = recv_one(&c);
    CU_ASSERT(r && r->id == nstats + NBIG + 1 && r->error == 0 &&
              r->body_case == SPAND__RESPONSE__BODY_HELLO);
    done(r);
    CU_ASSERT(c.arena_fd >= 0);
    r = recv_one(&c);
    CU_ASSERT(r && r->id == id - 1 && r->error == 0 && r->ping && r->ping->token == 4242);
    done(r);
    pthread_join(th, NULL);
    CU_ASSERT_EQUAL(w.err, 0);
    CU_ASSERT_EQUAL(atomic_load(&w.sent), len);
    free(buf);
    ctl_close(&c);
    ctl_close(&other);
    finish(d);
}

/* ---- what a client sends before it hangs up ---- */

/* A client that pipelines FreeLarge requests (libspanclient does: it does
 * not wait for their answers) and exits at once: the daemon's first answer
 * then fails to write (the peer has closed), and the frames still in the
 * socket must be applied all the same, or their objects leak for the
 * daemon's lifetime (before the fix, 292 of 1,000 were). */
static void test_hangup_applies_all(void)
{
    dh_daemon_t *d = start(NULL);
    ctl_client_t c;
    open_client(d, &c);
    Spand__Response *r = hello(&c, SPAND_PROTOCOL_VERSION, "hang-up");
    CU_ASSERT_FATAL(r && r->error == 0);
    done(r);
    enum { N = 1000 };
    static uint64_t off[N];
    for (unsigned i = 0; i < N; i++) {
        r = alloc_large(&c, 40 << 10, 0);
        CU_ASSERT_FATAL(r && r->error == 0 && r->alloc_large);
        off[i] = r->alloc_large->offset;
        done(r);
    }
    uint64_t freed0 = counter_now(d, "large_frees");
    size_t len = 0;
    uint8_t *buf = malloc((size_t)N * 32);
    CU_ASSERT_FATAL(buf != NULL);
    for (unsigned i = 0; i < N; i++) {
        Spand__FreeLarge f = SPAND__FREE_LARGE__INIT;
        f.offset = off[i];
        Spand__Request q = SPAND__REQUEST__INIT;
        q.body_case = SPAND__REQUEST__BODY_FREE_LARGE;
        q.free_large = &f;
        put_frame(buf, &len, &q, 1000 + i);
    }
    CU_ASSERT_EQUAL(ctl_send_raw(&c, buf, len), 0);
    free(buf);
    ctl_close(&c);                              /* gone, no answer read */
    uint64_t freed = 0;
    for (unsigned t = 0; t < 500 && freed < N; t++) {   /* 10 s at most (debug builds) */
        sleep_ms(20);
        freed = counter_now(d, "large_frees") - freed0;
    }
    CU_ASSERT_EQUAL(freed, N);
    if (freed != N)
        fprintf(stderr, "hang-up: %llu of %u FreeLarge applied\n", (unsigned long long)freed, N);
    finish(d);                                  /* nothing live, verifier ok */
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
    CU_ASSERT_FATAL(pid >= 0);      /* never kill(-1, ...) below */
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
    CU_ASSERT_EQUAL(dh_reap(pid, &status, 10000), 0);
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
    CU_ASSERT_FATAL(pid >= 0);      /* never kill(-1, ...) below */
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
    CU_ASSERT_EQUAL(dh_reap(pid, &status, 5000), 0);
    CU_ASSERT(by_kill ? WIFSIGNALED(status) : (WIFEXITED(status) && !WEXITSTATUS(status)));
    double t0 = now_s(), waited = 0;
    uint32_t nclients = 1;
    while (waited < 10.0) {
        r = stats(&c, false);
        nclients = r && r->stats ? r->stats->clients : 1;
        done(r);
        if (nclients == 0)
            break;
        sleep_ms(10);
        waited = now_s() - t0;
    }
    CU_ASSERT_EQUAL(nclients, 0);            /* how fast is the benchmarks' matter */
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
    } else {
        CU_FAIL("Stats failed");
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
    if (pid < 0) {                  /* never kill(-1, ...) below */
        close(p[0]), close(p[1]);
        return -1;
    }
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
    if (dh_reap(pid, &status, 10000) != 0)
        return -1;
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
              strstr(out, nowhere) != NULL && strstr(out, "is spand running?") != NULL);
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

/* Run spand with socket path `path` (NULL: no -s, the default path),
 * expecting it to refuse with exit status `status` (1: at start, 2: bad
 * usage) and a message containing `want`, leaving no arena behind. */
static void expect_socket_refused(dh_daemon_t *d, const char *path, int status,
                                  const char *want)
{
    char err[2048];
    const char *args[] = { "-s", path, NULL };
    int st = dh_run_expect_exit(d, path ? args : NULL, err, sizeof err);
    CU_ASSERT_EQUAL(st, status);
    CU_ASSERT(strstr(err, want) != NULL);
    if (st != status || strstr(err, want) == NULL)
        fprintf(stderr, "spand on %s: status %d, said: %s\n", path ? path : "(default)", st, err);
    CU_ASSERT(!shm_exists(d));
}

/* Socket paths spand must not use: each refused with a message naming the
 * problem, and nothing that was there is touched. */
static void test_socket_path_refused(void)
{
    dh_daemon_t *d = dh_new();
    CU_ASSERT_PTR_NOT_NULL_FATAL(d);
    char path[512];

    /* a file that is not a socket: kept as it was */
    snprintf(path, sizeof path, "%s/not-a-socket", d->dir);
    FILE *f = fopen(path, "w");
    CU_ASSERT_FATAL(f != NULL);
    fputs("keep me\n", f);
    fclose(f);
    expect_socket_refused(d, path, 1, "exists and is not a socket; not touching it");
    char line[32] = "";
    f = fopen(path, "r");
    CU_ASSERT(f != NULL && fgets(line, sizeof line, f) != NULL && !strcmp(line, "keep me\n"));
    if (f)
        fclose(f);

    /* its directory is a file */
    char sub[600];
    snprintf(sub, sizeof sub, "%s/spand.sock", path);
    expect_socket_refused(d, sub, 1, "is not a directory");
    unlink(path);

    /* a directory that cannot be made (its parent is missing) */
    snprintf(path, sizeof path, "%s/no/such/spand.sock", d->dir);
    expect_socket_refused(d, path, 1, "cannot create the socket directory");

    /* longer than a Unix socket's address holds: a usage error */
    int n = snprintf(path, sizeof path, "%s/", d->dir);
    memset(path + n, 'x', 200);
    path[n + 200] = '\0';
    expect_socket_refused(d, path, 2, "socket path too long");

    /* the default directory, /tmp/spand-UID, open to others: when no
     * daemon of this uid uses it now (else this part is skipped) */
    char def[64];
    snprintf(def, sizeof def, "/tmp/spand-%u", (unsigned)getuid());
    if (mkdir(def, 0700) == 0) {
        CU_ASSERT_EQUAL(chmod(def, 0777), 0);
        char *sock = getenv("SPAND_SOCKET"), *xdg = getenv("XDG_RUNTIME_DIR");
        sock = sock ? strdup(sock) : NULL;
        xdg = xdg ? strdup(xdg) : NULL;
        unsetenv("SPAND_SOCKET");
        unsetenv("XDG_RUNTIME_DIR");
        d->no_socket_arg = true;
        expect_socket_refused(d, NULL, 1, "is open to others");
        d->no_socket_arg = false;
        if (sock)
            setenv("SPAND_SOCKET", sock, 1);
        if (xdg)
            setenv("XDG_RUNTIME_DIR", xdg, 1);
        free(sock);
        free(xdg);
        char left[96];                          /* nothing was put there */
        snprintf(left, sizeof left, "%s/spand.sock", def);
        CU_ASSERT_EQUAL(access(left, F_OK), -1);
        unlink(left);                           /* after a failure: clean up */
        snprintf(left, sizeof left, "%s/spand.sock.pid", def);
        unlink(left);
        CU_ASSERT_EQUAL(rmdir(def), 0);
    } else {
        fprintf(stderr, "(%s exists: its part of the test skipped) ", def);
    }
    dh_cleanup(d);
}

/* Arena sizes, base addresses and large pools spand cannot use: refused
 * at start with a message giving the rule, and no arena left behind. */
static void test_arena_args_refused(void)
{
    dh_daemon_t *d = dh_new();
    CU_ASSERT_PTR_NOT_NULL_FATAL(d);
    static const struct {
        const char *flag, *value;
        int status;
        const char *want;
    } bad[] = {
        { "-m", "1000", 1, "must be a multiple of 8192 between" },
        { "-m", "8K", 1, "must be a multiple of 8192 between" },
        { "-m", "100T", 1, "must be a multiple of 8192 between" },
        { "-m", "2P", 2, "bad size" },
        { "--base-address", "0x1234", 1, "must be non-zero and 2 MiB aligned" },
        { "--base-address", "0", 1, "must be non-zero and 2 MiB aligned" },
        { "--large-pool", "1G", 2, "more than the arena's 67108864" },  /* a 64M arena */
    };
    char err[2048];
    for (size_t k = 0; k < sizeof bad / sizeof bad[0]; k++) {
        const char *args[] = { bad[k].flag, bad[k].value, NULL };
        int st = dh_run_expect_exit(d, args, err, sizeof err);
        CU_ASSERT_EQUAL(st, bad[k].status);
        CU_ASSERT(strstr(err, bad[k].want) != NULL);
        if (st != bad[k].status || strstr(err, bad[k].want) == NULL)
            fprintf(stderr, "spand %s %s: status %d, said: %s\n", bad[k].flag, bad[k].value,
                    st, err);
        CU_ASSERT(!shm_exists(d));
    }
    dh_cleanup(d);
}

/* SIGHUP (a foreground spand's terminal closing, a reload by habit) is
 * logged and changes nothing: the daemon, its clients and their spans go
 * on, and a later SIGTERM still stops it cleanly. */
static void test_sighup_goes_on(void)
{
    dh_daemon_t *d = start(NULL);
    ctl_client_t c;
    open_client(d, &c);
    Spand__Response *r = hello(&c, SPAND_PROTOCOL_VERSION, "hup");
    CU_ASSERT(r && r->error == 0);
    done(r);
    uint32_t ids[1];
    r = refill(&c, 1, 1, NULL, 0);
    CU_ASSERT_FATAL(r && r->error == 0 && r->refill && r->refill->n_spans >= 1);
    ids[0] = r->refill->spans[0];
    done(r);
    CU_ASSERT_EQUAL(kill(d->pid, SIGHUP), 0);
    for (unsigned t = 0; t < 100 && !log_has(d, "nothing to reload"); t++)
        sleep_ms(20);                           /* 2 s at most */
    CU_ASSERT(log_has(d, "nothing to reload"));
    r = ping(&c, 5);                            /* the same connection goes on */
    CU_ASSERT(r && r->error == 0 && r->ping && r->ping->token == 5);
    done(r);
    r = release(&c, ids, 1);                    /* and its session with its span */
    CU_ASSERT(r && r->error == 0);
    done(r);
    ctl_close(&c);
    finish(d);                                  /* SIGTERM: a clean stop */
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
    CU_ASSERT(!shm_exists(d));
    dh_cleanup(d);
}

/* A daemon killed with SIGKILL leaves its socket and arena; the next one
 * replaces both. */
static void test_stale_replaced(void)
{
    dh_daemon_t *d = start(NULL);
    dh_kill(d);
    CU_ASSERT_EQUAL(access(d->sock, F_OK), 0);
    CU_ASSERT(shm_exists(d));
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
    CU_ASSERT_FATAL(pid >= 0);      /* never kill(-1, ...) below */
    if (pid == 0)
        nobody_hello(d->sock, 0);
    int status = -1;
    CU_ASSERT_EQUAL(dh_reap(pid, &status, 10000), 0);
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
    if (pid <= 0) {
        /* no pid file (a failure already): find the daemon through its
         * socket, so that it is stopped all the same */
        ctl_client_t c;
        if (ctl_connect(&c, d->sock, 2000) == 0) {
            Spand__Response *r = stats(&c, false);
            if (r && r->stats)
                pid = (long)r->stats->daemon_pid;
            done(r);
            ctl_close(&c);
        }
    }
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

/* ---- random requests from several clients, checked against a model ---- */

/* test_random_requests: one daemon with a small arena, RQ_CLIENTS raw
 * connections (the last never says Hello) and a few thousand requests
 * drawn from a seeded generator, most of them wrong in some way: spans not
 * held or held by another client, ids out of range, repeats, bad classes,
 * absurd sizes and alignments, frees of offsets that are no object, a
 * second Hello, a client that hangs up holding spans.  A model says what
 * the daemon must hold: the spans each session holds, the live large
 * objects, the extra spans AllocLarge tagged CACHED for a session, and
 * the arena pages each covers.  A request the model calls valid must
 * succeed (or get ENOMEM where the arena may run out); one it calls bad
 * must get an error with a message and change nothing.  After every step
 * the descriptors the daemon published (the test maps the arena) must
 * agree with the model, and a pattern written into each live large object
 * when it was allocated must still be there.  The seed is
 * $SPAND_RANDREQ_SEED (default RQ_SEED), the steps $SPAND_RANDREQ_STEPS;
 * on a failure the seed and the last RQ_TRACE steps are printed, and with
 * $SPAND_RANDREQ_VERBOSE set every step is. */

enum {
    RQ_CLIENTS = 4,
    RQ_NOHELLO = RQ_CLIENTS - 1,   /* the client that never says Hello */
    RQ_STEPS = 3000,
    RQ_SEED = 20240601,
    RQ_LIST_MAX = 300,             /* ids in one Release or piggybacked list */
    RQ_REFILL_MAX = 256,           /* spans one Refill hands out at most */
    RQ_TRACE = 40,                 /* steps printed when one fails */
    RQ_FREED = 64,                 /* freed offsets kept, for double frees */
    RQ_MAX_EXTRA = SHM_LPOOL_BATCH_MAX - 1,   /* extras one AllocLarge gets */
};

#define RQ_TAG_LARGE 0x80000000u   /* page owner tag of a large span; else a span id */

typedef struct rq_span_s {         /* per span id */
    uint8_t who;                   /* holding client + 1; 0: none of ours */
    uint8_t cls;
    uint32_t idx;                  /* in the holder's held[] */
    uint32_t start, npages;        /* as handed out */
    uint32_t mark;                 /* rq_list's "picked already" stamp */
} rq_span_t;

typedef struct rq_large_s {
    uint64_t off, bytes;           /* offset, usable_size */
    int cached;                    /* -1: a live object; else the client whose
                                      session has it CACHED (an extra span) */
} rq_large_t;

typedef struct rq_client_s {
    ctl_client_t c;
    uint32_t sid;                  /* session id; 0: no Hello */
    uint32_t *held;                /* span ids its session holds */
    size_t nheld, cap;
} rq_client_t;

typedef struct rq_s {
    dh_daemon_t *d;
    shm_arena_t a;                 /* the test's own mapping of the arena */
    uint64_t seed, rng;
    unsigned step;
    uint32_t stamp;
    uint32_t first_page, npages;   /* the heap's pages: [first_page, npages) */
    rq_client_t cl[RQ_CLIENTS];
    rq_span_t *span;               /* indexed by span id, grown as ids come */
    size_t nspan;
    uint32_t *page;                /* per arena page: who covers it, 0 nothing */
    rq_large_t *large;
    size_t nlarge, caplarge;
    uint64_t freed[RQ_FREED];      /* offsets freed, for double frees */
    unsigned nfreed;
    uint64_t nbad;                 /* EINVAL and EPROTO answers (bad_requests) */
    unsigned nok, nrefused, nenomem;
    unsigned ngrant;               /* Refills and AllocLarges that succeeded */
    char trace[RQ_TRACE][320];
} rq_t;

/* splitmix64: any seed will do, 0 included. */
static uint64_t rq_next(rq_t *rq)
{
    uint64_t z = (rq->rng += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static uint32_t rq_below(rq_t *rq, uint64_t n)
{
    return n ? (uint32_t)(rq_next(rq) % n) : 0;
}

static bool rq_chance(rq_t *rq, unsigned percent)
{
    return rq_below(rq, 100) < percent;
}

/* Add to this step's line of the trace. */
static void rq_note(rq_t *rq, const char *fmt, ...)
{
    char *line = rq->trace[rq->step % RQ_TRACE];
    size_t len = strlen(line);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line + len, sizeof rq->trace[0] - len, fmt, ap);
    va_end(ap);
}

/* The model's entry of span `id` (grown to hold it). */
static rq_span_t *rq_span(rq_t *rq, uint32_t id)
{
    if (id >= rq->nspan) {
        size_t n = rq->nspan ? rq->nspan : 1024;
        while (n <= id)
            n *= 2;
        rq_span_t *s = realloc(rq->span, n * sizeof *s);
        CU_ASSERT_FATAL(s != NULL);
        memset(s + rq->nspan, 0, (n - rq->nspan) * sizeof *s);
        rq->span = s;
        rq->nspan = n;
    }
    return &rq->span[id];
}

/* Which client holds span `id` (+1), 0 none: any u32 may be asked. */
static unsigned rq_holder(const rq_t *rq, uint32_t id)
{
    return id < rq->nspan ? rq->span[id].who : 0;
}

static unsigned rq_sessions(const rq_t *rq)
{
    unsigned n = 0;
    for (int i = 0; i < RQ_CLIENTS; i++)
        n += rq->cl[i].sid != 0;
    return n;
}

/* Pages [start, start + n) are now `tag`'s: inside the heap, and nothing
 * else of the model's there (no span or object handed out twice).  False
 * (a failure) when not: then the model does not take it. */
static bool rq_claim(rq_t *rq, uint64_t start, uint64_t n, uint32_t tag)
{
    bool inside = n > 0 && start >= rq->first_page && start + n <= rq->npages;
    CU_ASSERT(inside);
    if (!inside) {
        rq_note(rq, " [pages %#llx+%llu outside the heap]", (unsigned long long)start,
                (unsigned long long)n);
        return false;
    }
    for (uint64_t p = start; p < start + n; p++)
        if (rq->page[p] != 0) {
            CU_FAIL("one page handed out twice");
            rq_note(rq, " [page %#llx of %#x is %#x's already]", (unsigned long long)p,
                    tag, rq->page[p]);
            return false;
        }
    for (uint64_t p = start; p < start + n; p++)
        rq->page[p] = tag;
    return true;
}

static void rq_unclaim(rq_t *rq, uint64_t start, uint64_t n)
{
    for (uint64_t p = start; p < start + n && p < rq->npages; p++)
        rq->page[p] = 0;
}

/* Client `who` holds span `id` (descriptor s) of class `cls` now. */
static bool rq_hold(rq_t *rq, int who, uint32_t id, unsigned cls, const shm_span_t *s)
{
    rq_client_t *k = &rq->cl[who];
    if (!rq_claim(rq, s->start, s->npages, id))
        return false;
    if (k->nheld == k->cap) {
        k->cap = k->cap ? 2 * k->cap : 256;
        k->held = realloc(k->held, k->cap * sizeof *k->held);
        CU_ASSERT_FATAL(k->held != NULL);
    }
    rq_span_t *m = rq_span(rq, id);
    m->who = (uint8_t)(who + 1);
    m->cls = (uint8_t)cls;
    m->idx = (uint32_t)k->nheld;
    m->start = s->start;
    m->npages = s->npages;
    k->held[k->nheld++] = id;
    return true;
}

/* Span `id` is no longer held (released, or its session ended). */
static void rq_unhold(rq_t *rq, uint32_t id)
{
    rq_span_t *m = &rq->span[id];
    rq_client_t *k = &rq->cl[m->who - 1];
    uint32_t last = k->held[--k->nheld];
    k->held[m->idx] = last;
    rq->span[last].idx = m->idx;
    rq_unclaim(rq, m->start, m->npages);
    m->who = 0;
}

/* A large object (cached -1) or an extra span cached for client `cached`
 * at `off`; false when its pages are not free in the model. */
static bool rq_large_add(rq_t *rq, uint64_t off, uint64_t bytes, int cached)
{
    if (!rq_claim(rq, off >> SHM_PAGE_SHIFT, bytes >> SHM_PAGE_SHIFT,
                  RQ_TAG_LARGE | (uint32_t)(off >> SHM_PAGE_SHIFT)))
        return false;
    if (rq->nlarge == rq->caplarge) {
        rq->caplarge = rq->caplarge ? 2 * rq->caplarge : 64;
        rq->large = realloc(rq->large, rq->caplarge * sizeof *rq->large);
        CU_ASSERT_FATAL(rq->large != NULL);
    }
    rq->large[rq->nlarge++] = (rq_large_t){ off, bytes, cached };
    return true;
}

static void rq_large_del(rq_t *rq, size_t i)
{
    rq_unclaim(rq, rq->large[i].off >> SHM_PAGE_SHIFT, rq->large[i].bytes >> SHM_PAGE_SHIFT);
    rq->large[i] = rq->large[--rq->nlarge];
}

/* The model's live object or extra span at `off`, or -1. */
static long rq_large_at(const rq_t *rq, uint64_t off)
{
    for (size_t i = 0; i < rq->nlarge; i++)
        if (rq->large[i].off == off)
            return (long)i;
    return -1;
}

/* What the test writes at both ends of a live large object. */
static uint64_t rq_pattern(uint64_t off, bool end)
{
    return ((off >> SHM_PAGE_SHIFT) ^ (end ? 0xe11dull : 0x57a7ull)) * 0x9e3779b97f4a7c15ull;
}

static void rq_pattern_put(rq_t *rq, const rq_large_t *o)
{
    uint64_t v = rq_pattern(o->off, false);
    memcpy(rq->a.base + o->off, &v, sizeof v);
    v = rq_pattern(o->off, true);
    memcpy(rq->a.base + o->off + o->bytes - sizeof v, &v, sizeof v);
}

static bool rq_pattern_ok(const rq_t *rq, const rq_large_t *o)
{
    uint64_t head, tail;
    memcpy(&head, rq->a.base + o->off, sizeof head);
    memcpy(&tail, rq->a.base + o->off + o->bytes - sizeof tail, sizeof tail);
    return head == rq_pattern(o->off, false) && tail == rq_pattern(o->off, true);
}

/* The descriptor the span map names for arena page `page`, or NULL. */
static shm_span_t *rq_desc(const rq_t *rq, uint64_t page)
{
    shm_spanid_t id = shm_load_relaxed(&shm_spanmap(rq->a.base)[page]);
    return id ? shm_span(rq->a.base, id) : NULL;
}

/* Large object or extra span `o` as the daemon published it: LARGE, its
 * pages, its tag; a live object's pattern intact. */
static bool rq_large_intact(rq_t *rq, const rq_large_t *o)
{
    const shm_span_t *s = rq_desc(rq, o->off >> SHM_PAGE_SHIFT);
    uint32_t tag = o->cached < 0 ? 0 : SHM_LARGE_CACHED;
    bool ok = s && shm_load_acquire(&s->xstate) == SHM_SPAN_LARGE &&
              (uint64_t)s->start << SHM_PAGE_SHIFT == o->off &&
              (uint64_t)s->npages << SHM_PAGE_SHIFT == o->bytes &&
              shm_load_relaxed(&s->xowner) == tag &&
              (o->cached < 0 || shm_load_relaxed(&s->xlarge) == rq->cl[o->cached].sid) &&
              (o->cached >= 0 || rq_pattern_ok(rq, o));
    if (!ok)
        rq_note(rq, " [large %s at %#llx (%llu bytes) not intact]",
                o->cached < 0 ? "object" : "extra span", (unsigned long long)o->off,
                (unsigned long long)o->bytes);
    return ok;
}

/* Everything the model says against the arena: the sessions and their
 * span counts, every held span HELD by its session with its class and
 * pages, every large object and extra span intact. */
static void rq_check_all(rq_t *rq)
{
    const shm_header_t *h = rq->a.hdr;
    bool ok = h->nsessions == rq_sessions(rq);
    if (!ok)
        rq_note(rq, " [%u sessions, the model has %u]", h->nsessions, rq_sessions(rq));
    for (int i = 0; i < RQ_CLIENTS; i++) {
        const rq_client_t *k = &rq->cl[i];
        if (k->sid == 0)
            continue;
        if (h->sessions[k->sid - 1].nspans != k->nheld) {
            rq_note(rq, " [session %u holds %u spans, the model %zu]", k->sid,
                    h->sessions[k->sid - 1].nspans, k->nheld);
            ok = false;
        }
        for (size_t j = 0; j < k->nheld; j++) {
            uint32_t id = k->held[j];
            const rq_span_t *m = &rq->span[id];
            const shm_span_t *s = shm_span(rq->a.base, id);
            if (shm_load_acquire(&s->xstate) != SHM_SPAN_HELD || s->session != k->sid ||
                s->sizeclass != m->cls || s->start != m->start || s->npages != m->npages) {
                rq_note(rq, " [span %u of session %u: state %u session %u class %u]", id,
                        k->sid, shm_load_relaxed(&s->xstate), s->session, s->sizeclass);
                ok = false;
                break;
            }
        }
    }
    CU_ASSERT(ok);
    bool large_ok = true;
    for (size_t i = 0; i < rq->nlarge && large_ok; i++)
        large_ok = rq_large_intact(rq, &rq->large[i]);
    CU_ASSERT(large_ok);
}

/* The answer to one request: one the model calls valid must succeed with
 * the body `bc` (or get ENOMEM when `may_nomem`); one it calls bad must get
 * an error, `want` when not 0, with a message (holding `what` when not
 * NULL: what was wrong) and no body.  Returns the error (0xffffffff when
 * the call itself failed). */
static uint32_t rq_expect(rq_t *rq, Spand__Response *r, Spand__Response__BodyCase bc,
                          bool valid, bool may_nomem, uint32_t want, const char *what)
{
    uint32_t e = err_of(r);
    if (r == NULL) {
        rq_note(rq, " -> no answer");
        return e;
    }
    rq_note(rq, " -> %s%s%s%s", e ? strerror((int)e) : "ok", e ? " \"" : "",
            e && r->message ? r->message : "", e ? "\"" : "");
    if (e == 0) {
        rq->nok++;
        CU_ASSERT_EQUAL(r->body_case, bc);
    } else {
        CU_ASSERT(r->message != NULL && r->message[0] != '\0');
        CU_ASSERT_EQUAL(r->body_case, SPAND__RESPONSE__BODY__NOT_SET);
        if (e == EINVAL || e == EPROTO)
            rq->nbad++;
        if (e == ENOMEM)
            rq->nenomem++;
        else
            rq->nrefused++;
    }
    if (valid) {
        CU_ASSERT(e == 0 || (may_nomem && e == ENOMEM));
    } else {
        CU_ASSERT(e != 0);
        if (want != 0) {
            CU_ASSERT_EQUAL(e, want);
        }
        if (e != 0 && what != NULL && !(r->message && strstr(r->message, what))) {
            CU_FAIL("the message does not say what was wrong");
            rq_note(rq, " [the message should name \"%s\"]", what);
        }
    }
    return e;
}

/* Up to `want` spans client `who` holds, each once, in random order. */
static size_t rq_own(rq_t *rq, int who, uint32_t *ids, size_t want)
{
    const rq_client_t *k = &rq->cl[who];
    size_t n = 0;
    if (want >= k->nheld) {
        for (size_t i = 0; i < k->nheld && n < want; i++)
            ids[n++] = k->held[i];
        for (size_t i = n; i > 1; i--) {
            size_t j = rq_below(rq, i);
            uint32_t t = ids[i - 1];
            ids[i - 1] = ids[j];
            ids[j] = t;
        }
        return n;
    }
    uint32_t stamp = ++rq->stamp;
    for (size_t tries = 0; n < want && tries < 4 * want; tries++) {
        uint32_t id = k->held[rq_below(rq, k->nheld)];
        if (rq->span[id].mark != stamp) {
            rq->span[id].mark = stamp;
            ids[n++] = id;
        }
    }
    return n;
}

/* An id client `who` may not give back along with ids[0..n): a span
 * another client holds, a span id nobody holds (likely), a random number,
 * 0, or one of ids[0..n) again. */
static uint32_t rq_intruder(rq_t *rq, int who, const uint32_t *ids, size_t n)
{
    uint32_t hwm = rq->a.hdr->spanalloc.hwm;
    const rq_client_t *o = &rq->cl[(who + 1 + rq_below(rq, RQ_CLIENTS - 1)) % RQ_CLIENTS];
    switch (rq_below(rq, 5)) {
    case 0:
        return o->nheld ? o->held[rq_below(rq, o->nheld)] : hwm;
    case 1:
        return 1 + rq_below(rq, hwm + 8);
    case 2:
        return (uint32_t)rq_next(rq);
    case 3:
        return 0;
    default:
        return n ? ids[rq_below(rq, n)] : hwm;
    }
}

/* A list of span ids for a Release or a Refill of client `who`: half the
 * time only spans it holds, each once (the daemon must take them all); a
 * quarter, those and one intruder (rq_intruder) somewhere (the daemon must
 * refuse the whole list); else a mix of its own spans and intruders. */
static size_t rq_list(rq_t *rq, int who, uint32_t *ids)
{
    size_t want = rq_chance(rq, 20) ? rq_below(rq, RQ_LIST_MAX) : rq_below(rq, 9);
    unsigned x = rq_below(rq, 100);
    if (x < 50)
        return rq_own(rq, who, ids, want);
    if (x < 75) {
        size_t n = rq_own(rq, who, ids, want), at = rq_below(rq, n + 1);
        uint32_t bad = rq_intruder(rq, who, ids, n);
        ids[n] = ids[at];
        ids[at] = bad;
        return n + 1;
    }
    const rq_client_t *k = &rq->cl[who];
    for (size_t n = 0; n < want; n++)
        ids[n] = rq_chance(rq, 30) && k->nheld ? k->held[rq_below(rq, k->nheld)] :
                 rq_intruder(rq, who, ids, n);
    return want;
}

/* Does client `who` hold every span of ids[0..n), each once?  If not,
 * what the refusal must name (in `what`): the first span it does not hold,
 * else the span listed twice. */
static bool rq_list_valid(rq_t *rq, int who, const uint32_t *ids, size_t n,
                          char *what, size_t len)
{
    uint32_t stamp = ++rq->stamp;
    for (size_t i = 0; i < n; i++)
        if (rq_holder(rq, ids[i]) != (unsigned)who + 1) {
            snprintf(what, len, "span %u: ", ids[i]);
            return false;
        }
    for (size_t i = 0; i < n; i++) {
        if (rq->span[ids[i]].mark == stamp) {
            snprintf(what, len, "twice");
            return false;
        }
        rq->span[ids[i]].mark = stamp;
    }
    return true;
}

/* The daemon took back spans ids[0..n) (not a holder's held[] itself). */
static void rq_released(rq_t *rq, const uint32_t *ids, size_t n)
{
    for (size_t i = 0; i < n; i++)
        rq_unhold(rq, ids[i]);
}

/* Every span of ids[0..n) that no client holds in the model is HELD by
 * nobody in the arena: after a release, and after a refused list (which
 * may hold any number: only ids below the descriptors' hwm are looked at). */
static void rq_check_released(rq_t *rq, const uint32_t *ids, size_t n)
{
    uint32_t hwm = rq->a.hdr->spanalloc.hwm;
    bool ok = true;
    for (size_t i = 0; i < n; i++) {
        if (ids[i] == 0 || ids[i] >= hwm || rq_holder(rq, ids[i]) != 0)
            continue;
        const shm_span_t *s = shm_span(rq->a.base, ids[i]);
        if (shm_load_acquire(&s->xstate) == SHM_SPAN_HELD) {
            rq_note(rq, " [span %u released, still HELD by %u]", ids[i], s->session);
            ok = false;
        }
    }
    CU_ASSERT(ok);
}

static void rq_refill(rq_t *rq, int who)
{
    rq_client_t *k = &rq->cl[who];
    static uint32_t ids[RQ_LIST_MAX];
    size_t n = rq_list(rq, who, ids);
    uint32_t cls, nspans;
    unsigned x = rq_below(rq, 100);
    cls = x < 85 ? 1 + rq_below(rq, SHM_NCLASSES - 1) : x < 90 ? 0 :
          x < 95 ? SHM_NCLASSES : (uint32_t)rq_next(rq);
    x = rq_below(rq, 100);
    nspans = x < 55 ? rq_below(rq, 9) : x < 90 ? rq_below(rq, 301) :
             x < 95 ? UINT32_MAX : (uint32_t)rq_next(rq);
    bool good_cls = cls >= 1 && cls < SHM_NCLASSES;
    char what[64] = "before Hello";
    if (k->sid != 0 && !good_cls)
        snprintf(what, sizeof what, "no size class %u", cls);
    bool valid = k->sid != 0 && good_cls && rq_list_valid(rq, who, ids, n, what, sizeof what);
    rq_note(rq, "Refill(class %u, nspans %u, %zu to release%s)", cls, nspans, n,
            valid ? "" : ", bad");
    Spand__Response *r = refill(&k->c, cls, nspans, ids, n);
    uint32_t e = rq_expect(rq, r, SPAND__RESPONSE__BODY_REFILL, valid, true,
                           k->sid == 0 ? EPROTO : EINVAL, what);
    if (valid && (e == 0 || e == ENOMEM))          /* released first, even on ENOMEM */
        rq_released(rq, ids, n);
    rq->ngrant += e == 0;
    if (e == 0 && r->body_case == SPAND__RESPONSE__BODY_REFILL) {
        size_t got = r->refill->n_spans;
        uint32_t most = nspans == 0 ? 1 : nspans > RQ_REFILL_MAX ? RQ_REFILL_MAX : nspans;
        CU_ASSERT(got >= 1 && got <= most);
        uint32_t hwm = rq->a.hdr->spanalloc.hwm;
        bool ok = true;
        for (size_t i = 0; i < got && ok; i++) {
            uint32_t id = r->refill->spans[i];
            const shm_span_t *s = id >= 1 && id < hwm ? shm_span(rq->a.base, id) : NULL;
            ok = s && rq_holder(rq, id) == 0 && shm_load_acquire(&s->xstate) == SHM_SPAN_HELD &&
                 s->session == k->sid && s->sizeclass == cls &&
                 s->npages == shm_classes[cls].npages;
            if (!ok)
                rq_note(rq, " [span %u handed out: hwm %u, held by client %u, state %u, "
                        "session %u, class %u]", id, hwm, rq_holder(rq, id),
                        s ? shm_load_relaxed(&s->xstate) : 0, s ? s->session : 0,
                        s ? s->sizeclass : 0);
            else
                ok = rq_hold(rq, who, id, cls, s);
        }
        CU_ASSERT(ok);
        rq_note(rq, " %zu spans", got);
    }
    done(r);
    rq_check_released(rq, ids, n);
}

static void rq_release(rq_t *rq, int who)
{
    rq_client_t *k = &rq->cl[who];
    static uint32_t ids[RQ_LIST_MAX];
    size_t n = rq_list(rq, who, ids);
    char what[64] = "before Hello";
    bool valid = k->sid != 0 && rq_list_valid(rq, who, ids, n, what, sizeof what);
    rq_note(rq, "Release(%zu spans%s)", n, valid ? "" : ", bad");
    Spand__Response *r = release(&k->c, ids, n);
    uint32_t e = rq_expect(rq, r, SPAND__RESPONSE__BODY_RELEASE, valid, false,
                           k->sid == 0 ? EPROTO : EINVAL, what);
    if (e == 0 && r->body_case == SPAND__RESPONSE__BODY_RELEASE) {
        /* nothing was ever allocated in them: each goes back to the heap */
        CU_ASSERT_EQUAL(r->release->to_heap, n);
        CU_ASSERT_EQUAL(r->release->to_central, 0);
        rq_released(rq, ids, n);
    }
    done(r);
    rq_check_released(rq, ids, n);
}

static void rq_alloc(rq_t *rq, int who)
{
    rq_client_t *k = &rq->cl[who];
    uint64_t arena = rq->a.hdr->arena_size, size, align;
    uint32_t extra;
    unsigned x = rq_below(rq, 100);
    if (x < 50)                                    /* 1 B .. 4 MiB, log-uniform */
        size = 1 + (rq_next(rq) & ((2ull << rq_below(rq, 22)) - 1));
    else if (x < 75)                               /* a size the large pool takes */
        size = (uint64_t)(SHM_LPOOL_MIN_PAGES + rq_below(rq, SHM_LPOOL_NBUCKETS)) *
               SHM_PAGE_SIZE - rq_below(rq, SHM_PAGE_SIZE);
    else if (x < 80)
        size = 0;
    else if (x < 85)
        size = arena;
    else if (x < 90)
        size = arena + 1 + rq_below(rq, 1u << 30);
    else if (x < 95)
        size = UINT64_MAX;
    else
        size = rq_next(rq);
    x = rq_below(rq, 100);
    if (x < 45)
        align = 0;
    else if (x < 60)                               /* at most a page: page aligned */
        align = 1ull << rq_below(rq, SHM_PAGE_SHIFT + 1);
    else if (x < 75)                               /* 16 KiB .. 4 MiB */
        align = 1ull << (SHM_PAGE_SHIFT + 1 + rq_below(rq, 9));
    else if (x < 85)                               /* not a power of two */
        align = (1ull << rq_below(rq, 30)) * (3 + 2 * rq_below(rq, 100));
    else if (x < 90)
        align = 1ull << 63;
    else if (x < 95)                               /* more than the arena */
        align = arena << (1 + rq_below(rq, 8));
    else
        align = arena;
    x = rq_below(rq, 100);
    extra = x < 60 ? 0 : x < 95 ? 1 + rq_below(rq, 10) : rq_below(rq, 5000);

    /* what the daemon must answer, in the order it looks */
    uint64_t need = size / SHM_PAGE_SIZE + (size % SHM_PAGE_SIZE != 0);
    uint64_t alpages = align > SHM_PAGE_SIZE ? align >> SHM_PAGE_SHIFT : 1;
    uint64_t room = rq->npages - rq->first_page;
    uint32_t want = 0;
    const char *what = NULL;
    if (k->sid == 0)
        want = EPROTO, what = "before Hello";
    else if (size == 0)
        want = EINVAL, what = "0 bytes";
    else if ((align & (align - 1)) != 0 || align > arena)
        want = EINVAL, what = "alignment";
    else if (size > arena)
        want = ENOMEM;
    else if (need + alpages - 1 > room)
        want = ENOMEM;
    rq_note(rq, "AllocLarge(size %llu, align %#llx, extra %u%s)", (unsigned long long)size,
            (unsigned long long)align, extra, want ? ", bad" : "");
    Spand__Response *r = alloc_large_extra(&k->c, size, align, extra);
    uint32_t e = rq_expect(rq, r, SPAND__RESPONSE__BODY_ALLOC_LARGE, want == 0, true, want,
                           what);
    rq->ngrant += e == 0;
    if (e == 0 && r->body_case == SPAND__RESPONSE__BODY_ALLOC_LARGE) {
        const Spand__AllocLargeReply *m = r->alloc_large;
        uint64_t off = m->offset, bytes = m->usable_size;
        rq_note(rq, " at %#llx, %llu bytes, %zu extra", (unsigned long long)off,
                (unsigned long long)bytes, m->n_extra);
        /* page aligned, the size rounded up to pages, aligned as asked,
         * inside the heap (rq_claim) and on no page of anything else */
        bool ok = off % SHM_PAGE_SIZE == 0 && bytes == need * SHM_PAGE_SIZE &&
                  (align <= SHM_PAGE_SIZE || (rq->a.hdr->base + off) % align == 0);
        CU_ASSERT(ok);
        if (ok && (ok = rq_large_add(rq, off, bytes, -1))) {
            rq_pattern_put(rq, &rq->large[rq->nlarge - 1]);
            CU_ASSERT(rq_large_intact(rq, &rq->large[rq->nlarge - 1]));
        }
        /* extras: only sizes the pool takes, page aligned, at most 15 */
        bool may = align <= SHM_PAGE_SIZE && shm_lpool_bucket(rq->a.base, need) != NULL;
        CU_ASSERT(m->n_extra <= (may ? (extra < RQ_MAX_EXTRA ? extra : RQ_MAX_EXTRA) : 0));
        for (size_t i = 0; ok && i < m->n_extra; i++) {
            ok = m->extra[i] % SHM_PAGE_SIZE == 0 && rq_large_add(rq, m->extra[i], bytes, who);
            CU_ASSERT(ok);
            if (ok) {
                CU_ASSERT(rq_large_intact(rq, &rq->large[rq->nlarge - 1]));
            }
        }
    }
    done(r);
}

static void rq_free(rq_t *rq, int who)
{
    rq_client_t *k = &rq->cl[who];
    uint64_t off = 0;
    unsigned x = rq_below(rq, 100);
    const rq_large_t *o = rq->nlarge ? &rq->large[rq_below(rq, rq->nlarge)] : NULL;
    if (x < 55 && o)                               /* any client's object (or extra) */
        off = o->off;
    else if (x < 65 && rq->nfreed)                 /* again */
        off = rq->freed[rq_below(rq, rq->nfreed < RQ_FREED ? rq->nfreed : RQ_FREED)];
    else if (x < 80 && o)                          /* inside one */
        off = o->off + (rq_chance(rq, 50) ? 1 : rq_chance(rq, 50) ? 4096 : SHM_PAGE_SIZE);
    else if (x < 85)                               /* a page of the heap */
        off = (uint64_t)(rq->first_page + rq_below(rq, rq->npages - rq->first_page))
              << SHM_PAGE_SHIFT;
    else if (x < 90)
        off = rq_next(rq);
    else if (x < 95)
        off = UINT64_MAX;
    /* else 0 */
    long i = rq_large_at(rq, off);
    bool valid = k->sid != 0 && i >= 0 && rq->large[i].cached < 0;
    rq_note(rq, "FreeLarge(%#llx%s)", (unsigned long long)off,
            valid ? "" : i >= 0 && rq->large[i].cached >= 0 ? ", an extra span" : ", bad");
    if (valid) {
        bool intact = rq_large_intact(rq, &rq->large[i]);
        CU_ASSERT(intact);
    }
    char what[64] = "before Hello";
    if (k->sid != 0)
        snprintf(what, sizeof what, "offset %#llx ", (unsigned long long)off);
    Spand__Response *r = free_large(&k->c, off);
    uint32_t e = rq_expect(rq, r, SPAND__RESPONSE__BODY_FREE_LARGE, valid, false,
                           k->sid == 0 ? EPROTO : EINVAL, what);
    if (e == 0 && valid) {
        rq_large_del(rq, (size_t)i);
        rq->freed[rq->nfreed++ % RQ_FREED] = off;
    }
    done(r);
}

/* Stats: sessions, large bytes (extra spans are counted as pooled, not
 * live) and, per class, spans held, all as the model says. */
static void rq_stats(rq_t *rq, int who)
{
    bool classes = rq_chance(rq, 50);
    rq_note(rq, "Stats(classes %d)", classes);
    Spand__Response *r = stats(&rq->cl[who].c, classes);
    if (rq_expect(rq, r, SPAND__RESPONSE__BODY_STATS, true, false, 0, NULL) != 0 ||
        r->body_case != SPAND__RESPONSE__BODY_STATS) {
        done(r);
        return;
    }
    const Spand__StatsReply *s = r->stats;
    uint64_t live = 0, pooled = 0;
    for (size_t i = 0; i < rq->nlarge; i++)
        *(rq->large[i].cached < 0 ? &live : &pooled) += rq->large[i].bytes;
    CU_ASSERT_EQUAL(s->clients, rq_sessions(rq));
    CU_ASSERT_EQUAL(s->large_bytes, live);
    CU_ASSERT_EQUAL(s->large_pool_bytes, pooled);
    if (s->large_bytes != live || s->large_pool_bytes != pooled)
        rq_note(rq, " [large_bytes %llu, large_pool_bytes %llu; the model %llu, %llu]",
                (unsigned long long)s->large_bytes, (unsigned long long)s->large_pool_bytes,
                (unsigned long long)live, (unsigned long long)pooled);
    if (classes) {
        uint32_t held[SHM_NCLASSES] = { 0 };
        for (int c = 0; c < RQ_CLIENTS; c++)
            for (size_t j = 0; j < rq->cl[c].nheld; j++)
                held[rq->span[rq->cl[c].held[j]].cls]++;
        bool ok = s->n_classes == SHM_NCLASSES - 1;
        for (size_t c = 0; ok && c < s->n_classes; c++)
            ok = s->classes[c]->spans_held == held[c + 1];
        CU_ASSERT(ok);
    }
    done(r);
}

/* Clients: every session of the model, with its name and span count. */
static void rq_clients(rq_t *rq, int who)
{
    rq_note(rq, "Clients");
    Spand__Response *r = clients(&rq->cl[who].c);
    if (rq_expect(rq, r, SPAND__RESPONSE__BODY_CLIENTS, true, false, 0, NULL) == 0 &&
        r->body_case == SPAND__RESPONSE__BODY_CLIENTS) {
        bool ok = r->clients->n_clients == rq_sessions(rq);
        for (size_t i = 0; ok && i < r->clients->n_clients; i++) {
            const Spand__ClientInfo *ci = r->clients->clients[i];
            int c = 0;
            while (c < RQ_CLIENTS && rq->cl[c].sid != ci->session_id)
                c++;
            char name[16];
            snprintf(name, sizeof name, "rq%d", c);
            ok = c < RQ_CLIENTS && ci->spans == rq->cl[c].nheld &&
                 ci->pid == (uint32_t)getpid() && strcmp(ci->name, name) == 0;
        }
        CU_ASSERT(ok);
    }
    done(r);
}

static void rq_verify(rq_t *rq, int who)
{
    Spand__Verify v = SPAND__VERIFY__INIT;
    rq_note(rq, "Verify");
    Spand__Response *r = call(&rq->cl[who].c, SPAND__REQUEST__BODY_VERIFY, &v);
    if (rq_expect(rq, r, SPAND__RESPONSE__BODY_VERIFY, true, false, 0, NULL) == 0 &&
        r->body_case == SPAND__RESPONSE__BODY_VERIFY) {
        CU_ASSERT(r->verify->ok);
        if (!r->verify->ok)
            rq_note(rq, " [verify: %s]", r->verify->message);
    }
    done(r);
}

static void rq_ping(rq_t *rq, int who)
{
    uint64_t token = rq_next(rq);
    rq_note(rq, "Ping");
    Spand__Response *r = ping(&rq->cl[who].c, token);
    if (rq_expect(rq, r, SPAND__RESPONSE__BODY_PING, true, false, 0, NULL) == 0 &&
        r->body_case == SPAND__RESPONSE__BODY_PING) {
        CU_ASSERT_EQUAL(r->ping->token, token);
    }
    done(r);
}

static void rq_scavenge(rq_t *rq, int who)
{
    rq_note(rq, "Scavenge");
    Spand__Response *r = scavenge(&rq->cl[who].c);
    rq_expect(rq, r, SPAND__RESPONSE__BODY_SCAVENGE, true, false, 0, NULL);
    done(r);
}

/* A second Hello on a connection that has a session, or one of another
 * protocol version on any: refused, no fd, the session as it was. */
static void rq_hello_again(rq_t *rq, int who)
{
    rq_client_t *k = &rq->cl[who];
    bool again = k->sid != 0 && rq_chance(rq, 50);
    uint32_t version = again ? SPAND_PROTOCOL_VERSION :
                       rq_chance(rq, 20) ? 0 : SPAND_PROTOCOL_VERSION + 1 + rq_below(rq, 1000);
    int fd = k->c.arena_fd;
    rq_note(rq, "Hello(version %u)", version);
    Spand__Response *r = hello(&k->c, version, "again");
    rq_expect(rq, r, SPAND__RESPONSE__BODY_HELLO, false, false, again ? EINVAL : EPROTO,
              again ? "Hello already" : "protocol version");
    CU_ASSERT_EQUAL(k->c.arena_fd, fd);
    done(r);
}

/* Wait (2 s at most) until the daemon counts the model's sessions: a
 * connection's session ends when the daemon reads its end. */
static void rq_wait_sessions(rq_t *rq, ctl_client_t *c)
{
    uint32_t n = UINT32_MAX;
    for (int i = 0; i < 1000; i++) {                    /* 10 s at most */
        Spand__Response *r = stats(c, false);
        n = r && r->stats ? r->stats->clients : UINT32_MAX;
        done(r);
        if (n == rq_sessions(rq))
            break;
        sleep_ms(10);
    }
    CU_ASSERT_EQUAL(n, rq_sessions(rq));
}

/* Client `who` hangs up, holding what it holds, and connects again (with
 * a new Hello unless it is the one that never says it).  Its session ends:
 * every span it held and every extra span cached for it comes back
 * (adopted_spans counts them), none HELD any more.  This process maps the
 * arena, so the daemon keeps a session that still holds something after
 * its connection closes (rpc.c, conn_keep) until this process says Hello
 * again: the new Hello ends it before it opens the new session. */
static void rq_reopen(rq_t *rq, int who)
{
    rq_client_t *k = &rq->cl[who];
    uint64_t adopted0 = 0;
    Spand__Response *r = stats(&k->c, false);
    if (r && r->stats)
        adopted0 = counter(r->stats, "adopted_spans");
    done(r);
    size_t nspans = k->nheld, nextra = 0;
    uint32_t *gone = malloc((nspans + 1) * sizeof *gone);
    uint64_t *gone_extra = malloc((rq->nlarge + 1) * sizeof *gone_extra);
    CU_ASSERT_FATAL(gone != NULL && gone_extra != NULL);
    if (nspans > 0)                 /* k->held may be NULL then */
        memcpy(gone, k->held, nspans * sizeof *gone);
    rq_note(rq, "hang up holding %zu spans", nspans);
    ctl_close(&k->c);
    rq_released(rq, gone, nspans);
    for (size_t i = rq->nlarge; i-- > 0;)
        if (rq->large[i].cached == who) {
            gone_extra[nextra++] = rq->large[i].off;
            rq_large_del(rq, i);
        }
    rq_note(rq, " and %zu extra large spans; connect again", nextra);
    bool had = k->sid != 0;
    k->sid = 0;
    open_client(rq->d, &k->c);
    if (had) {
        char name[16];
        snprintf(name, sizeof name, "rq%d", who);
        k->sid = say_hello(&k->c, name);
        rq_note(rq, ", session %u", k->sid);
    }
    rq_wait_sessions(rq, &k->c);
    r = stats(&k->c, false);
    if (r && r->stats) {
        CU_ASSERT_EQUAL(counter(r->stats, "adopted_spans") - adopted0, nspans + nextra);
    } else {
        CU_FAIL("Stats failed");
    }
    done(r);
    rq_check_released(rq, gone, nspans);
    bool ok = true;
    for (size_t i = 0; i < nextra; i++) {
        const shm_span_t *s = rq_desc(rq, gone_extra[i] >> SHM_PAGE_SHIFT);
        ok = ok && (s == NULL || shm_load_acquire(&s->xstate) == SHM_SPAN_FREE);
    }
    CU_ASSERT(ok);
    free(gone);
    free(gone_extra);
}

static void rq_dump(const rq_t *rq)
{
    fprintf(stderr, "\nrandom requests: failed at step %u with seed %llu "
            "(again: SPAND_RANDREQ_SEED=%llu); the last steps:\n", rq->step,
            (unsigned long long)rq->seed, (unsigned long long)rq->seed);
    unsigned first = rq->step + 1 > RQ_TRACE ? rq->step + 1 - RQ_TRACE : 0;
    for (unsigned s = first; s <= rq->step; s++)
        fprintf(stderr, "  %s\n", rq->trace[s % RQ_TRACE]);
}

/* One step: a client (the one without a session less often) and a request. */
static void rq_step(rq_t *rq)
{
    int who = rq_chance(rq, 10) ? RQ_NOHELLO : (int)rq_below(rq, RQ_NOHELLO);
    unsigned x = rq_below(rq, 1000);
    snprintf(rq->trace[rq->step % RQ_TRACE], sizeof rq->trace[0], "%u: client %d: ",
             rq->step, who);
    if (x < 200)
        rq_refill(rq, who);
    else if (x < 400)
        rq_release(rq, who);
    else if (x < 600)
        rq_alloc(rq, who);
    else if (x < 820)
        rq_free(rq, who);
    else if (x < 850)
        rq_stats(rq, who);
    else if (x < 870)
        rq_clients(rq, who);
    else if (x < 890)
        rq_verify(rq, who);
    else if (x < 910)
        rq_ping(rq, who);
    else if (x < 925)
        rq_scavenge(rq, who);
    else if (x < 960)
        rq_hello_again(rq, who);
    else if (x < 975)
        rq_reopen(rq, who);
    else
        rq_release(rq, who);
}

static unsigned long long rq_env(const char *name, unsigned long long def)
{
    const char *s = getenv(name);
    return s && *s ? strtoull(s, NULL, 0) : def;
}

static void test_random_requests(void)
{
    /* 64 MiB: a few Refills of large spans fill it, so ENOMEM comes up;
     * the scavenger every second runs between the requests too */
    const char *args[] = { "-m", "64M", "--scavenge-interval", "1", NULL };
    static rq_t rq;
    memset(&rq, 0, sizeof rq);
    rq.seed = rq.rng = rq_env("SPAND_RANDREQ_SEED", RQ_SEED);
    unsigned nsteps = (unsigned)rq_env("SPAND_RANDREQ_STEPS", RQ_STEPS);
    bool verbose = rq_env("SPAND_RANDREQ_VERBOSE", 0) != 0;
    rq.d = start(args);
    for (int i = 0; i < RQ_CLIENTS; i++) {
        char name[16];
        snprintf(name, sizeof name, "rq%d", i);
        open_client(rq.d, &rq.cl[i].c);
        if (i != RQ_NOHELLO)
            rq.cl[i].sid = say_hello(&rq.cl[i].c, name);
    }
    CU_ASSERT_FATAL(map_arena(&rq.cl[0].c, &rq.a));
    rq.first_page = (uint32_t)(rq.a.hdr->data_off >> SHM_PAGE_SHIFT);
    rq.npages = rq.a.hdr->npages;
    rq.page = calloc(rq.npages, sizeof *rq.page);
    CU_ASSERT_FATAL(rq.page != NULL);

    unsigned failures = CU_get_number_of_failures();
    bool failed = false;
    for (rq.step = 0; rq.step < nsteps && !failed; rq.step++) {
        rq_step(&rq);
        if (rq.step % 100 == 99) {                 /* every so often, on top */
            rq_verify(&rq, (int)rq_below(&rq, RQ_CLIENTS));
            rq_ping(&rq, (int)rq_below(&rq, RQ_CLIENTS));
        }
        rq_check_all(&rq);
        failed = CU_get_number_of_failures() != failures;
        if (verbose)
            fprintf(stderr, "%s\n", rq.trace[rq.step % RQ_TRACE]);
    }
    if (failed) {
        rq.step--;
        rq_dump(&rq);
    } else {
        /* the end: every object freed, every span released, by a client
         * with a session; nothing lost on the way */
        snprintf(rq.trace[rq.step % RQ_TRACE], sizeof rq.trace[0], "the end");
        for (size_t i = rq.nlarge; i-- > 0;) {
            if (rq.large[i].cached >= 0)
                continue;
            CU_ASSERT(rq_large_intact(&rq, &rq.large[i]));
            Spand__Response *r = free_large(&rq.cl[i % RQ_NOHELLO].c, rq.large[i].off);
            CU_ASSERT_EQUAL(err_of(r), 0);
            done(r);
            rq_large_del(&rq, i);
        }
        for (int c = 0; c < RQ_CLIENTS; c++) {
            rq_client_t *k = &rq.cl[c];
            if (k->sid == 0)
                continue;
            Spand__Response *r = release(&k->c, k->held, k->nheld);
            CU_ASSERT_EQUAL(err_of(r), 0);
            done(r);
            while (k->nheld > 0)
                rq_unhold(&rq, k->held[k->nheld - 1]);
        }
        rq_check_all(&rq);
        if (CU_get_number_of_failures() != failures)
            rq_dump(&rq);
    }
    /* unmapped first, so that closing ends every session at once (conn_keep
     * keeps a session holding extra spans while this process maps the arena) */
    shm_arena_close(&rq.a);
    for (int i = 0; i < RQ_CLIENTS; i++) {
        ctl_close(&rq.cl[i].c);
        rq.cl[i].sid = 0;
        free(rq.cl[i].held);
    }
    if (!failed) {
        ctl_client_t c;
        open_client(rq.d, &c);
        rq_wait_sessions(&rq, &c);
        Spand__Response *r = stats(&c, true);
        CU_ASSERT(r && r->stats);
        if (r && r->stats) {
            bool none = r->stats->n_classes == SHM_NCLASSES - 1;
            for (size_t i = 0; none && i < r->stats->n_classes; i++)
                none = r->stats->classes[i]->spans_held == 0;
            CU_ASSERT(none);
            CU_ASSERT_EQUAL(r->stats->clients, 0);
            CU_ASSERT_EQUAL(r->stats->large_bytes, 0);
            CU_ASSERT_EQUAL(r->stats->large_pool_bytes, 0);      /* extras freed */
            /* every EINVAL and EPROTO answer, and nothing else */
            CU_ASSERT_EQUAL(counter(r->stats, "bad_requests"), rq.nbad);
        }
        done(r);
        ctl_close(&c);
        CU_ASSERT(rq.nbad > 0);
        /* ENOMEM is allowed of any Refill or AllocLarge; a daemon that said
         * it to all of them must fail all the same */
        CU_ASSERT(rq.ngrant > rq.nenomem);
        fprintf(stderr, "(random requests: seed %llu, %u steps: %u answered ok, %u refused, "
                "%u ENOMEM)\n", (unsigned long long)rq.seed, nsteps, rq.nok, rq.nrefused,
                rq.nenomem);
    }
    free(rq.span);
    free(rq.page);
    free(rq.large);
    finish(rq.d);
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
    { "out of file descriptors: connections wait, none is lost", test_out_of_fds },
    { "a client that does not read: back-pressure, then every answer", test_back_pressure },
    { "what a client sent before it hung up is all applied", test_hangup_applies_all },
    { "other uid refused", test_other_uid_refused },
    { "allowed uid, config file", test_allowed_uid_and_config },
    { "exited client's spans adopted", test_client_exit_adopted },
    { "killed client's spans adopted", test_client_killed_adopted },
    { "scavenge returns memory", test_scavenge_now },
    { "scavenger timer returns memory", test_scavenger_timer },
    { "json checker", test_json_checker },
    { "spanctl", test_spanctl },
    { "second daemon refused", test_second_daemon_refused },
    { "socket paths refused, nothing touched", test_socket_path_refused },
    { "arena sizes, base addresses, large pools refused", test_arena_args_refused },
    { "SIGHUP changes nothing", test_sighup_goes_on },
    { "SIGTERM cleans up", test_sigterm_cleanup },
    { "daemonizes without -f", test_daemonize },
    { "default socket from the environment", test_default_socket },
    { "stale socket and arena replaced", test_stale_replaced },
    { "random requests from several clients", test_random_requests },
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

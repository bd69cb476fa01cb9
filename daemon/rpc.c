/* See shm/layout.h for the overview.
 *
 * The RPC server (daemon/rpc.h): the listening socket, connections,
 * framing (proto/wire.h), limits and the dispatch table.
 *
 * A connection's life: accept (SO_PEERCRED recorded) -> frames are parsed
 * as they arrive, as many as are buffered, and answered in order into the
 * bufferevent's output, which the read callback writes out before it
 * returns (conn_flush; the bufferevent writes only what the socket
 * refused) -> on EOF, error or write timeout every complete frame the peer
 * sent before it went is applied (conn_apply_rest), then the connection is
 * freed and its session, if any, ends (daemon/session.c adopts its spans).
 * A frame over SPAND_MAX_FRAME gets one error answer and the connection is
 * closed once it is written; undecodable bytes and unknown bodies get an
 * error answer and the connection goes on.  Answers pile up to at most
 * SPD_OUTPUT_MAX bytes: past that no more frames are parsed until the
 * client has read them.  The Hello answer goes out by sendmsg() with the
 * arena's fd once everything before it has been written (proto/wire.h).
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/un.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/listener.h>

#include "daemon/log.h"
#include "daemon/rpc.h"
#include "daemon/session.h"
#include "daemon/verify.h"

/* ---- the dispatch table ---- */

enum { NEEDS_SESSION = 1u << 0, MUTATES = 1u << 1 };

typedef struct spd_method_s {
    const char *name;
    int (*fn)(spd_call_t *call);
    unsigned flags;
} spd_method_t;

static const spd_method_t methods[] = {
    [SPAND__REQUEST__BODY_HELLO]       = { "hello",       spd_h_hello,       MUTATES },
    [SPAND__REQUEST__BODY_REFILL]      = { "refill",      spd_h_refill,
                                           NEEDS_SESSION | MUTATES },
    [SPAND__REQUEST__BODY_RELEASE]     = { "release",     spd_h_release,
                                           NEEDS_SESSION | MUTATES },
    [SPAND__REQUEST__BODY_ALLOC_LARGE] = { "alloc_large", spd_h_alloc_large,
                                           NEEDS_SESSION | MUTATES },
    [SPAND__REQUEST__BODY_FREE_LARGE]  = { "free_large",  spd_h_free_large,
                                           NEEDS_SESSION | MUTATES },
    [SPAND__REQUEST__BODY_STATS]       = { "stats",       spd_h_stats,       0 },
    [SPAND__REQUEST__BODY_SCAVENGE]    = { "scavenge",    spd_h_scavenge,    MUTATES },
    [SPAND__REQUEST__BODY_PING]        = { "ping",        spd_h_ping,        0 },
    [SPAND__REQUEST__BODY_CLIENTS]     = { "clients",     spd_h_clients,     0 },
    [SPAND__REQUEST__BODY_VERIFY]      = { "verify",      spd_h_verify,      0 },
};
#define NMETHODS (sizeof methods / sizeof methods[0])

/* ---- per-call scratch memory ---- */

struct spd_scratch_s {
    spd_scratch_t *next;
    max_align_t data[];
};

void *spd_call_alloc(spd_call_t *call, size_t size)
{
    spd_scratch_t *s = calloc(1, sizeof *s + (size ? size : 1));
    if (s == NULL)
        log_fatal("out of memory answering a request (%zu bytes)", size);
    s->next = call->scratch;
    call->scratch = s;
    return s->data;
}

int spd_call_fail(spd_call_t *call, int err, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(call->msg, sizeof call->msg, fmt, ap);
    va_end(ap);
    return err;
}

static void call_done(spd_call_t *call)
{
    while (call->scratch) {
        spd_scratch_t *next = call->scratch->next;
        free(call->scratch);
        call->scratch = next;
    }
}

/* ---- connections ---- */

static void conn_read_cb(struct bufferevent *bev, void *arg);
static void conn_write_cb(struct bufferevent *bev, void *arg);
static void conn_event_cb(struct bufferevent *bev, short what, void *arg);
static void hello_retry_cb(evutil_socket_t fd, short what, void *arg);

static void conn_free(spd_conn_t *c);

/* The process of a kept session exited: end it now. */
static void conn_exit_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what;
    conn_free(arg);
}

/* Does process `pid` still map the arena (any mapping of the arena's
 * object: its device and inode, in /proc/PID/maps)?  1 yes; 0 no: an exec
 * replaced its image (the pid stays, the pidfd does not fire) or it
 * unmapped the arena, so none of its threads can use what it holds; -1
 * cannot tell (no /proc, a process we may not inspect): keep it then. */
static int proc_maps_arena(pid_t pid, const shm_arena_t *a)
{
    struct stat st;
    char path[64];
    if (fstat(a->fd, &st) != 0)
        return -1;
    snprintf(path, sizeof path, "/proc/%ld/maps", (long)pid);
    FILE *f = fopen(path, "re");
    if (f == NULL)
        return -1;
    char *line = NULL;
    size_t cap = 0;
    int found = 0;
    while (!found && getline(&line, &cap, f) > 0) {
        unsigned maj, min;
        unsigned long long ino;
        if (sscanf(line, "%*x-%*x %*s %*x %x:%x %llu", &maj, &min, &ino) == 3 &&
            ino == (unsigned long long)st.st_ino && makedev(maj, min) == st.st_dev)
            found = 1;
    }
    int rc = found ? 1 : ferror(f) ? -1 : 0;
    free(line);
    fclose(f);
    return rc;
}

/* End kept session c (conn_keep) now, saying why. */
static void end_kept(spd_conn_t *c, const char *why)
{
    log_info("conn=%llu session=%u pid=%ld %s: its kept session ends now",
             (unsigned long long)c->num, c->session, (long)c->pid, why);
    conn_free(c);                       /* bev NULL: conn_keep says no */
}

void spd_rpc_end_kept(spd_daemon_t *d, pid_t pid)
{
    for (spd_conn_t *c = d->conns, *next; c != NULL; c = next) {
        next = c->next;
        if (c->exit_ev != NULL && c->pid == pid)
            end_kept(c, "said Hello again (after spc_detach, or an exec)");
    }
}

/* Every second while sessions are kept: one whose process no longer maps
 * the arena (it exec'd after its connection closed) ends now. */
static void keep_check_cb(evutil_socket_t fd, short what, void *arg)
{
    spd_daemon_t *d = arg;
    bool kept = false;
    (void)fd, (void)what;
    for (spd_conn_t *c = d->conns, *next; c != NULL; c = next) {
        next = c->next;
        if (c->exit_ev == NULL)
            continue;
        if (proc_maps_arena(c->pid, &d->arena) == 0)
            end_kept(c, "no longer maps the arena (it exec'd)");
        else
            kept = true;
    }
    if (!kept)
        event_del(d->keep_check);
}

/* The connection of session c->session is closing.  If its process still
 * runs and holds spans (or cached large spans), its threads go on using
 * them whatever happened to the socket (a process that closes every fd it
 * does not know, say): adopting them now would hand its objects to others
 * while it still allocates them.  So close the socket but keep the session
 * until the process exits (its pidfd turns readable), execs (keep_check_cb)
 * or says Hello again (spd_rpc_end_kept).  False: end it now (gone,
 * exec'd, nothing held, no pidfd, or the daemon is stopping). */
static bool conn_keep(spd_conn_t *c)
{
    spd_daemon_t *d = c->d;
    uint32_t slot = c->session - 1;
    if (c->bev == NULL || c->pidfd < 0 || d->stopping)
        return false;
    struct pollfd pfd = { .fd = c->pidfd, .events = POLLIN };
    if (poll(&pfd, 1, 0) != 0 || !spd_session_holds(&d->arena, slot))
        return false;                   /* exited (or cannot tell), or holds nothing */
    if (proc_maps_arena(c->pid, &d->arena) == 0) {
        /* the kernel closed it at exec; or the process is exiting: exit
         * drops its mappings before it closes its files, and its pidfd
         * turns readable only after both */
        log_info("conn=%llu session=%u pid=%ld closed its connection and no longer maps "
                 "the arena (it exec'd, or is exiting): its session ends now",
                 (unsigned long long)c->num, c->session, (long)c->pid);
        return false;
    }
    c->exit_ev = event_new(d->base, c->pidfd, EV_READ, conn_exit_cb, c);
    struct timeval second = { 1, 0 };
    if (c->exit_ev == NULL || event_add(c->exit_ev, NULL) != 0 ||
        (!event_pending(d->keep_check, EV_TIMEOUT, NULL) &&
         event_add(d->keep_check, &second) != 0)) {
        log_warnx("conn=%llu: cannot watch pid %ld; its session ends now",
                  (unsigned long long)c->num, (long)c->pid);
        return false;
    }
    log_warnx("conn=%llu session=%u pid=%ld closed its connection but still runs, holding "
              "%u spans: they stay its own until it exits, execs or attaches again", (unsigned long long)c->num,
              c->session, (long)c->pid, d->arena.hdr->sessions[slot].nspans);
    if (c->hello_ev) {
        event_free(c->hello_ev);
        c->hello_ev = NULL;
    }
    free(c->hello_frame);
    c->hello_frame = NULL;
    bufferevent_free(c->bev);           /* closes the socket */
    c->bev = NULL;
    c->dead = false;
    return true;
}

static void conn_free(spd_conn_t *c)
{
    spd_daemon_t *d = c->d;
    if (c->session != 0 && conn_keep(c))
        return;
    if (c->session != 0) {
        uint32_t slot = c->session - 1;
        uint32_t n = spd_session_close(&d->arena, slot);
        d->by_session[slot] = NULL;
        log_info("conn=%llu session=%u pid=%ld end adopted_spans=%u",
                 (unsigned long long)c->num, slot + 1, (long)c->pid, n);
    } else {
        log_debug("conn=%llu pid=%ld closed", (unsigned long long)c->num, (long)c->pid);
    }
    if (c->prev)
        c->prev->next = c->next;
    else
        d->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    if (c->hello_ev)
        event_free(c->hello_ev);
    if (c->exit_ev)
        event_free(c->exit_ev);
    if (c->pidfd >= 0)
        close(c->pidfd);
    free(c->hello_frame);
    if (c->bev)
        bufferevent_free(c->bev);   /* closes the socket */
    free(c);
}

/* Log a client's bad input once per connection, count it always. */
static void conn_bad(spd_conn_t *c, const char *what)
{
    c->d->arena.hdr->stats.bad_requests++;
    if (!c->warned)
        log_warnx("conn=%llu pid=%ld uid=%lu bad request: %s (logged once per connection)",
                  (unsigned long long)c->num, (long)c->pid, (unsigned long)c->uid, what);
    c->warned = true;
}

/* Stop reading; free the connection once its output is written (the write
 * callback, or the write timeout). */
static void conn_close_after_flush(spd_conn_t *c)
{
    c->closing = true;
    bufferevent_disable(c->bev, EV_READ);
    if (evbuffer_get_length(bufferevent_get_output(c->bev)) == 0)
        c->dead = true;
}

/* Pack `resp` as one frame into a malloc'd buffer (the Hello answer, which
 * leaves by sendmsg).  NULL when it does not fit in a frame. */
static uint8_t *pack_frame(const Spand__Response *resp, size_t *len)
{
    size_t n = spand__response__get_packed_size(resp);
    if (n > SPAND_MAX_FRAME)
        return NULL;
    uint8_t *buf = malloc(SPAND_FRAME_HDR + n);
    if (buf == NULL)
        log_fatal("out of memory packing an answer (%zu bytes)", n);
    spand_frame_put_len(buf, (uint32_t)n);
    spand__response__pack(resp, buf + SPAND_FRAME_HDR);
    *len = SPAND_FRAME_HDR + n;
    return buf;
}

/* Pack `resp` as one frame straight into the connection's output buffer
 * (no copy).  False when it does not fit in a frame. */
static bool queue_frame(spd_conn_t *c, const Spand__Response *resp)
{
    struct evbuffer *out = bufferevent_get_output(c->bev);
    struct evbuffer_iovec v;
    size_t n = spand__response__get_packed_size(resp);
    if (n > SPAND_MAX_FRAME)
        return false;
    if (evbuffer_reserve_space(out, (ev_ssize_t)(SPAND_FRAME_HDR + n), &v, 1) != 1)
        log_fatalx("out of memory queueing an answer (%zu bytes)", n);
    spand_frame_put_len(v.iov_base, (uint32_t)n);
    spand__response__pack(resp, (uint8_t *)v.iov_base + SPAND_FRAME_HDR);
    v.iov_len = SPAND_FRAME_HDR + n;
    evbuffer_commit_space(out, &v, 1);
    return true;
}

/* Queue a bodiless error answer. */
static void send_error(spd_conn_t *c, uint64_t id, int err, const char *msg)
{
    Spand__Response resp = SPAND__RESPONSE__INIT;
    resp.id = id;
    resp.error = (uint32_t)err;
    resp.message = (char *)msg;
    queue_frame(c, &resp);
}

/* Send the waiting HelloReply with the arena's fd, once every earlier
 * answer has left the output buffer.  Returns true when it went out (or
 * the connection died), false while it still waits. */
static bool hello_try_send(spd_conn_t *c)
{
    if (evbuffer_get_length(bufferevent_get_output(c->bev)) > 0)
        return false;                       /* conn_write_cb calls us again */
    union {
        struct cmsghdr hdr;
        char buf[CMSG_SPACE(sizeof(int))];
    } ctl;
    struct iovec iov = { .iov_base = c->hello_frame, .iov_len = c->hello_len };
    struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1,
                          .msg_control = ctl.buf, .msg_controllen = sizeof ctl.buf };
    memset(&ctl, 0, sizeof ctl);
    struct cmsghdr *cm = CMSG_FIRSTHDR(&msg);
    cm->cmsg_level = SOL_SOCKET;
    cm->cmsg_type = SCM_RIGHTS;
    cm->cmsg_len = CMSG_LEN(sizeof(int));
    memcpy(CMSG_DATA(cm), &c->d->arena.fd, sizeof(int));

    ssize_t n;
    do
        n = sendmsg(c->fd, &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
    while (n < 0 && errno == EINTR);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
        struct timeval tv = { SPD_WRITE_TIMEOUT_SECS, 0 };
        event_add(c->hello_ev, &tv);
        return false;
    }
    if (n < 0) {
        log_warn("conn=%llu cannot send the Hello answer", (unsigned long long)c->num);
        c->dead = true;
        return true;
    }
    if ((size_t)n < c->hello_len)
        bufferevent_write(c->bev, c->hello_frame + n, c->hello_len - (size_t)n);
    free(c->hello_frame);
    c->hello_frame = NULL;
    c->paused = false;
    return true;
}

static void hello_retry_cb(evutil_socket_t fd, short what, void *arg)
{
    spd_conn_t *c = arg;
    (void)fd;
    if (what & EV_TIMEOUT) {
        log_warnx("conn=%llu peer takes no bytes; dropped", (unsigned long long)c->num);
        c->dead = true;
    } else if (hello_try_send(c) && !c->dead) {
        conn_read_cb(c->bev, c);
        return;
    }
    if (c->dead)
        conn_free(c);
}

#if SPD_DEBUG >= 2
static void debug_verify(spd_conn_t *c, const char *name)
{
    char msg[512];
    if (spd_heap_verify(&c->d->arena, msg, sizeof msg) != 0)
        log_warnx("VERIFY FAILED after %s from conn=%llu: %s", name,
                  (unsigned long long)c->num, msg);
}
#endif

/* Answer one decoded request. */
static void dispatch(spd_conn_t *c, const Spand__Request *req)
{
    spd_call_t call = { .d = c->d, .conn = c, .req = req, .pass_fd = -1 };
    const spd_method_t *m = NULL;
    bool refuse = false;
    int err;

    spand__response__init(&call.resp);
    if ((unsigned)req->body_case < NMETHODS)
        m = &methods[req->body_case];
    if (!c->allowed) {
        err = spd_call_fail(&call, EACCES, "uid %lu may not use this daemon",
                            (unsigned long)c->uid);
        refuse = true;
    } else if (m == NULL || m->fn == NULL) {
        err = spd_call_fail(&call, EPROTO, "unknown or missing request body (case %d)",
                            (int)req->body_case);
        conn_bad(c, call.msg);
    } else if ((m->flags & NEEDS_SESSION) && c->session == 0) {
        err = spd_call_fail(&call, EPROTO, "%s before Hello", m->name);
        conn_bad(c, call.msg);
    } else {
        err = m->fn(&call);
        log_debug("conn=%llu id=%llu req=%s error=%d", (unsigned long long)c->num,
                  (unsigned long long)req->id, m->name, err);
        if (err == EINVAL || err == EPROTO)
            conn_bad(c, call.msg);
#if SPD_DEBUG >= 2
        if (m->flags & MUTATES)
            debug_verify(c, m->name);
#endif
    }
    call.resp.id = req->id;
    call.resp.error = (uint32_t)err;
    if (err != 0) {
        call.resp.body_case = SPAND__RESPONSE__BODY__NOT_SET;
        call.resp.message = call.msg;
        call.pass_fd = -1;
    }
    bool fits;
    if (call.pass_fd >= 0) {
        fits = (c->hello_frame = pack_frame(&call.resp, &c->hello_len)) != NULL;
        if (fits) {
            c->paused = true;
            hello_try_send(c);
        }
    } else {
        fits = queue_frame(c, &call.resp);
    }
    if (!fits)
        send_error(c, req->id, EMSGSIZE, "the answer does not fit in one frame");
    call_done(&call);
    if (refuse)
        conn_close_after_flush(c);
}

/* Parse and answer every complete frame in the input buffer. */
static void process_input(spd_conn_t *c)
{
    struct evbuffer *in = bufferevent_get_input(c->bev);
    struct evbuffer *out = bufferevent_get_output(c->bev);
    uint8_t hdr[SPAND_FRAME_HDR];

    while (!c->paused && !c->closing && !c->dead) {
        if (evbuffer_copyout(in, hdr, sizeof hdr) < (ssize_t)sizeof hdr)
            return;
        uint32_t n = spand_frame_get_len(hdr);
        if (n > SPAND_MAX_FRAME) {
            char msg[128];
            snprintf(msg, sizeof msg, "frame of %u bytes is over the limit of %u",
                     n, SPAND_MAX_FRAME);
            conn_bad(c, msg);
            send_error(c, 0, EMSGSIZE, msg);
            conn_close_after_flush(c);
            return;
        }
        if (evbuffer_get_length(in) < SPAND_FRAME_HDR + (size_t)n)
            return;
        evbuffer_drain(in, SPAND_FRAME_HDR);
        const uint8_t *data = n ? evbuffer_pullup(in, n) : (const uint8_t *)"";
        Spand__Request *req = spand__request__unpack(NULL, n, data);
        evbuffer_drain(in, n);
        if (req == NULL) {
            conn_bad(c, "undecodable request");
            send_error(c, 0, EPROTO, "the request does not decode as a spand.Request");
            continue;
        }
        dispatch(c, req);
        spand__request__free_unpacked(req, NULL);
        if (evbuffer_get_length(out) > SPD_OUTPUT_MAX)
            c->paused = true;                    /* conn_write_cb resumes */
    }
}

/* The output buffer has just become empty: what waited for that goes on
 * (close, the Hello answer, parsing after back-pressure).  True when that
 * may have queued more answers. */
static bool conn_drained(spd_conn_t *c)
{
    if (c->closing) {
        c->dead = true;
    } else if (c->hello_frame) {
        if (hello_try_send(c) && !c->dead) {
            process_input(c);
            return true;
        }
    } else if (c->paused) {
        c->paused = false;
        process_input(c);
        return true;
    }
    return false;
}

/* Write the queued answers now, from the callback that queued them, instead
 * of in a later pass of the event loop (which costs an epoll_ctl before the
 * write and a loop pass after it: ~7 us a round trip).  The bufferevent's
 * write event stays disabled while the socket takes everything; only what
 * the socket refuses (EAGAIN) is left to it, with its write timeout. */
static void conn_flush(spd_conn_t *c)
{
    struct evbuffer *out = bufferevent_get_output(c->bev);
    while (!c->dead && evbuffer_get_length(out) > 0) {
        /* a socket bufferevent keeps its output's front frozen; it thaws
         * it the same way around its own writes */
        evbuffer_unfreeze(out, 1);
        int n = evbuffer_write(out, c->fd);
        int err = errno;
        evbuffer_freeze(out, 1);
        if (n < 0 && err == EINTR)
            continue;
        if (evbuffer_get_length(out) > 0) {
            /* partial, EAGAIN or an error: the bufferevent finishes the
             * write (or reports the error) and calls conn_write_cb */
            bufferevent_enable(c->bev, EV_WRITE);
            return;
        }
        if (!conn_drained(c))
            return;
    }
}

static void conn_read_cb(struct bufferevent *bev, void *arg)
{
    spd_conn_t *c = arg;
    (void)bev;
    process_input(c);
    conn_flush(c);
    if (c->dead)
        conn_free(c);
}

/* The bufferevent wrote out what conn_flush left it: the output is empty. */
static void conn_write_cb(struct bufferevent *bev, void *arg)
{
    spd_conn_t *c = arg;
    bufferevent_disable(bev, EV_WRITE);
    if (conn_drained(c))
        conn_flush(c);
    if (c->dead)
        conn_free(c);
}

/* The peer is gone (end of stream, a failed write) or takes no bytes:
 * what it sent before still counts.  A FreeLarge is pipelined (the client
 * does not wait for its answer) and a Release may be the last thing a
 * process says, so a write that fails because the peer has closed must not
 * drop the frames still in the socket: read what the socket holds and apply
 * every complete frame, answering into the void.  Bounded, for a peer that
 * keeps writing.  Not after a protocol error (closing: the stream is not
 * trusted any more). */
static void conn_apply_rest(spd_conn_t *c)
{
    if (c->bev == NULL || c->closing)
        return;
    struct evbuffer *in = bufferevent_get_input(c->bev);
    struct evbuffer *out = bufferevent_get_output(c->bev);
    size_t before = evbuffer_get_length(in);
    uint64_t bytes = 0;
    for (unsigned k = 0; k < SPD_REST_READS && !c->dead && !c->closing; k++) {
        /* nobody reads the answers: drop them, and parse past the limit
         * (a socket bufferevent keeps its output's front and its input's
         * end frozen; thawed around our own use, as conn_flush does) */
        evbuffer_unfreeze(out, 1);
        evbuffer_drain(out, evbuffer_get_length(out));
        evbuffer_freeze(out, 1);
        c->paused = false;
        process_input(c);
        evbuffer_unfreeze(in, 0);
        int n = evbuffer_read(in, c->fd, 1 << 16);
        evbuffer_freeze(in, 0);
        if (n <= 0)
            break;
        bytes += (uint64_t)n;
    }
    if (before > 0 || bytes > 0)
        log_debug("conn=%llu gone: applied what it sent before (%zu bytes buffered, "
                  "%llu more read)", (unsigned long long)c->num, before,
                  (unsigned long long)bytes);
}

static void conn_event_cb(struct bufferevent *bev, short what, void *arg)
{
    spd_conn_t *c = arg;
    (void)bev;
    if (what & BEV_EVENT_ERROR)
        log_debug("conn=%llu socket error: %s", (unsigned long long)c->num,
                  strerror(EVUTIL_SOCKET_ERROR()));
    else if (what & BEV_EVENT_TIMEOUT)
        log_warnx("conn=%llu pid=%ld takes no bytes for %d s; dropped",
                  (unsigned long long)c->num, (long)c->pid, SPD_WRITE_TIMEOUT_SECS);
    if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR | BEV_EVENT_TIMEOUT)) {
        conn_apply_rest(c);
        conn_free(c);
    }
}

static bool peer_allowed(const spd_config_t *cfg, uid_t uid, gid_t gid)
{
    if (uid == geteuid() || uid == 0)
        return true;
    for (unsigned i = 0; i < cfg->nallow_uids; i++)
        if (cfg->allow_uids[i] == uid)
            return true;
    return cfg->have_group && gid == cfg->group;
}

static void accept_cb(struct evconnlistener *l, evutil_socket_t fd,
                      struct sockaddr *sa, int socklen, void *arg)
{
    spd_daemon_t *d = arg;
    struct ucred cred;
    socklen_t clen = sizeof cred;
    (void)l, (void)sa, (void)socklen;

    if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &clen) != 0) {
        log_warn("SO_PEERCRED");
        close(fd);
        return;
    }
    spd_conn_t *c = calloc(1, sizeof *c);
    if (c == NULL)
        log_fatal("out of memory accepting a connection");
    c->d = d;
    c->fd = fd;
    c->num = ++d->nconns_total;
    c->pid = cred.pid;
    c->pidfd = -1;
    c->uid = cred.uid;
    c->gid = cred.gid;
    c->allowed = peer_allowed(&d->cfg, cred.uid, cred.gid);
    c->bev = bufferevent_socket_new(d->base, fd, BEV_OPT_CLOSE_ON_FREE);
    c->hello_ev = event_new(d->base, fd, EV_WRITE, hello_retry_cb, c);
    if (c->bev == NULL || c->hello_ev == NULL)
        log_fatalx("cannot set up a connection's events");
    struct timeval wt = { SPD_WRITE_TIMEOUT_SECS, 0 };
    bufferevent_set_timeouts(c->bev, NULL, &wt);
    /* stop reading past two full frames; process_input drains it */
    bufferevent_setwatermark(c->bev, EV_READ, 0, 2 * (SPAND_FRAME_HDR + SPAND_MAX_FRAME));
    bufferevent_setcb(c->bev, conn_read_cb, conn_write_cb, conn_event_cb, c);
    /* EV_WRITE (on by default) only for what conn_flush leaves */
    bufferevent_disable(c->bev, EV_WRITE);
    bufferevent_enable(c->bev, EV_READ);
    c->next = d->conns;
    if (d->conns)
        d->conns->prev = c;
    d->conns = c;
    if (!c->allowed)
        log_warnx("conn=%llu pid=%ld uid=%lu refused: not our uid (%lu) nor allowed",
                  (unsigned long long)c->num, (long)c->pid, (unsigned long)c->uid,
                  (unsigned long)geteuid());
    else
        log_debug("conn=%llu pid=%ld uid=%lu accepted", (unsigned long long)c->num,
                  (long)c->pid, (unsigned long)c->uid);
}

/* accept() failed (EMFILE...): log, and pause the listener for a second
 * instead of spinning on a readable socket we cannot accept from. */
static void accept_error_cb(struct evconnlistener *l, void *arg)
{
    spd_daemon_t *d = arg;
    struct timeval tv = { 1, 0 };
    log_warnx("accept: %s; not accepting for 1 s",
              evutil_socket_error_to_string(EVUTIL_SOCKET_ERROR()));
    evconnlistener_disable(l);
    event_add(d->accept_pause, &tv);
}

static void accept_resume_cb(evutil_socket_t fd, short what, void *arg)
{
    spd_daemon_t *d = arg;
    (void)fd, (void)what;
    evconnlistener_enable(d->listener);
}

/* ---- the socket file ---- */

static int fill_addr(struct sockaddr_un *sun, const char *path)
{
    memset(sun, 0, sizeof *sun);
    sun->sun_family = AF_UNIX;
    if (strlen(path) >= sizeof sun->sun_path)
        return -1;
    strcpy(sun->sun_path, path);
    return 0;
}

/* Is a daemon answering at `path`?  1 yes, 0 no (nothing there, or a stale
 * socket file, which is removed), -1 there is something we must not touch. */
static int probe_socket(const char *path)
{
    struct sockaddr_un sun;
    struct stat st;
    if (lstat(path, &st) != 0)
        return errno == ENOENT ? 0 : -1;
    if (!S_ISSOCK(st.st_mode)) {
        fprintf(stderr, "spand: %s exists and is not a socket; not touching it\n", path);
        return -1;
    }
    fill_addr(&sun, path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    int rc = connect(fd, (struct sockaddr *)&sun, sizeof sun);
    int saved = errno;
    close(fd);
    if (rc == 0)
        return 1;
    if (saved != ECONNREFUSED) {
        fprintf(stderr, "spand: cannot check %s: %s\n", path, strerror(saved));
        return -1;
    }
    log_info("socket=%s stale (no daemon answers); replacing it", path);
    unlink(path);
    return 0;
}

/* mkdir the socket's directory (mode 0700) when it is missing.  The
 * default one, /tmp/spand-$UID, has a name anyone can guess: when it exists
 * already it must be ours and closed to others. */
static int make_socket_dir(const char *path)
{
    char dir[SPAND_PATH_MAX], def[SPAND_PATH_MAX];
    struct stat st;
    snprintf(dir, sizeof dir, "%s", path);
    char *slash = strrchr(dir, '/');
    if (slash == NULL || slash == dir)
        return 0;
    *slash = '\0';
    if (mkdir(dir, 0700) != 0 && errno != EEXIST) {
        fprintf(stderr, "spand: cannot create the socket directory %s: %s\n",
                dir, strerror(errno));
        return -1;
    }
    if (lstat(dir, &st) != 0 || !S_ISDIR(st.st_mode)) {
        fprintf(stderr, "spand: %s is not a directory\n", dir);
        return -1;
    }
    snprintf(def, sizeof def, "/tmp/spand-%u", (unsigned)getuid());
    if (strcmp(dir, def) == 0 && (st.st_uid != geteuid() || (st.st_mode & 077))) {
        fprintf(stderr, "spand: %s belongs to uid %u or is open to others (mode %03o); "
                "refusing to put the socket there\n", dir, (unsigned)st.st_uid,
                (unsigned)(st.st_mode & 0777));
        return -1;
    }
    return 0;
}

int spd_rpc_bind(spd_daemon_t *d)
{
    const spd_config_t *cfg = &d->cfg;
    struct sockaddr_un sun;
    int rc;

    if (fill_addr(&sun, cfg->socket) != 0) {
        fprintf(stderr, "spand: socket path %s is too long\n", cfg->socket);
        return -1;
    }
    if (make_socket_dir(cfg->socket) != 0)
        return -1;
    if ((rc = probe_socket(cfg->socket)) != 0) {
        if (rc > 0)
            fprintf(stderr, "spand: another spand is already running on %s; "
                    "not starting a second one\n", cfg->socket);
        return -1;
    }
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0) {
        perror("spand: socket");
        return -1;
    }
    mode_t old = umask(0177);   /* no window where others may connect */
    rc = bind(fd, (struct sockaddr *)&sun, sizeof sun);
    umask(old);
    if (rc != 0) {
        fprintf(stderr, "spand: cannot bind %s: %s\n", cfg->socket, strerror(errno));
        close(fd);
        return -1;
    }
    if (cfg->have_group && (chown(cfg->socket, (uid_t)-1, cfg->group) != 0 ||
                            chmod(cfg->socket, 0660) != 0)) {
        fprintf(stderr, "spand: cannot give %s to group %s: %s\n", cfg->socket,
                cfg->group_name, strerror(errno));
        goto fail;
    }
    if (listen(fd, 128) != 0) {
        fprintf(stderr, "spand: cannot listen on %s: %s\n", cfg->socket, strerror(errno));
        goto fail;
    }
    d->listen_fd = fd;
    return 0;
fail:
    close(fd);
    unlink(cfg->socket);
    return -1;
}

int spd_rpc_start(spd_daemon_t *d)
{
    d->accept_pause = evtimer_new(d->base, accept_resume_cb, d);
    d->keep_check = event_new(d->base, -1, EV_PERSIST, keep_check_cb, d);
    d->listener = evconnlistener_new(d->base, accept_cb, d,
                                     LEV_OPT_CLOSE_ON_FREE | LEV_OPT_CLOSE_ON_EXEC,
                                     0, d->listen_fd);
    if (d->listener == NULL || d->accept_pause == NULL || d->keep_check == NULL) {
        log_warnx("cannot create the listener on %s", d->cfg.socket);
        return -1;
    }
    evconnlistener_set_error_cb(d->listener, accept_error_cb);
    return 0;
}

void spd_rpc_stop(spd_daemon_t *d)
{
    d->stopping = true;
    while (d->conns)
        conn_free(d->conns);
    if (d->listener) {
        evconnlistener_free(d->listener);
        d->listener = NULL;
        unlink(d->cfg.socket);
    } else if (d->listen_fd >= 0) {
        close(d->listen_fd);
        unlink(d->cfg.socket);
    }
    d->listen_fd = -1;
    if (d->accept_pause) {
        event_free(d->accept_pause);
        d->accept_pause = NULL;
    }
    if (d->keep_check) {
        event_free(d->keep_check);
        d->keep_check = NULL;
    }
}

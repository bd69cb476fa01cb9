/* See shm/layout.h for the overview; doc/design.md section 3 for the client.
 *
 * The blocking RPC client: one Unix stream socket per process, one request
 * at a time under spci_proc.lock (RPCs are slow paths only).  Framing is
 * proto/spand.proto's: a 4-byte big-endian length, then one packed Request;
 * the answer is one Response with the request's id.  The Hello answer
 * carries the arena's fd by SCM_RIGHTS.  Every function here expects the
 * caller to hold spci_proc.lock and returns 0 or a negative errno; an error
 * answer from the daemon is returned as -error, with its message logged.
 */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "client/internal.h"
#include "proto/spand.pb-c.h"
#include "proto/wire.h"

/* ---- the socket path ---- */

int spci_socket_path(const char *path, char *out, size_t len)
{
    if (path == NULL || *path == '\0')
        return spand_default_socket(out, len) == 0 ? 0 : -ENAMETOOLONG;
    size_t n = strlen(path);
    if (n >= len || n >= SPAND_PATH_MAX)
        return -ENAMETOOLONG;
    memcpy(out, path, n + 1);
    return 0;
}

/* ---- raw I/O ---- */

static void pending_forget(void);
static int pending_drain(uint32_t keep);

static int write_all(int fd, const uint8_t *buf, size_t len)
{
    while (len > 0) {
        ssize_t n = send(fd, buf, len, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        buf += n;
        len -= (size_t)n;
    }
    return 0;
}

/* One recvmsg of at most cap bytes into buf: the bytes read (> 0), or
 * -errno (-ECONNRESET at end of stream).  File descriptors that come along
 * go to *fd_out when it is not NULL and still -1; any other one is closed. */
static ssize_t recv_some(int fd, uint8_t *buf, size_t cap, int *fd_out)
{
    union {
        char buf[CMSG_SPACE(4 * sizeof(int))];
        struct cmsghdr align;
    } cm;
    struct iovec iov = { .iov_base = buf, .iov_len = cap };
    struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1,
                         .msg_control = cm.buf, .msg_controllen = sizeof cm.buf };
    ssize_t n;
    while ((n = recvmsg(fd, &mh, MSG_CMSG_CLOEXEC)) < 0)
        if (errno != EINTR)
            return -errno;
    for (struct cmsghdr *h = CMSG_FIRSTHDR(&mh); h != NULL; h = CMSG_NXTHDR(&mh, h)) {
        if (h->cmsg_level != SOL_SOCKET || h->cmsg_type != SCM_RIGHTS)
            continue;
        size_t nfd = (h->cmsg_len - CMSG_LEN(0)) / sizeof(int);
        for (size_t k = 0; k < nfd; k++) {
            int got;
            memcpy(&got, CMSG_DATA(h) + k * sizeof(int), sizeof got);
            if (fd_out != NULL && *fd_out < 0)
                *fd_out = got;
            else
                close(got);
        }
    }
    return n == 0 ? -ECONNRESET : n;
}

/* Read exactly len bytes (fds as in recv_some). */
static int read_all(int fd, uint8_t *buf, size_t len, int *fd_out)
{
    while (len > 0) {
        ssize_t n = recv_some(fd, buf, len, fd_out);
        if (n < 0)
            return (int)n;
        buf += n;
        len -= (size_t)n;
    }
    return 0;
}

/* What the last recvmsg brought beyond the frame being read: the daemon
 * writes each answer with one writev, so one recvmsg into this buffer
 * usually takes a whole answer (and any FreeLarge answers before it)
 * instead of one for the length and one for the body. */
static struct {
    uint8_t buf[4096];
    uint32_t off, len;
} rbuf;

/* Read exactly len bytes of the stream: buffered bytes first, then one
 * recvmsg at a time into rbuf (or straight into buf for what does not fit). */
static int read_stream(int fd, uint8_t *buf, size_t len, int *fd_out)
{
    while (len > 0) {
        if (rbuf.off < rbuf.len) {
            size_t k = rbuf.len - rbuf.off < len ? rbuf.len - rbuf.off : len;
            memcpy(buf, rbuf.buf + rbuf.off, k);
            rbuf.off += (uint32_t)k;
            buf += k;
            len -= k;
            continue;
        }
        if (len >= sizeof rbuf.buf)
            return read_all(fd, buf, len, fd_out);
        ssize_t n = recv_some(fd, rbuf.buf, sizeof rbuf.buf, fd_out);
        if (n < 0)
            return (int)n;
        rbuf.off = 0;
        rbuf.len = (uint32_t)n;
    }
    return 0;
}

void spci_rpc_close_locked(void)
{
    rbuf.off = rbuf.len = 0;
    if (spci_proc.sock >= 0)
        close(spci_proc.sock);
    spci_proc.sock = -1;
    pending_forget();
}

void spci_rpc_goodbye_locked(void)
{
    int fd = spci_proc.sock;
    if (fd < 0 || spci_proc.pid != getpid()) {
        spci_rpc_close_locked();
        return;
    }
    /* the answers of pending FreeLarge requests first: a refused one aborts */
    if (pending_drain(0) != 0)
        return;
    /* end our side, then wait (at most 2 s) for the daemon to close its
     * side, which it does once it has ended the session */
    shutdown(fd, SHUT_WR);
    for (int waited = 0; waited < 2000;) {
        struct pollfd pfd = { .fd = fd, .events = POLLIN };
        int n = poll(&pfd, 1, 100);
        if (n < 0 && errno != EINTR)
            break;
        if (n <= 0) {
            waited += 100;
            continue;
        }
        uint8_t junk[256];
        ssize_t r = recv(fd, junk, sizeof junk, MSG_DONTWAIT);
        if (r == 0 || (r < 0 && errno != EINTR && errno != EAGAIN))
            break;
    }
    spci_rpc_close_locked();
}

/* ---- FreeLarge answers still on their way ----
 *
 * FreeLarge does not wait for its answer: the request is written and the
 * free returns (a round trip saved per large free).  The daemon answers in
 * request order, so the next call on the connection reads those answers
 * first, and so does spc_detach.  An answer that is an error (the daemon
 * refused the free: the object is not a large object any more, a double
 * free through another process or an object freed twice before either
 * answer came) aborts the process with the bogus-free message, naming the
 * pointer; the daemon has already refused the free and logged it.  A free of
 * an object whose FreeLarge is still pending is caught at once, here.  At
 * most SPCI_PENDING_MAX answers wait, so that the daemon's answers always
 * fit in the socket buffer and neither side ever blocks on the other. */

#define SPCI_PENDING_MAX 128u

static struct {
    uint64_t off[SPCI_PENDING_MAX];   /* ring of the offsets, oldest first */
    uint64_t id[SPCI_PENDING_MAX];    /* their request ids */
    uint32_t head, n;
} pending;

static void pending_forget(void)
{
    pending.head = pending.n = 0;
}

static int write_frame(Spand__Request *req)
{
    req->id = ++spci_proc.next_id;
    size_t len = protobuf_c_message_get_packed_size(&req->base);
    if (len > SPAND_MAX_FRAME)
        return -E2BIG;
    uint8_t small[512];
    uint8_t *buf = len + 4 <= sizeof small ? small : malloc(len + 4);
    if (buf == NULL)
        return -ENOMEM;
    spand_frame_put_len(buf, (uint32_t)len);
    protobuf_c_message_pack(&req->base, buf + 4);
    int rc = write_all(spci_proc.sock, buf, len + 4);
    if (buf != small)
        free(buf);
    return rc;
}

/* Read one answer, which must carry `id`.  0 and *out, or a negative errno
 * for a broken connection (-EPROTO for garbage). */
static int read_frame(uint64_t id, Spand__Response **out, int *fd_out)
{
    uint8_t hdr[4];
    int rc;
    if ((rc = read_stream(spci_proc.sock, hdr, 4, fd_out)) != 0)
        return rc;
    uint32_t n = spand_frame_get_len(hdr);
    if (n > SPAND_MAX_FRAME) {
        spci_log("the daemon sent a frame of %u bytes (limit %u)", n, (unsigned)SPAND_MAX_FRAME);
        return -EPROTO;
    }
    uint8_t small[512];
    uint8_t *body = n <= sizeof small ? small : malloc(n);
    if (body == NULL)
        return -ENOMEM;
    if ((rc = read_stream(spci_proc.sock, body, n, fd_out)) != 0) {
        if (body != small)
            free(body);
        return rc;
    }
    Spand__Response *resp = spand__response__unpack(NULL, n, body);
    if (body != small)
        free(body);
    if (resp == NULL || resp->id != id) {
        spci_log("the daemon sent an answer that does not decode or has the wrong id");
        if (resp)
            spand__response__free_unpacked(resp, NULL);
        return -EPROTO;
    }
    *out = resp;
    return 0;
}

static void broken(int rc)
{
    spci_log("the connection to spand broke: %s", strerror(-rc));
    spci_rpc_close_locked();
    spci_session_broken_locked();
}

/* Read the answers of the pending FreeLarge requests, down to `keep`. */
static int pending_drain(uint32_t keep)
{
    while (pending.n > keep) {
        uint64_t off = pending.off[pending.head], id = pending.id[pending.head];
        Spand__Response *resp = NULL;
        int rc = read_frame(id, &resp, NULL);
        if (rc != 0) {
            broken(rc);
            return rc;
        }
        pending.head = (pending.head + 1) % SPCI_PENDING_MAX;
        pending.n--;
        if (resp->error != 0) {
            char why[200];
            snprintf(why, sizeof why, "double free of a large object (spand refused "
                     "the free: %s)", resp->message ? resp->message : "");
            spci_bogus_free("spc_free", spci_map.base ? spci_map.base + off : NULL, why);
        }
        spand__response__free_unpacked(resp, NULL);
    }
    return 0;
}

/* Send req, wait for its Response.  *out must be freed with
 * spand__response__free_unpacked. */
static int call_locked(Spand__Request *req, Spand__Response **out, int *fd_out)
{
    if (spci_proc.sock < 0 || spci_proc.pid != getpid())
        return -ENOTCONN;
    int rc = write_frame(req);
    if (rc == -E2BIG || rc == -ENOMEM)
        return rc;
    if (rc == 0)
        rc = pending_drain(0);
    if (rc != 0) {
        if (spci_proc.sock >= 0)
            broken(rc);
        return rc;
    }
    Spand__Response *resp = NULL;
    if ((rc = read_frame(req->id, &resp, fd_out)) != 0) {
        broken(rc);
        return rc;
    }
    if (resp->error != 0) {
        rc = -(int)resp->error;
        spci_log("the daemon refused the request: %s (%s)",
                 resp->message && *resp->message ? resp->message : "no reason given",
                 strerror((int)resp->error));
        spand__response__free_unpacked(resp, NULL);
        return rc;
    }
    *out = resp;
    return 0;
}

/* ---- the requests ---- */

int spci_rpc_hello_locked(const char *path, int *fd_out, uint64_t *base, uint64_t *size)
{
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    int rc = spci_socket_path(path, sa.sun_path, sizeof sa.sun_path);
    if (rc != 0) {
        spci_log("socket path too long");
        return rc;
    }
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
        rc = -errno;
        spci_log("cannot connect to spand at %s: %s", sa.sun_path, strerror(errno));
        close(fd);
        return rc;
    }
    spci_rpc_close_locked();
    spci_proc.sock = fd;
    spci_proc.pid = getpid();

    char name[64];
    snprintf(name, sizeof name, "%s[%ld]", program_invocation_short_name, (long)getpid());
    Spand__Hello hello = SPAND__HELLO__INIT;
    hello.protocol_version = SPAND_PROTOCOL_VERSION;
    hello.client_name = name;
    Spand__Request req = SPAND__REQUEST__INIT;
    req.body_case = SPAND__REQUEST__BODY_HELLO;
    req.hello = &hello;
    Spand__Response *resp = NULL;
    *fd_out = -1;
    if ((rc = call_locked(&req, &resp, fd_out)) != 0)
        goto fail;
    const Spand__HelloReply *r = resp->body_case == SPAND__RESPONSE__BODY_HELLO ? resp->hello : NULL;
    if (r == NULL || r->protocol_version != SPAND_PROTOCOL_VERSION ||
        r->layout_version != SHM_LAYOUT_VERSION || r->page_size != SHM_PAGE_SIZE) {
        spci_log("spand speaks protocol %u, layout %u, page %u; this library %u, %u, %u",
                 r ? r->protocol_version : 0, r ? r->layout_version : 0,
                 r ? r->page_size : 0, SPAND_PROTOCOL_VERSION, SHM_LAYOUT_VERSION,
                 SHM_PAGE_SIZE);
        rc = -EPROTO;
        goto fail;
    }
    if (*fd_out < 0) {
        spci_log("spand's Hello answer came without the arena's file descriptor");
        rc = -EPROTO;
        goto fail;
    }
    *base = r->base_address;
    *size = r->arena_size;
    spci_proc.session = r->session_id;
    spand__response__free_unpacked(resp, NULL);
    return 0;
fail:
    if (resp)
        spand__response__free_unpacked(resp, NULL);
    if (*fd_out >= 0)
        close(*fd_out);
    *fd_out = -1;
    spci_rpc_close_locked();
    return rc;
}

int spci_rpc_refill_locked(unsigned cls, uint32_t nspans, const shm_spanid_t *release,
                           uint32_t nrelease, shm_spanid_t *spans, uint32_t max,
                           uint32_t *nspans_out)
{
    Spand__Refill body = SPAND__REFILL__INIT;
    body.sizeclass = cls;
    body.nspans = nspans;
    body.n_release = nrelease;
    body.release = (uint32_t *)release;
    Spand__Request req = SPAND__REQUEST__INIT;
    req.body_case = SPAND__REQUEST__BODY_REFILL;
    req.refill = &body;
    Spand__Response *resp = NULL;
    int rc = call_locked(&req, &resp, NULL);
    if (rc != 0)
        return rc;
    if (resp->body_case != SPAND__RESPONSE__BODY_REFILL || resp->refill->n_spans == 0) {
        spand__response__free_unpacked(resp, NULL);
        return -EPROTO;
    }
    uint32_t n = 0;
    for (size_t j = 0; j < resp->refill->n_spans && n < max; j++)
        spans[n++] = resp->refill->spans[j];
    *nspans_out = n;
    if (resp->refill->n_spans > max) {      /* more than we can take: back at once */
        spci_log("Refill brought %zu spans, more than the %u asked for; the rest "
                 "goes back", resp->refill->n_spans, nspans);
        spci_rpc_release_locked(resp->refill->spans + max,
                                (uint32_t)(resp->refill->n_spans - max));
    }
    spand__response__free_unpacked(resp, NULL);
    return 0;
}

int spci_rpc_release_locked(const shm_spanid_t *spans, uint32_t n)
{
    if (n == 0)
        return 0;
    Spand__Release body = SPAND__RELEASE__INIT;
    body.n_spans = n;
    body.spans = (uint32_t *)spans;
    Spand__Request req = SPAND__REQUEST__INIT;
    req.body_case = SPAND__REQUEST__BODY_RELEASE;
    req.release = &body;
    Spand__Response *resp = NULL;
    int rc = call_locked(&req, &resp, NULL);
    if (rc == 0)
        spand__response__free_unpacked(resp, NULL);
    return rc;
}

int spci_rpc_alloc_large_locked(uint64_t size, uint64_t align, uint32_t extra, uint64_t *off,
                                uint64_t *extra_off, uint32_t *n_extra)
{
    Spand__AllocLarge body = SPAND__ALLOC_LARGE__INIT;
    body.size = size;
    body.align = align;
    body.extra = extra;
    *n_extra = 0;
    Spand__Request req = SPAND__REQUEST__INIT;
    req.body_case = SPAND__REQUEST__BODY_ALLOC_LARGE;
    req.alloc_large = &body;
    Spand__Response *resp = NULL;
    int rc = call_locked(&req, &resp, NULL);
    if (rc != 0)
        return rc;
    if (resp->body_case != SPAND__RESPONSE__BODY_ALLOC_LARGE) {
        rc = -EPROTO;
    } else {
        const Spand__AllocLargeReply *r = resp->alloc_large;
        *off = r->offset;
        if (r->n_extra > extra)         /* never more than asked for */
            spci_log("AllocLarge answered %zu extra spans for %u asked; kept %u, the rest "
                     "stay cached to this session until it ends", r->n_extra, extra, extra);
        for (size_t k = 0; k < r->n_extra && k < extra; k++)
            extra_off[(*n_extra)++] = r->extra[k];
    }
    spand__response__free_unpacked(resp, NULL);
    return rc;
}

/* Pipelined: see "FreeLarge answers still on their way" above.  0 once the
 * request is written; -EAGAIN when an earlier FreeLarge of `off` was still
 * pending: its answer has been read now, so the caller looks at the span
 * again (freed twice, or the pages went to a new large object since);
 * -errno when the connection broke. */
int spci_rpc_free_large_locked(uint64_t off)
{
    if (spci_proc.sock < 0 || spci_proc.pid != getpid())
        return -ENOTCONN;
    int rc;
    for (uint32_t k = pending.n; k-- > 0;)
        if (pending.off[(pending.head + k) % SPCI_PENDING_MAX] == off)
            return (rc = pending_drain(pending.n - k - 1)) != 0 ? rc : -EAGAIN;
    rc = pending_drain(SPCI_PENDING_MAX - 1);
    if (rc != 0)
        return rc;
    Spand__FreeLarge body = SPAND__FREE_LARGE__INIT;
    body.offset = off;
    Spand__Request req = SPAND__REQUEST__INIT;
    req.body_case = SPAND__REQUEST__BODY_FREE_LARGE;
    req.free_large = &body;
    if ((rc = write_frame(&req)) != 0) {
        if (rc != -E2BIG && rc != -ENOMEM)
            broken(rc);
        return rc;
    }
    uint32_t tail = (pending.head + pending.n) % SPCI_PENDING_MAX;
    pending.off[tail] = off;
    pending.id[tail] = req.id;
    pending.n++;
    return 0;
}

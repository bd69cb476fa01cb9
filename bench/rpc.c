/* See bench/rpc.h.  Framing as in proto/spand.proto: a 4-byte big-endian
 * length, then one packed Request or Response. */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "bench/rpc.h"
#include "proto/wire.h"

int brpc_write_all(int fd, const void *buf, size_t len)
{
    const char *p = buf;
    while (len) {
        ssize_t n = write(fd, p, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return -1;
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

int brpc_read_all(int fd, void *buf, size_t len)
{
    char *p = buf;
    while (len) {
        ssize_t n = read(fd, p, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return -1;
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

/* Read the 4-byte header with recvmsg, keeping a descriptor passed along
 * with it (the Hello answer's arena fd). */
static int read_header(brpc_t *c, uint8_t hdr[4])
{
    size_t got = 0;
    while (got < 4) {
        struct iovec iov = {hdr + got, 4 - got};
        union {
            struct cmsghdr h;
            char buf[CMSG_SPACE(sizeof(int))];
        } cbuf;
        struct msghdr msg = {0};
        msg.msg_iov = &iov;
        msg.msg_iovlen = 1;
        msg.msg_control = cbuf.buf;
        msg.msg_controllen = sizeof cbuf.buf;
        ssize_t n = recvmsg(c->fd, &msg, MSG_CMSG_CLOEXEC);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return -1;
        for (struct cmsghdr *cm = CMSG_FIRSTHDR(&msg); cm; cm = CMSG_NXTHDR(&msg, cm))
            if (cm->cmsg_level == SOL_SOCKET && cm->cmsg_type == SCM_RIGHTS) {
                int fd;
                memcpy(&fd, CMSG_DATA(cm), sizeof fd);
                if (c->arena_fd >= 0)
                    close(c->arena_fd);
                c->arena_fd = fd;
            }
        got += (size_t)n;
    }
    return 0;
}

Spand__Response *brpc_call(brpc_t *c, Spand__Request *req)
{
    req->id = ++c->next_id;
    size_t len = spand__request__get_packed_size(req);
    uint8_t stackbuf[512];
    uint8_t *buf = len + 4 <= sizeof stackbuf ? stackbuf : malloc(len + 4);
    if (!buf)
        return NULL;
    spand_frame_put_len(buf, (uint32_t)len);
    spand__request__pack(req, buf + 4);
    int rc = brpc_write_all(c->fd, buf, len + 4);
    if (buf != stackbuf)
        free(buf);
    if (rc != 0)
        return NULL;
    c->req_bytes = len + 4;

    uint8_t hdr[4];
    if (read_header(c, hdr) != 0)
        return NULL;
    uint32_t rlen = spand_frame_get_len(hdr);
    if (rlen > SPAND_MAX_FRAME)
        return NULL;
    uint8_t *rbuf = rlen <= sizeof stackbuf ? stackbuf : malloc(rlen);
    if (!rbuf)
        return NULL;
    Spand__Response *r = NULL;
    if (brpc_read_all(c->fd, rbuf, rlen) == 0)
        r = spand__response__unpack(NULL, rlen, rbuf);
    if (rbuf != stackbuf)
        free(rbuf);
    c->resp_bytes = rlen + 4;
    return r;
}

void brpc_free(Spand__Response *r)
{
    if (r)
        spand__response__free_unpacked(r, NULL);
}

int brpc_connect(brpc_t *c, const char *path, bool hello)
{
    c->fd = -1;
    c->arena_fd = -1;
    c->next_id = 0;
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    if (strlen(path) >= sizeof sa.sun_path)
        return -ENAMETOOLONG;
    strcpy(sa.sun_path, path);
    c->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (c->fd < 0)
        return -errno;
    if (connect(c->fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
        int e = errno;
        close(c->fd);
        c->fd = -1;
        return -e;
    }
    if (!hello)
        return 0;
    Spand__Request req = SPAND__REQUEST__INIT;
    Spand__Hello h = SPAND__HELLO__INIT;
    h.protocol_version = SPAND_PROTOCOL_VERSION;
    h.client_name = "spanbench";
    req.body_case = SPAND__REQUEST__BODY_HELLO;
    req.hello = &h;
    Spand__Response *r = brpc_call(c, &req);
    int rc = 0;
    if (!r || r->error || r->body_case != SPAND__RESPONSE__BODY_HELLO) {
        fprintf(stderr, "spanbench: Hello to %s failed: %s\n", path,
                r ? r->message : "no answer");
        rc = -EPROTO;
    }
    brpc_free(r);
    if (rc)
        brpc_close(c);
    return rc;
}

void brpc_close(brpc_t *c)
{
    if (c->fd >= 0)
        close(c->fd);
    if (c->arena_fd >= 0)
        close(c->arena_fd);
    c->fd = c->arena_fd = -1;
}

Spand__Response *brpc_stats(brpc_t *c)
{
    Spand__Request req = SPAND__REQUEST__INIT;
    Spand__StatsRequest s = SPAND__STATS_REQUEST__INIT;
    req.body_case = SPAND__REQUEST__BODY_STATS;
    req.stats = &s;
    Spand__Response *r = brpc_call(c, &req);
    if (!r || r->error || r->body_case != SPAND__RESPONSE__BODY_STATS) {
        fprintf(stderr, "spanbench: Stats failed: %s\n", r ? r->message : "no answer");
        brpc_free(r);
        return NULL;
    }
    return r;
}

int64_t brpc_counter(const Spand__StatsReply *s, const char *name)
{
    for (size_t i = 0; i < s->n_counters; i++)
        if (strcmp(s->counters[i]->name, name) == 0)
            return (int64_t)s->counters[i]->value;
    return -1;
}

/* See shm/layout.h for the overview.  A blocking client; see tools/ctlclient.h. */
#include "config.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

#include "tools/ctlclient.h"

int ctl_connect(ctl_client_t *c, const char *path, unsigned timeout_ms)
{
    char def[SPAND_PATH_MAX];
    struct sockaddr_un sun = { .sun_family = AF_UNIX };
    c->fd = -1;
    c->arena_fd = -1;
    c->next_id = 0;
    if (path == NULL) {
        if (spand_default_socket(def, sizeof def) != 0)
            return -ENAMETOOLONG;
        path = def;
    }
    if (strlen(path) >= sizeof sun.sun_path)
        return -ENAMETOOLONG;
    strcpy(sun.sun_path, path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    if (connect(fd, (struct sockaddr *)&sun, sizeof sun) != 0) {
        int rc = -errno;
        close(fd);
        return rc;
    }
    if (timeout_ms == 0)
        timeout_ms = 10000;
    struct timeval tv = { timeout_ms / 1000, (timeout_ms % 1000) * 1000 };
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    c->fd = fd;
    return 0;
}

void ctl_close(ctl_client_t *c)
{
    if (c->fd >= 0)
        close(c->fd);
    if (c->arena_fd >= 0)
        close(c->arena_fd);
    c->fd = c->arena_fd = -1;
}

int ctl_send_raw(ctl_client_t *c, const void *bytes, size_t len)
{
    const uint8_t *p = bytes;
    while (len > 0) {
        ssize_t n = send(c->fd, p, len, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return errno == EAGAIN ? -ETIMEDOUT : -errno;
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

int ctl_send(ctl_client_t *c, Spand__Request *req)
{
    if (req->id == 0)
        req->id = ++c->next_id;
    size_t n = spand__request__get_packed_size(req);
    if (n > SPAND_MAX_FRAME)
        return -EMSGSIZE;
    uint8_t *buf = malloc(SPAND_FRAME_HDR + n);
    if (buf == NULL)
        return -ENOMEM;
    spand_frame_put_len(buf, (uint32_t)n);
    spand__request__pack(req, buf + SPAND_FRAME_HDR);
    int rc = ctl_send_raw(c, buf, SPAND_FRAME_HDR + n);
    free(buf);
    return rc;
}

/* Read exactly len bytes with recvmsg, keeping an fd that comes along. */
static int read_full(ctl_client_t *c, uint8_t *p, size_t len)
{
    while (len > 0) {
        union {
            struct cmsghdr hdr;
            char buf[CMSG_SPACE(sizeof(int))];
        } ctl;
        struct iovec iov = { .iov_base = p, .iov_len = len };
        struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1,
                              .msg_control = ctl.buf, .msg_controllen = sizeof ctl.buf };
        ssize_t n = recvmsg(c->fd, &msg, MSG_CMSG_CLOEXEC);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return (errno == EAGAIN || errno == EWOULDBLOCK) ? -ETIMEDOUT : -errno;
        for (struct cmsghdr *cm = CMSG_FIRSTHDR(&msg); cm; cm = CMSG_NXTHDR(&msg, cm)) {
            if (cm->cmsg_level == SOL_SOCKET && cm->cmsg_type == SCM_RIGHTS) {
                int fd;
                memcpy(&fd, CMSG_DATA(cm), sizeof fd);
                if (c->arena_fd < 0)
                    c->arena_fd = fd;
                else
                    close(fd);
            }
        }
        if (n == 0)
            return -EPIPE;
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

int ctl_recv(ctl_client_t *c, Spand__Response **resp)
{
    uint8_t hdr[SPAND_FRAME_HDR];
    int rc = read_full(c, hdr, sizeof hdr);
    if (rc != 0)
        return rc;
    uint32_t n = spand_frame_get_len(hdr);
    if (n > SPAND_MAX_FRAME)
        return -EMSGSIZE;
    uint8_t *buf = malloc(n ? n : 1);
    if (buf == NULL)
        return -ENOMEM;
    if ((rc = read_full(c, buf, n)) == 0) {
        *resp = spand__response__unpack(NULL, n, buf);
        if (*resp == NULL)
            rc = -EPROTO;
    }
    free(buf);
    return rc;
}

int ctl_call(ctl_client_t *c, Spand__Request *req, Spand__Response **resp)
{
    int rc = ctl_send(c, req);
    if (rc == 0)
        rc = ctl_recv(c, resp);
    if (rc == 0 && (*resp)->id != req->id) {
        spand__response__free_unpacked(*resp, NULL);
        *resp = NULL;
        rc = -EPROTO;
    }
    return rc;
}

/* See shm/layout.h for the overview.
 *
 * A small blocking client of spand's socket, for spanctl and the tests:
 * connect, send a Request, read its Response (with recvmsg, so the arena
 * fd that comes with a HelloReply is kept, as proto/wire.h describes).
 * Every function returns 0 or a negative errno; a read that waits longer
 * than the timeout returns -ETIMEDOUT.  Not thread-safe; one per thread.
 */
#ifndef CTL_CLIENT_H
#define CTL_CLIENT_H

#include <stddef.h>
#include <stdint.h>

#include "proto/spand.pb-c.h"
#include "proto/wire.h"

typedef struct ctl_client_s {
    int fd;             /* the socket, -1 when closed */
    uint64_t next_id;   /* ids given to requests sent with ctl_send */
    int arena_fd;       /* fd received by SCM_RIGHTS, -1 until Hello */
} ctl_client_t;

/* Connect to the daemon at `path` (NULL: the default path) with a receive
 * timeout of `timeout_ms` (0: 10 s). */
int ctl_connect(ctl_client_t *c, const char *path, unsigned timeout_ms);
void ctl_close(ctl_client_t *c);

/* Send raw bytes as they are (tests: bad frames). */
int ctl_send_raw(ctl_client_t *c, const void *bytes, size_t len);

/* Give req a fresh id (unless it has one) and send it as one frame. */
int ctl_send(ctl_client_t *c, Spand__Request *req);

/* Read one frame: *resp (free with spand__response__free_unpacked), or
 * -EPIPE at end of stream, -EMSGSIZE over the limit, -EPROTO undecodable. */
int ctl_recv(ctl_client_t *c, Spand__Response **resp);

/* ctl_send then ctl_recv; -EPROTO when the answer's id is not the request's. */
int ctl_call(ctl_client_t *c, Spand__Request *req, Spand__Response **resp);

#endif /* CTL_CLIENT_H */

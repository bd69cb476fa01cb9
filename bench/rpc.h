/* spanbench's use of the blocking protocol client that spanctl and the
 * tests share (tools/ctlclient.h): read the daemon's Stats and time single
 * round trips (Refill, AllocLarge, Ping) apart from libspanclient. */
#ifndef BENCH_RPC_H
#define BENCH_RPC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "proto/spand.pb-c.h"
#include "tools/ctlclient.h"

typedef struct brpc_s {
    ctl_client_t ctl;       /* the connection; ctl.arena_fd after Hello */
    size_t req_bytes;       /* frame sizes of the last call, header included */
    size_t resp_bytes;
} brpc_t;

/* Connect to `path`; with `hello`, open a session and keep the arena fd.
 * 0 or -errno (a message on stderr). */
int brpc_connect(brpc_t *c, const char *path, bool hello);
void brpc_close(brpc_t *c);

/* Send `req` and wait for the answer.  NULL on an I/O
 * or decoding error.  Free the answer with brpc_free. */
Spand__Response *brpc_call(brpc_t *c, Spand__Request *req);
void brpc_free(Spand__Response *r);

/* Stats; NULL on error (message on stderr). */
Spand__Response *brpc_stats(brpc_t *c);
/* A counter of a Stats answer by name, or -1 when it is not there. */
int64_t brpc_counter(const Spand__StatsReply *s, const char *name);

/* Frame I/O shared with the echo baseline: write all / read all. */
int brpc_write_all(int fd, const void *buf, size_t len);
int brpc_read_all(int fd, void *buf, size_t len);

#endif /* BENCH_RPC_H */

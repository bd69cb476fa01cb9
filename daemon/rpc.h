/* See shm/layout.h for the overview.
 *
 * The RPC server: the listening Unix socket, one bufferevent per
 * connection, the framing of proto/wire.h, the limits, and the dispatch
 * table that picks a handler (daemon/handlers.c) by the request's body case.
 *
 * A handler gets a call record, reads call->req, fills call->resp's body
 * with memory from spd_call_alloc() (freed after the answer is packed) and
 * returns 0, or a positive errno with a sentence set by spd_call_fail().
 * Handlers never touch the socket and do bounded work.
 */
#ifndef SPD_RPC_H
#define SPD_RPC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "daemon/daemon.h"
#include "proto/spand.pb-c.h"

#define SPD_OUTPUT_MAX        (4u << 20)  /* stop reading a client that does not
                                             read its answers past this */
#define SPD_WRITE_TIMEOUT_SECS 30         /* a peer that takes no bytes for this
                                             long is dropped */
#define SPD_REST_READS        256u        /* reads of at most 64 KiB of what a
                                             peer sent before it went (rpc.c,
                                             conn_apply_rest) */

/* One connection.  Daemon-private memory; the session it opens (if any) is
 * in the arena's sessions[] table. */
struct spd_conn_s {
    spd_daemon_t *d;
    struct bufferevent *bev;
    int fd;
    uint64_t num;            /* for the log: conn=N */
    pid_t pid;               /* SO_PEERCRED at accept */
    uid_t uid;
    gid_t gid;
    bool allowed;            /* the peer's uid (or gid) may use us */
    uint32_t session;        /* session slot + 1, 0 before Hello */
    char name[64];           /* Hello's client_name */
    bool paused;             /* parse no more frames until output drains */
    bool closing;            /* close once the output is written */
    bool dead;               /* free at the end of the current callback */
    bool warned;             /* a bad frame was logged already (log once) */
    uint8_t *hello_frame;    /* HelloReply waiting to go out with the fd */
    size_t hello_len;
    struct event *hello_ev;  /* waits for room in the socket for it */
    int pidfd;               /* pidfd_open(pid) at Hello, -1 none */
    struct event *exit_ev;   /* the connection closed with the process alive
                                and holding spans: waits on pidfd for it to
                                exit, bev NULL meanwhile (conn_keep) */
    spd_conn_t *next, *prev; /* d->conns */
};

typedef struct spd_scratch_s spd_scratch_t;

/* One request being answered. */
typedef struct spd_call_s {
    spd_daemon_t *d;
    spd_conn_t *conn;
    const Spand__Request *req;
    Spand__Response resp;    /* id, error and message are set by rpc.c */
    char msg[512];           /* the error sentence */
    int pass_fd;             /* >= 0: send this fd with the answer (Hello) */
    spd_scratch_t *scratch;  /* spd_call_alloc'd memory */
} spd_call_t;

/* Zeroed memory that lives until the answer is packed.  Never NULL: the
 * daemon exits when it cannot allocate a few bytes. */
void *spd_call_alloc(spd_call_t *call, size_t size);

/* Set the error sentence and return `err` (a positive errno). */
int spd_call_fail(spd_call_t *call, int err, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* rpc.c: before the event loop (may print to stderr and return -1): refuse
 * when a daemon answers on the socket, replace a stale socket file, bind,
 * chmod, listen.  Sets d->listen_fd. */
int spd_rpc_bind(spd_daemon_t *d);
/* Create the listener on d->base. */
int spd_rpc_start(spd_daemon_t *d);
/* Close every connection (ending their sessions), the listener and the
 * socket file. */
void spd_rpc_stop(spd_daemon_t *d);
/* A Hello from process `pid`: end every session of it that was kept after
 * its connection closed (rpc.c, conn_keep).  The library says Hello again
 * only after spc_detach, which dropped its thread caches and unmapped the
 * arena (or after an exec): nothing in the process can use those spans any
 * more. */
void spd_rpc_end_kept(spd_daemon_t *d, pid_t pid);

/* handlers.c: one per request body; the table is in rpc.c. */
int spd_h_hello(spd_call_t *call);
int spd_h_refill(spd_call_t *call);
int spd_h_release(spd_call_t *call);
int spd_h_alloc_large(spd_call_t *call);
int spd_h_free_large(spd_call_t *call);
int spd_h_stats(spd_call_t *call);
int spd_h_scavenge(spd_call_t *call);
int spd_h_ping(spd_call_t *call);
int spd_h_clients(spd_call_t *call);
int spd_h_verify(spd_call_t *call);

/* stats.c: fill a StatsReply (per-class table when `classes`). */
Spand__StatsReply *spd_stats_fill(spd_call_t *call, bool classes);

#endif /* SPD_RPC_H */

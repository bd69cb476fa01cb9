/* See shm/layout.h for the overview.
 *
 * The daemon process: its configuration and its one state record.  The
 * allocator state lives in the arena (heap, central, sessions, counters);
 * what is here is only what a process needs to serve the socket: the
 * event base, the listener, the connections.  Everything runs on the one
 * event-loop thread, so nothing here is locked.
 */
#ifndef SPD_DAEMON_H
#define SPD_DAEMON_H

#include <limits.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>
#include <time.h>

#include "proto/wire.h"
#include "shm/arena.h"

#define SPD_MAX_ALLOW_UIDS        16
#define SPD_DEFAULT_SCAVENGE_SECS 5      /* scavenger period and idle threshold */
#define SPD_LARGE_POOL_AUTO       UINT64_MAX  /* --large-pool unset: arena / 8 */
#define SPD_LARGE_POOL_SHARE      8           /* the default pool: this part of the arena */

typedef struct spd_config_s {
    bool foreground;                 /* -f: no fork, log to stderr */
    int verbose;                     /* -v count */
    char socket[SPAND_PATH_MAX];     /* absolute path */
    char shm_name[NAME_MAX];         /* "/spand-$UID" unless -n */
    uint64_t arena_size;             /* -m, bytes */
    uint64_t base;                   /* --base-address */
    unsigned scavenge_interval;      /* seconds; 0 = no scavenger timer */
    uint64_t large_pool;             /* --large-pool, bytes; 0 = no pool */
    uid_t allow_uids[SPD_MAX_ALLOW_UIDS]; /* --allow-uid: peers let in besides
                                            our own uid and root */
    unsigned nallow_uids;
    bool have_group;                 /* --socket-group: socket 0660, group may connect */
    gid_t group;
    char group_name[64];
} spd_config_t;

struct event_base;
struct evconnlistener;
struct event;
typedef struct spd_conn_s spd_conn_t;

typedef struct spd_daemon_s {
    spd_config_t cfg;
    shm_arena_t arena;
    bool arena_created;              /* we own the object: unlink it at stop */
    struct event_base *base;
    int listen_fd;                   /* bound and listening before the loop */
    struct evconnlistener *listener;
    struct event *accept_pause;      /* re-enables the listener after EMFILE */
    struct event *keep_check;        /* every second while sessions are kept:
                                        has the process exec'd? (rpc.c) */
    struct event *sig_term, *sig_int, *sig_hup, *scavenger;
    char pidfile[SPAND_PATH_MAX + 8]; /* socket path + ".pid", "" until written */
    time_t started;                  /* wall clock */
    uint64_t nconns_total;           /* numbers connections in the log */
    spd_conn_t *conns;               /* every open connection, and every
                                        closed one whose process still runs
                                        and holds spans (conn_keep) */
    bool stopping;                   /* spd_rpc_stop: end every session now */
    spd_conn_t *by_session[SHM_MAX_SESSIONS]; /* slot -> its connection */
    uint64_t lpool_pops[SHM_LPOOL_NBUCKETS]; /* each bucket's xpops at the
                                                scavenger's last look */
} spd_daemon_t;

/* config.c: defaults, command line, config file.  Exits with a message and
 * status 2 on bad usage; returns normally only with a complete config. */
void spd_config_parse(spd_config_t *cfg, int argc, char **argv);

/* scavenger.c */
int spd_scavenger_start(spd_daemon_t *d);
/* Drain the large pool, sweep central and give every free page back now
 * (spanctl release).
 * Returns the bytes given back. */
uint64_t spd_scavenge_all(spd_daemon_t *d);

#endif /* SPD_DAEMON_H */

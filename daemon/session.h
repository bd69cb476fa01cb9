/* See shm/layout.h for the overview.
 *
 * Client sessions, kept in the arena header's sessions[] table (slot i is
 * session id i + 1) so that a restarted daemon could find them.  A session
 * holds spans: each is HELD, has span->session == slot + 1 and is on the
 * session's list (span next/prev, head sessions[slot].spans).  A session
 * ends when its connection closes, or, if its process still runs and holds
 * spans then, when the process exits (rpc.c, conn_keep).  When the
 * session ends, the daemon adopts every span it held:
 * spd_central_put drains the remote-free stack and forgets the holder's
 * index (the alloc bitmap is the truth), so objects the client allocated
 * stay allocated and everything else becomes available again.
 *
 * Daemon only, event-loop thread; plain stores.
 */
#ifndef SPD_SESSION_H
#define SPD_SESSION_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "daemon/central.h"
#include "shm/arena.h"

/* Open a session for process `pid` of user `uid`: 0 and *slot, or -ENOSPC
 * when all SHM_MAX_SESSIONS slots are taken. */
int spd_session_open(shm_arena_t *a, pid_t pid, uid_t uid, uint32_t *slot);

/* Give span `id` (CENTRAL, on no list, from spd_central_take) to session
 * `slot`: on its list, session = slot + 1, then state HELD (release). */
void spd_session_hold(shm_arena_t *a, uint32_t slot, shm_spanid_t id);

/* 0 when span `id` exists and is HELD by session `slot`; otherwise -EINVAL
 * with the reason in `why` (a short phrase). */
int spd_session_check(shm_arena_t *a, uint32_t slot, uint64_t id, const char **why);

/* Take back a span the session holds (checked first with
 * spd_session_check): off its list, then spd_central_put. */
spd_put_t spd_session_release(shm_arena_t *a, uint32_t slot, shm_spanid_t id);

/* Does session `slot` hold anything: a span, or a large span cached in one
 * of its threads?  (A walk over every descriptor for the latter.) */
bool spd_session_holds(shm_arena_t *a, uint32_t slot);

/* End the session: adopt every span it holds and free the slot.
 * Returns the number of spans adopted. */
uint32_t spd_session_close(shm_arena_t *a, uint32_t slot);

#endif /* SPD_SESSION_H */

/* See shm/layout.h for the overview.
 *
 * Helpers of the client tests: ask a running spand (started with
 * tests/daemon_helper.h) for Stats, Clients and Verify over a connection of
 * our own (no Hello, so it opens no session).
 */
#ifndef CT_HELPER_H
#define CT_HELPER_H

#include <stdbool.h>
#include <stdint.h>
#include <stddef.h>
#include <sys/types.h>

#include "proto/spand.pb-c.h"

/* One request on a fresh connection; the Response (free with
 * spand__response__free_unpacked) or NULL. */
Spand__Response *ct_call(const char *sock, Spand__Request *req);

/* Stats; false when the request failed. */
bool ct_stats(const char *sock, uint64_t *live_objects, uint64_t *live_bytes,
              uint32_t *clients);
/* The daemon's counter `name` (as `spanctl stats` lists them); -1 when the
 * request failed or there is no such counter. */
long long ct_counter(const char *sock, const char *name);
/* Spans held by the session of process `pid` (-1: no session of it). */
long ct_client_spans(const char *sock, pid_t pid);
/* Sessions of process `pid` (-2: the request failed). */
long ct_client_sessions(const char *sock, pid_t pid);
/* Scavenge (`spanctl release`): sweep central's full spans, give free pages
 * back.  False when the request failed. */
bool ct_scavenge(const char *sock);
/* The daemon's heap verifier: true when every invariant holds. */
bool ct_verify(const char *sock, char *msg, size_t len);
/* After the test's processes are gone: Scavenge, then Stats and Verify.
 * True when no session is left, the verifier passes, and no object is live
 * (max_objects 0: no byte either) or at most max_objects are; otherwise
 * false, having said what on stderr. */
bool ct_nothing_live(const char *sock, uint64_t max_objects);

/* write/read all n bytes (EINTR retried); false on an error or EOF. */
bool ct_write_all(int fd, const void *buf, size_t n);
bool ct_read_all(int fd, void *buf, size_t n);

#endif /* CT_HELPER_H */

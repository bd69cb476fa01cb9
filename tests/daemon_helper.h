/* See shm/layout.h for the overview.
 *
 * Start and stop a real spand ($SPAND_BIN) for a test: a private socket in
 * a fresh temp directory, a private shared-memory name (both include the
 * test's pid and a counter), foreground, stderr into DIR/spand.log.
 * Every daemon started is remembered; dh_stop_all() (suite cleanup, and an
 * atexit handler) stops any that a failed test left running and removes
 * their socket, pid file, log, directory and shared memory.
 */
#ifndef SPD_DAEMON_HELPER_H
#define SPD_DAEMON_HELPER_H

#include <stdbool.h>
#include <sys/types.h>

typedef struct dh_daemon_s {
    pid_t pid;               /* 0 when not running */
    char dir[64];            /* temp directory holding the socket and log */
    char sock[108];
    char pidfile[120];
    char log[96];
    char shm[64];            /* "/spandtest-PID-N" */
    bool used;
    bool no_socket_arg;      /* start without -s: the socket comes from the
                                environment ($SPAND_SOCKET, $XDG_RUNTIME_DIR) */
} dh_daemon_t;

/* Make the names (directory created, nothing started). */
dh_daemon_t *dh_new(void);

/* Start spand on d's socket and name with `args` (NULL-terminated, may be
 * NULL) added; wait until it answers Ping (at most 10 s).  0 or -1. */
int dh_start(dh_daemon_t *d, const char *const *args);

/* Run spand with d's socket and name plus `args`, expecting it to exit by
 * itself within 10 s.  Returns its exit status (-1: it did not exit, and was
 * killed); its stderr goes to `err` (NUL-terminated, truncated). */
int dh_run_expect_exit(dh_daemon_t *d, const char *const *args, char *err, size_t len);

/* SIGTERM, wait (5 s), SIGKILL fallback.  Returns the exit status, or -1
 * when it had to be killed or did not exit normally.  Names stay. */
int dh_stop(dh_daemon_t *d);

/* SIGKILL and reap, leaving its socket and shared memory behind. */
void dh_kill(dh_daemon_t *d);

/* Stop if running, remove socket, pid file, log, shm and directory. */
void dh_cleanup(dh_daemon_t *d);
void dh_stop_all(void);

/* Print the daemon's log to stderr (after a failure). */
void dh_dump_log(const dh_daemon_t *d);

/* For a client test: dh_new and dh_start with `args`, and $SPAND_SOCKET set
 * to its socket.  NULL when it does not start (its log printed). */
dh_daemon_t *dh_start_client(const char *const *args);

/* dh_stop, then dh_cleanup: 0, or -1 (its log printed) when it did not
 * exit cleanly. */
int dh_finish(dh_daemon_t *d);

/* Wait for a child for at most `ms` milliseconds; its status or -1. */
int dh_waitpid_timeout(pid_t pid, int *status, unsigned ms);

/* The same, but a child still running then is killed (SIGKILL) and reaped,
 * so that a failed test leaves no process behind: 0, or -1 (*status is the
 * killed child's). */
int dh_reap(pid_t pid, int *status, unsigned ms);

#endif /* SPD_DAEMON_HELPER_H */

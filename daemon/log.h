/* See shm/layout.h for the overview.
 *
 * The daemon's log (only the daemon logs).  Messages are key=value phrases
 * ("conn=3 pid=1234 refused: uid=65534"), one line each, to stderr in the
 * foreground and to syslog (facility daemon) otherwise.  The _warn/_fatal
 * forms append ": strerror(errno)", the _warnx/_fatalx forms do not (tmux's
 * pairs).  log_info and log_debug check the level before evaluating their
 * arguments.  libevent's own messages come in through the same sink.
 */
#ifndef SPD_LOG_H
#define SPD_LOG_H

#include <stdbool.h>

enum {
    SPD_LOG_WARN  = 0,   /* always */
    SPD_LOG_INFO  = 1,   /* default: start, stop, sessions, refusals */
    SPD_LOG_DEBUG = 2,   /* -v: every request */
    SPD_LOG_TRACE = 3,   /* -vv: libevent debug */
};

extern int spd_log_level;   /* main thread only; set by log_init */

/* Log to stderr (foreground) or syslog with identity `ident`; `verbose`
 * adds to SPD_LOG_INFO.  May be called again to switch after daemonizing. */
void log_init(const char *ident, bool foreground, int verbose);

void log_warn(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void log_warnx(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void log_fatal(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
void log_fatalx(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
void log_emit(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define log_info(...)                                                          \
    do { if (spd_log_level >= SPD_LOG_INFO) log_emit(SPD_LOG_INFO, __VA_ARGS__); } while (0)
#define log_debug(...)                                                         \
    do { if (spd_log_level >= SPD_LOG_DEBUG) log_emit(SPD_LOG_DEBUG, __VA_ARGS__); } while (0)

#endif /* SPD_LOG_H */

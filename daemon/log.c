/* See shm/layout.h for the overview.  The daemon's log; see daemon/log.h. */
#include "config.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>

#include "daemon/log.h"

int spd_log_level = SPD_LOG_INFO;
static bool log_foreground = true;
static const char *log_ident = "spand";

static void log_event_cb(int severity, const char *msg)
{
    if (severity >= EVENT_LOG_WARN)
        log_emit(SPD_LOG_WARN, "libevent: %s", msg);
    else if (severity == EVENT_LOG_MSG)
        log_info("libevent: %s", msg);
    else if (spd_log_level >= SPD_LOG_TRACE)
        log_emit(SPD_LOG_TRACE, "libevent: %s", msg);
}

void log_init(const char *ident, bool foreground, int verbose)
{
    log_ident = ident;
    log_foreground = foreground;
    spd_log_level = SPD_LOG_INFO + verbose;
    if (!foreground)
        openlog(ident, LOG_PID | LOG_NDELAY, LOG_DAEMON);
    event_set_log_callback(log_event_cb);
    if (spd_log_level >= SPD_LOG_TRACE)
        event_enable_debug_logging(EVENT_DBG_ALL);
}

static void log_vemit(int level, const char *suffix, const char *fmt, va_list ap)
{
    char msg[1024];
    vsnprintf(msg, sizeof msg, fmt, ap);
    if (log_foreground) {
        static const char *names[] = { "warn", "info", "debug", "trace" };
        struct timespec ts;
        struct tm tm;
        clock_gettime(CLOCK_REALTIME, &ts);
        localtime_r(&ts.tv_sec, &tm);
        fprintf(stderr, "%s[%ld] %02d:%02d:%02d.%03ld %s: %s%s%s\n", log_ident,
                (long)getpid(), tm.tm_hour, tm.tm_min, tm.tm_sec, ts.tv_nsec / 1000000,
                names[level < 0 ? 0 : level > 3 ? 3 : level], msg,
                suffix ? ": " : "", suffix ? suffix : "");
    } else {
        static const int prio[] = { LOG_WARNING, LOG_INFO, LOG_DEBUG, LOG_DEBUG };
        syslog(prio[level < 0 ? 0 : level > 3 ? 3 : level], "%s%s%s", msg,
               suffix ? ": " : "", suffix ? suffix : "");
    }
}

void log_emit(int level, const char *fmt, ...)
{
    va_list ap;
    if (level > spd_log_level)
        return;
    va_start(ap, fmt);
    log_vemit(level, NULL, fmt, ap);
    va_end(ap);
}

void log_warn(const char *fmt, ...)
{
    int saved = errno;
    va_list ap;
    va_start(ap, fmt);
    log_vemit(SPD_LOG_WARN, strerror(saved), fmt, ap);
    va_end(ap);
    errno = saved;
}

void log_warnx(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    log_vemit(SPD_LOG_WARN, NULL, fmt, ap);
    va_end(ap);
}

void log_fatal(const char *fmt, ...)
{
    int saved = errno;
    va_list ap;
    va_start(ap, fmt);
    log_vemit(SPD_LOG_WARN, strerror(saved), fmt, ap);
    va_end(ap);
    exit(1);
}

void log_fatalx(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    log_vemit(SPD_LOG_WARN, NULL, fmt, ap);
    va_end(ap);
    exit(1);
}

/* See shm/layout.h for the overview.
 *
 * spand: arguments, the arena, the socket, daemonizing, signals, the event
 * loop and teardown.  Everything that can fail for a reason the user can
 * fix (socket in use, shared-memory name taken, bad size) fails before we
 * daemonize, so the message reaches the terminal.
 *
 * The arena: created under --name; a stale object of the same name whose
 * recorded daemon pid is dead is replaced (with a warning), one held by a
 * live daemon or not a spand arena makes us refuse.  At a clean stop
 * (SIGTERM, SIGINT) the socket, the pid file and the shared-memory object
 * are removed.  SIGHUP is logged and changes nothing: there is nothing to
 * reload (the settings are fixed at start), and its default action, an
 * exit with no clean-up, would drop every client's daemon at once (a
 * foreground spand whose terminal closes, say).
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <unistd.h>

#include <event2/event.h>

#include "daemon/heap.h"
#include "daemon/log.h"
#include "daemon/rpc.h"
#include "shm/atomic.h"

/* The object `name` exists: may we replace it?  0 yes (it is unlinked), -1 no. */
static int replace_stale(const char *name)
{
    uint64_t magic = 0;
    uint32_t pid = 0;
    int fd = shm_open(name, O_RDONLY, 0);
    if (fd < 0)
        return errno == ENOENT ? 0 : (perror("spand: shm_open"), -1);
    bool ours = pread(fd, &magic, sizeof magic, 0) == sizeof magic && magic == SHM_MAGIC &&
                pread(fd, &pid, sizeof pid, offsetof(shm_header_t, xdaemon_pid)) == sizeof pid;
    close(fd);
    if (!ours) {
        fprintf(stderr, "spand: shared memory %s exists and is not a spand arena; "
                "choose another --name or remove /dev/shm%s\n", name, name);
        return -1;
    }
    if (pid != 0 && pid != (uint32_t)getpid() && (kill((pid_t)pid, 0) == 0 || errno == EPERM)) {
        fprintf(stderr, "spand: shared memory %s belongs to a running spand (pid %u); "
                "not starting a second one\n", name, pid);
        return -1;
    }
    log_warnx("shm=%s stale arena of daemon pid %u (not running); replacing it", name, pid);
    shm_unlink(name);
    return 0;
}

static int open_arena(spd_daemon_t *d)
{
    char err[SHM_ERRLEN];
    const spd_config_t *cfg = &d->cfg;
    int rc = shm_arena_create(&d->arena, cfg->shm_name, cfg->arena_size, cfg->base, err);
    if (rc == -EEXIST) {
        if (replace_stale(cfg->shm_name) != 0)
            return -1;
        rc = shm_arena_create(&d->arena, cfg->shm_name, cfg->arena_size, cfg->base, err);
    }
    if (rc != 0) {
        fprintf(stderr, "spand: cannot create the arena %s: %s\n", cfg->shm_name, err);
        return -1;
    }
    d->arena_created = true;
    if ((rc = spd_heap_init(&d->arena)) != 0) {
        fprintf(stderr, "spand: cannot set up the heap: %s\n", strerror(-rc));
        return -1;
    }
    /* the rest of the large pool is zero in a fresh object: empty */
    d->arena.hdr->lpool.cap_pages = cfg->large_pool >> SHM_PAGE_SHIFT;
    return 0;
}

/* Fork into the background.  The parent waits on `*ready` for the child to
 * say it serves (one byte) and exits 0, or 1 when the child died first. */
static void daemonize(int *ready)
{
    int p[2];
    if (pipe(p) != 0)
        log_fatal("pipe");
    pid_t pid = fork();
    if (pid < 0)
        log_fatal("fork");
    if (pid > 0) {
        char c;
        close(p[1]);
        if (read(p[0], &c, 1) == 1)
            _exit(0);
        fprintf(stderr, "spand: the daemon did not start; see the system log\n");
        _exit(1);
    }
    close(p[0]);
    *ready = p[1];
    if (setsid() < 0)
        log_fatal("setsid");
    if (chdir("/") != 0)
        log_fatal("chdir /");
    int null = open("/dev/null", O_RDWR);
    if (null >= 0) {
        dup2(null, 0), dup2(null, 1), dup2(null, 2);
        if (null > 2)
            close(null);
    }
}

static int write_pidfile(spd_daemon_t *d)
{
    snprintf(d->pidfile, sizeof d->pidfile, "%s.pid", d->cfg.socket);
    FILE *f = fopen(d->pidfile, "we");
    if (f == NULL || fprintf(f, "%ld\n", (long)getpid()) < 0 || fclose(f) != 0) {
        log_warn("cannot write the pid file %s", d->pidfile);
        d->pidfile[0] = '\0';
        return -1;
    }
    return 0;
}

static void on_signal(evutil_socket_t sig, short what, void *arg)
{
    spd_daemon_t *d = arg;
    (void)what;
    log_info("signal=%s stopping", strsignal((int)sig));
    event_base_loopbreak(d->base);
}

static void on_hangup(evutil_socket_t sig, short what, void *arg)
{
    (void)sig, (void)what, (void)arg;
    log_info("signal=Hangup: nothing to reload (the settings are fixed at start); "
             "going on");
}

static int start_events(spd_daemon_t *d)
{
    d->base = event_base_new();
    if (d->base == NULL)
        return -1;
    d->sig_term = evsignal_new(d->base, SIGTERM, on_signal, d);
    d->sig_int = evsignal_new(d->base, SIGINT, on_signal, d);
    d->sig_hup = evsignal_new(d->base, SIGHUP, on_hangup, d);
    if (!d->sig_term || !d->sig_int || !d->sig_hup || evsignal_add(d->sig_term, NULL) ||
        evsignal_add(d->sig_int, NULL) || evsignal_add(d->sig_hup, NULL))
        return -1;
    if (spd_rpc_start(d) != 0 || spd_scavenger_start(d) != 0)
        return -1;
    return 0;
}

static void teardown(spd_daemon_t *d)
{
    spd_rpc_stop(d);
    if (d->pidfile[0])
        unlink(d->pidfile);
    if (d->scavenger)
        event_free(d->scavenger);
    if (d->sig_term)
        event_free(d->sig_term);
    if (d->sig_int)
        event_free(d->sig_int);
    if (d->sig_hup)
        event_free(d->sig_hup);
    if (d->base)
        event_base_free(d->base);
    if (d->arena.hdr)
        shm_store_release(&d->arena.hdr->xdaemon_pid, 0);
    shm_arena_close(&d->arena);
    if (d->arena_created)
        shm_unlink(d->cfg.shm_name);
}

/* Each client costs two descriptors (its socket and the pidfd that tells
 * when its process exits, rpc.c): take the hard limit as the soft one. */
static void raise_nofile(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur >= rl.rlim_max)
        return;
    rlim_t was = rl.rlim_cur;
    rl.rlim_cur = rl.rlim_max;
    if (setrlimit(RLIMIT_NOFILE, &rl) != 0)
        log_warn("setrlimit(RLIMIT_NOFILE)");
    else
        log_debug("open files: %llu, was %llu", (unsigned long long)rl.rlim_cur,
                  (unsigned long long)was);
}

int main(int argc, char **argv)
{
    static spd_daemon_t daemon_state = { .listen_fd = -1, .arena = { .fd = -1 } };
    spd_daemon_t *d = &daemon_state;
    int ready = -1;

    sigset_t stop, old;
    spd_config_parse(&d->cfg, argc, argv);
    log_init("spand", true, d->cfg.verbose);
    signal(SIGPIPE, SIG_IGN);
    raise_nofile();
    /* a SIGTERM before the loop handles it waits, so it still cleans up;
     * so does a SIGHUP, which then changes nothing */
    sigemptyset(&stop);
    sigaddset(&stop, SIGTERM);
    sigaddset(&stop, SIGINT);
    sigaddset(&stop, SIGHUP);
    sigprocmask(SIG_BLOCK, &stop, &old);
    if (spd_rpc_bind(d) != 0)
        return 1;
    if (open_arena(d) != 0) {
        teardown(d);
        return 1;
    }
    if (!d->cfg.foreground) {
        daemonize(&ready);
        log_init("spand", false, d->cfg.verbose);
    }
    d->started = time(NULL);
    write_pidfile(d);
    shm_store_release(&d->arena.hdr->xdaemon_pid, (uint32_t)getpid());
    if (start_events(d) != 0) {
        log_warnx("cannot start the event loop");
        teardown(d);
        return 1;
    }
    sigprocmask(SIG_SETMASK, &old, NULL);
    log_info("started pid=%ld socket=%s shm=%s arena_size=%llu base=%#llx "
             "scavenge_interval=%u large_pool=%llu", (long)getpid(), d->cfg.socket,
             d->cfg.shm_name, (unsigned long long)d->cfg.arena_size,
             (unsigned long long)d->cfg.base, d->cfg.scavenge_interval,
             (unsigned long long)d->cfg.large_pool);
    if (ready >= 0 && (write(ready, "k", 1) != 1 || close(ready) != 0))
        log_warn("cannot tell the parent we are up");
    int rc = event_base_dispatch(d->base);
    if (rc < 0)
        log_warnx("event loop failed");
    teardown(d);
    log_info("stopped");
    return rc < 0 ? 1 : 0;
}

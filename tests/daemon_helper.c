/* See shm/layout.h for the overview.  Real daemons for tests; see
 * tests/daemon_helper.h. */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "tests/daemon_helper.h"
#include "tools/ctlclient.h"

#define DH_MAX 64

static dh_daemon_t daemons[DH_MAX];
static unsigned ndaemons;
static bool atexit_set;
static pid_t owner;      /* only the process that started them stops them */

static void sleep_ms(unsigned ms)
{
    struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };
    nanosleep(&ts, NULL);
}

dh_daemon_t *dh_new(void)
{
    if (!atexit_set) {
        atexit(dh_stop_all);
        atexit_set = true;
        owner = getpid();
    }
    if (ndaemons == DH_MAX)
        return NULL;
    dh_daemon_t *d = &daemons[ndaemons++];
    memset(d, 0, sizeof *d);
    char dir[sizeof d->dir] = "/tmp/spandtest.XXXXXX";
    if (mkdtemp(dir) == NULL)
        return NULL;
    d->used = true;
    memcpy(d->dir, dir, sizeof dir);
    snprintf(d->sock, sizeof d->sock, "%s/spand.sock", dir);
    snprintf(d->pidfile, sizeof d->pidfile, "%s/spand.sock.pid", dir);
    snprintf(d->log, sizeof d->log, "%s/spand.log", dir);
    snprintf(d->shm, sizeof d->shm, "/spandtest-%ld-%u", (long)getpid(), ndaemons);
    return d;
}

/* fork + exec spand with our names, args appended; stderr to `errfile`. */
static pid_t spawn(dh_daemon_t *d, const char *const *args, const char *errfile)
{
    const char *bin = getenv("SPAND_BIN");
    if (bin == NULL || *bin == '\0') {
        fprintf(stderr, "daemon_helper: SPAND_BIN is not set (make check sets it)\n");
        return -1;
    }
    const char *argv[64];
    unsigned n = 0;
    argv[n++] = bin;
    argv[n++] = "-f";
    if (!d->no_socket_arg) {
        argv[n++] = "-s";
        argv[n++] = d->sock;
    }
    argv[n++] = "-n";
    argv[n++] = d->shm;
    argv[n++] = "-m";
    argv[n++] = "64M";
    for (; args && *args && n < 62; args++)
        argv[n++] = *args;
    argv[n] = NULL;
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid == 0) {
        /* a test that crashes (or is killed) cannot stop its daemons: they
         * get SIGTERM when it dies, and remove their socket and arena as on
         * any stop (tests start daemons from the thread that runs them) */
        if (prctl(PR_SET_PDEATHSIG, SIGTERM) != 0 || getppid() != parent)
            _exit(127);
        int fd = open(errfile, O_WRONLY | O_CREAT | O_APPEND, 0600);
        if (fd >= 0)
            dup2(fd, 2);
        execv(bin, (char *const *)argv);
        fprintf(stderr, "daemon_helper: exec %s: %s\n", bin, strerror(errno));
        _exit(127);
    }
    return pid;
}

static bool answers_ping(const dh_daemon_t *d)
{
    ctl_client_t c;
    if (ctl_connect(&c, d->sock, 1000) != 0)
        return false;
    Spand__Ping ping = SPAND__PING__INIT;
    Spand__Request req = SPAND__REQUEST__INIT;
    Spand__Response *resp = NULL;
    req.body_case = SPAND__REQUEST__BODY_PING;
    req.ping = &ping;
    bool ok = ctl_call(&c, &req, &resp) == 0 && resp->error == 0;
    if (resp)
        spand__response__free_unpacked(resp, NULL);
    ctl_close(&c);
    return ok;
}

int dh_waitpid_timeout(pid_t pid, int *status, unsigned ms)
{
    for (unsigned waited = 0;; waited += 10) {
        pid_t r = waitpid(pid, status, WNOHANG);
        if (r == pid)
            return 0;
        if (r < 0 || waited >= ms)
            return -1;
        sleep_ms(10);
    }
}

int dh_reap(pid_t pid, int *status, unsigned ms)
{
    if (pid <= 0)
        return -1;
    if (dh_waitpid_timeout(pid, status, ms) == 0)
        return 0;
    fprintf(stderr, "daemon_helper: child %ld still running after %u ms; killed\n",
            (long)pid, ms);
    kill(pid, SIGKILL);
    waitpid(pid, status, 0);
    return -1;
}

int dh_start(dh_daemon_t *d, const char *const *args)
{
    int status;
    d->pid = spawn(d, args, d->log);
    if (d->pid < 0) {
        d->pid = 0;
        return -1;
    }
    for (unsigned waited = 0; waited < 10000; waited += 20) {
        if (answers_ping(d))
            return 0;
        if (waitpid(d->pid, &status, WNOHANG) == d->pid) {
            fprintf(stderr, "daemon_helper: spand exited at start (status %#x)\n", status);
            d->pid = 0;
            dh_dump_log(d);
            return -1;
        }
        sleep_ms(20);
    }
    fprintf(stderr, "daemon_helper: spand does not answer on %s\n", d->sock);
    dh_dump_log(d);
    dh_kill(d);
    return -1;
}

int dh_run_expect_exit(dh_daemon_t *d, const char *const *args, char *err, size_t len)
{
    char errfile[120];
    int status, rc = -1;
    snprintf(errfile, sizeof errfile, "%s/second.err", d->dir);
    unlink(errfile);
    pid_t pid = spawn(d, args, errfile);
    if (pid < 0)
        return -1;
    if (dh_reap(pid, &status, 10000) == 0 && WIFEXITED(status))
        rc = WEXITSTATUS(status);
    err[0] = '\0';
    FILE *f = fopen(errfile, "r");
    if (f) {
        size_t n = fread(err, 1, len - 1, f);
        err[n] = '\0';
        fclose(f);
    }
    unlink(errfile);
    return rc;
}

int dh_stop(dh_daemon_t *d)
{
    int status;
    if (d->pid <= 0)
        return -1;
    kill(d->pid, SIGTERM);
    if (dh_waitpid_timeout(d->pid, &status, 5000) != 0) {
        fprintf(stderr, "daemon_helper: spand %ld ignores SIGTERM; killing it\n",
                (long)d->pid);
        kill(d->pid, SIGKILL);
        waitpid(d->pid, &status, 0);
        d->pid = 0;
        return -1;
    }
    d->pid = 0;
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

void dh_kill(dh_daemon_t *d)
{
    if (d->pid > 0) {
        kill(d->pid, SIGKILL);
        waitpid(d->pid, NULL, 0);
    }
    d->pid = 0;
}

void dh_cleanup(dh_daemon_t *d)
{
    if (!d->used)
        return;
    if (d->pid > 0 && dh_stop(d) != 0)
        dh_kill(d);
    unlink(d->sock);
    unlink(d->pidfile);
    unlink(d->log);
    shm_unlink(d->shm);
    rmdir(d->dir);
    d->used = false;
}

void dh_stop_all(void)
{
    if (getpid() != owner)
        return;
    for (unsigned i = 0; i < ndaemons; i++)
        dh_cleanup(&daemons[i]);
}

void dh_dump_log(const dh_daemon_t *d)
{
    char line[512];
    FILE *f = fopen(d->log, "r");
    if (f == NULL)
        return;
    fprintf(stderr, "---- %s\n", d->log);
    while (fgets(line, sizeof line, f))
        fputs(line, stderr);
    fclose(f);
}

dh_daemon_t *dh_start_client(const char *const *args)
{
    dh_daemon_t *d = dh_new();
    if (d == NULL || dh_start(d, args) != 0) {
        fprintf(stderr, "cannot start spand\n");
        if (d) {
            dh_dump_log(d);
            dh_cleanup(d);
        }
        return NULL;
    }
    setenv("SPAND_SOCKET", d->sock, 1);
    return d;
}

int dh_finish(dh_daemon_t *d)
{
    int st = dh_stop(d);
    if (st != 0)
        dh_dump_log(d);
    dh_cleanup(d);
    return st == 0 ? 0 : -1;
}

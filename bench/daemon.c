/* spanbench and its private spand: start it on a socket and shared-memory
 * name of its own, stop it and remove both, also on a signal; and
 * workload 9, the daemon's round trips against a bare Unix-socket echo. */
#include "config.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#ifndef BENCH_NO_SPAND
#include <spanclient.h>
#endif

#include "bench/bench.h"
#include "bench/rpc.h"
#include "proto/wire.h"
#include "shm/sizeclasses.h"

static int daemon_pid;
static char run_dir[64];       /* private directory: socket and log */
static char log_path[128];
static char shm_path[96];      /* /dev/shm/<name>, for the signal handler */
static char pid_path[120];     /* spand writes SOCKET.pid */

int bench_daemon_pid(void)
{
    return daemon_pid;
}

static void print_log(void)
{
    FILE *f = fopen(log_path, "r");
    if (!f)
        return;
    char line[512];
    fprintf(stderr, "spanbench: --- spand log (%s) ---\n", log_path);
    while (fgets(line, sizeof line, f))
        fprintf(stderr, "  %s", line);
    fclose(f);
}

/* Remove what the daemon leaves behind.  Async-signal-safe. */
void bench_daemon_cleanup_signal(void)
{
    if (daemon_pid > 0)
        kill(daemon_pid, SIGKILL);
    if (bench_opts.sock[0])
        unlink(bench_opts.sock);
    if (shm_path[0])
        unlink(shm_path);
    if (pid_path[0])
        unlink(pid_path);
    if (log_path[0])
        unlink(log_path);
    if (run_dir[0])
        rmdir(run_dir);
}

static int exec_daemon(void *arg)
{
    (void)arg;
    int fd = open(log_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd >= 0) {
        dup2(fd, 1);
        dup2(fd, 2);
    }
    char interval[16];
    snprintf(interval, sizeof interval, "%d", bench_opts.scavenge_interval);
    const char *argv[] = {
        bench_opts.spand_bin, "-f", "-s", bench_opts.sock, "-n", bench_opts.shm_name,
        "-m", bench_opts.arena_size, "--scavenge-interval", interval,
        bench_opts.verbose ? "-v" : NULL, NULL,
    };
    execv(bench_opts.spand_bin, (char **)argv);
    fprintf(stderr, "exec %s: %s\n", bench_opts.spand_bin, strerror(errno));
    return 127;
}

static bool pid_alive(long pid)
{
    return pid > 0 && (kill((pid_t)pid, 0) == 0 || errno == EPERM);
}

/* A spanbench killed with SIGKILL cannot clean up; its daemon dies with it
 * (PR_SET_PDEATHSIG) but leaves the arena and the run directory.  Remove
 * those of spanbench processes that no longer exist. */
static void remove_stale(void)
{
    DIR *d = opendir("/dev/shm");
    struct dirent *e;
    long pid;
    char path[512];
    int n;
    while (d && (e = readdir(d)))
        if (sscanf(e->d_name, "spanbench-%ld%n", &pid, &n) == 1 && e->d_name[n] == 0 &&
            !pid_alive(pid)) {
            snprintf(path, sizeof path, "/%s", e->d_name);
            if (shm_unlink(path) == 0)
                bench_note("removed the arena %s of a spanbench that died", path);
        }
    if (d)
        closedir(d);
    d = opendir("/tmp");
    while (d && (e = readdir(d))) {
        if (sscanf(e->d_name, "spanbench-%ld-%n", &pid, &n) != 1 || n == 0 || pid_alive(pid))
            continue;
        static const char *files[] = {"spand.sock", "spand.sock.pid", "spand.log"};
        for (size_t i = 0; i < sizeof files / sizeof *files; i++) {
            snprintf(path, sizeof path, "/tmp/%s/%s", e->d_name, files[i]);
            unlink(path);
        }
        snprintf(path, sizeof path, "/tmp/%s", e->d_name);
        if (rmdir(path) == 0)
            bench_note("removed %s of a spanbench that died", path);
    }
    if (d)
        closedir(d);
}

int bench_daemon_start(void)
{
    remove_stale();
    if (access(bench_opts.spand_bin, X_OK) != 0) {
        fprintf(stderr, "spanbench: no spand at %s (build it, or pass --spand PATH)\n",
                bench_opts.spand_bin);
        return -1;
    }
    snprintf(run_dir, sizeof run_dir, "/tmp/spanbench-%d-XXXXXX", (int)getpid());
    if (!mkdtemp(run_dir)) {
        run_dir[0] = 0;
        fprintf(stderr, "spanbench: mkdtemp: %s\n", strerror(errno));
        return -1;
    }
    snprintf(bench_opts.sock, sizeof bench_opts.sock, "%s/spand.sock", run_dir);
    snprintf(log_path, sizeof log_path, "%s/spand.log", run_dir);
    snprintf(pid_path, sizeof pid_path, "%s.pid", bench_opts.sock);
    snprintf(bench_opts.shm_name, sizeof bench_opts.shm_name, "/spanbench-%d", (int)getpid());
    snprintf(shm_path, sizeof shm_path, "/dev/shm%s", bench_opts.shm_name);

    daemon_pid = bench_spawn(exec_daemon, NULL);
    uint64_t deadline = bench_now_ns() + 10 * 1000000000ull;
    while (bench_now_ns() < deadline) {
        brpc_t c;
        if (brpc_connect(&c, bench_opts.sock, false) == 0) {
            Spand__Response *r = brpc_stats(&c);
            brpc_close(&c);
            if (r) {
                brpc_free(r);
                bench_note("spand pid %d on %s, arena %s %s, scavenge interval %d s",
                           daemon_pid, bench_opts.sock, bench_opts.shm_name,
                           bench_opts.arena_size, bench_opts.scavenge_interval);
                return 0;
            }
        }
        int status;
        if (waitpid(daemon_pid, &status, WNOHANG) == daemon_pid) {
            bench_unregister_pid(daemon_pid);
            daemon_pid = 0;
            fprintf(stderr, "spanbench: spand exited at start-up\n");
            print_log();
            bench_daemon_stop();
            return -1;
        }
        usleep(20000);
    }
    fprintf(stderr, "spanbench: spand did not answer on %s within 10 s\n", bench_opts.sock);
    print_log();
    bench_daemon_stop();
    return -1;
}

void bench_daemon_stop(void)
{
    if (daemon_pid > 0) {
        kill(daemon_pid, SIGTERM);
        int rc = bench_wait(daemon_pid, 5.0);
        if (rc != 0) {
            fprintf(stderr, "spanbench: spand exited with status %d\n", rc);
            print_log();
        } else if (bench_opts.verbose) {
            print_log();
        }
        daemon_pid = 0;
    }
    if (bench_opts.sock[0])
        unlink(bench_opts.sock);
    if (bench_opts.shm_name[0] && shm_unlink(bench_opts.shm_name) == 0)
        bench_note("removed the arena %s that spand left", bench_opts.shm_name);
    if (pid_path[0])
        unlink(pid_path);
    if (log_path[0])
        unlink(log_path);
    if (run_dir[0] && rmdir(run_dir) != 0)
        fprintf(stderr, "spanbench: could not remove %s: %s\n", run_dir, strerror(errno));
    bench_opts.sock[0] = bench_opts.shm_name[0] = 0;
    shm_path[0] = pid_path[0] = log_path[0] = run_dir[0] = 0;
}

/* ---- workload 9: the daemon's round trips ---- */

typedef struct {
    uint64_t *ns;
    size_t n;
} samples_t;

static void report_rtt(const char *what, samples_t *s)
{
    char m[64];
    if (s->n == 0)
        return;
    snprintf(m, sizeof m, "%s_p50_us", what);
    bench_result(W_DAEMON, 0, m, bench_percentile(s->ns, s->n, 0.50) / 1e3);
    snprintf(m, sizeof m, "%s_p99_us", what);
    bench_result(W_DAEMON, 0, m, bench_percentile(s->ns, s->n, 0.99) / 1e3);
}

static samples_t new_samples(size_t n)
{
    samples_t s = {calloc(n, sizeof(uint64_t)), 0};
    if (!s.ns)
        bench_die("out of memory");
    return s;
}

/* Refill one span of `cls`, giving back the ones the previous answer
 * brought: the steady-state shape of a refill. */
static bool time_refills(brpc_t *c, unsigned cls, samples_t *s, int count,
                         size_t *req_bytes, size_t *resp_bytes)
{
    uint32_t held[64];
    size_t nheld = 0;
    bool ok = true;
    for (int i = 0; i < count && ok; i++) {
        Spand__Request req = SPAND__REQUEST__INIT;
        Spand__Refill rf = SPAND__REFILL__INIT;
        rf.sizeclass = cls;
        rf.nspans = 1;
        rf.release = held;
        rf.n_release = nheld;
        req.body_case = SPAND__REQUEST__BODY_REFILL;
        req.refill = &rf;
        uint64_t t0 = bench_now_ns();
        Spand__Response *r = brpc_call(c, &req);
        uint64_t t1 = bench_now_ns();
        if (!r || r->error || r->body_case != SPAND__RESPONSE__BODY_REFILL) {
            fprintf(stderr, "spanbench: Refill failed: %s\n", r ? r->message : "no answer");
            ok = false;
        } else {
            s->ns[s->n++] = t1 - t0;
            nheld = 0;
            for (size_t k = 0; k < r->refill->n_spans && nheld < 64; k++)
                held[nheld++] = r->refill->spans[k];
            *req_bytes = c->req_bytes;
            *resp_bytes = c->resp_bytes;
        }
        brpc_free(r);
    }
    if (nheld) {
        Spand__Request req = SPAND__REQUEST__INIT;
        Spand__Release rl = SPAND__RELEASE__INIT;
        rl.spans = held;
        rl.n_spans = nheld;
        req.body_case = SPAND__REQUEST__BODY_RELEASE;
        req.release = &rl;
        brpc_free(brpc_call(c, &req));
    }
    return ok;
}

/* AllocLarge + FreeLarge of `size` bytes, each round trip timed. */
static bool time_large(brpc_t *c, uint64_t size, samples_t *alloc, samples_t *fr, int count)
{
    for (int i = 0; i < count; i++) {
        Spand__Request req = SPAND__REQUEST__INIT;
        Spand__AllocLarge al = SPAND__ALLOC_LARGE__INIT;
        al.size = size;
        req.body_case = SPAND__REQUEST__BODY_ALLOC_LARGE;
        req.alloc_large = &al;
        uint64_t t0 = bench_now_ns();
        Spand__Response *r = brpc_call(c, &req);
        uint64_t t1 = bench_now_ns();
        if (!r || r->error || r->body_case != SPAND__RESPONSE__BODY_ALLOC_LARGE) {
            fprintf(stderr, "spanbench: AllocLarge failed: %s\n", r ? r->message : "no answer");
            brpc_free(r);
            return false;
        }
        uint64_t off = r->alloc_large->offset;
        brpc_free(r);
        alloc->ns[alloc->n++] = t1 - t0;

        Spand__Request fq = SPAND__REQUEST__INIT;
        Spand__FreeLarge fl = SPAND__FREE_LARGE__INIT;
        fl.offset = off;
        fq.body_case = SPAND__REQUEST__BODY_FREE_LARGE;
        fq.free_large = &fl;
        t0 = bench_now_ns();
        r = brpc_call(c, &fq);
        t1 = bench_now_ns();
        bool ok = r && !r->error;
        if (!ok)
            fprintf(stderr, "spanbench: FreeLarge failed: %s\n", r ? r->message : "no answer");
        brpc_free(r);
        if (!ok)
            return false;
        fr->ns[fr->n++] = t1 - t0;
    }
    return true;
}

static bool time_pings(brpc_t *c, samples_t *s, int count)
{
    for (int i = 0; i < count; i++) {
        Spand__Request req = SPAND__REQUEST__INIT;
        Spand__Ping p = SPAND__PING__INIT;
        p.token = (uint64_t)i;
        req.body_case = SPAND__REQUEST__BODY_PING;
        req.ping = &p;
        uint64_t t0 = bench_now_ns();
        Spand__Response *r = brpc_call(c, &req);
        uint64_t t1 = bench_now_ns();
        bool ok = r && !r->error && r->body_case == SPAND__RESPONSE__BODY_PING;
        brpc_free(r);
        if (!ok)
            return false;
        s->ns[s->n++] = t1 - t0;
    }
    return true;
}

/* The bare baseline: a process that reads a framed request of any size and
 * answers with `reply` bytes, over a Unix stream socket, blocking. */
typedef struct {
    int fd, other;
    size_t reply;
} echo_arg_t;

static int echo_server(void *arg)
{
    echo_arg_t *e = arg;
    uint8_t buf[4096];
    close(e->other);   /* so that the client's close ends us */
    for (;;) {
        uint8_t hdr[4];
        if (brpc_read_all(e->fd, hdr, 4) != 0)
            return 0;
        uint32_t len = spand_frame_get_len(hdr);
        if (len > sizeof buf - 4 || brpc_read_all(e->fd, buf, len) != 0)
            return 1;
        size_t out = e->reply > 4 ? e->reply : 4;
        spand_frame_put_len(buf, (uint32_t)(out - 4));
        if (brpc_write_all(e->fd, buf, out) != 0)
            return 1;
    }
}

static bool time_echo(size_t req, size_t reply, samples_t *s, int count)
{
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0)
        return false;
    echo_arg_t e = {sv[1], sv[0], reply};
    int pid = bench_spawn(echo_server, &e);
    close(sv[1]);
    uint8_t buf[4096] = {0};
    if (req < 4)
        req = 4;
    if (req > sizeof buf || reply > sizeof buf)
        bench_die("echo: message too large");
    spand_frame_put_len(buf, (uint32_t)(req - 4));
    bool ok = true;
    for (int i = 0; i < count && ok; i++) {
        uint8_t in[4096];
        uint64_t t0 = bench_now_ns();
        ok = brpc_write_all(sv[0], buf, req) == 0 && brpc_read_all(sv[0], in, reply) == 0;
        s->ns[s->n++] = bench_now_ns() - t0;
    }
    close(sv[0]);
    bench_wait(pid, 5.0);
    return ok;
}

/* Allocation and free of a large object through libspanclient, end to end. */
static bool time_large_e2e(size_t size, samples_t *s, int count)
{
#ifdef BENCH_NO_SPAND
    (void)size, (void)s, (void)count;
    return false;
#else
    int rc = spc_attach(bench_opts.sock);
    if (rc != 0) {
        fprintf(stderr, "spanbench: spc_attach(%s): %s\n", bench_opts.sock, strerror(-rc));
        return false;
    }
    for (int i = 0; i < count; i++) {
        uint64_t t0 = bench_now_ns();
        char *p = spc_malloc(size);
        if (!p)
            return false;
        p[0] = 1;
        bench_escape(p);
        spc_free(p);
        s->ns[s->n++] = bench_now_ns() - t0;
    }
    spc_detach();
    return true;
#endif
}

void bench_w9_daemon(size_t size)
{
    (void)size;
    int n = bench_opts.rtt_count;
    brpc_t c;
    if (brpc_connect(&c, bench_opts.sock, true) != 0) {
        bench_skip(W_DAEMON, 0, "cannot open a session with spand");
        return;
    }
    samples_t refill = new_samples((size_t)n), la = new_samples((size_t)n),
              lf = new_samples((size_t)n), ping = new_samples((size_t)n),
              echo = new_samples((size_t)n), e2e = new_samples((size_t)n);
    size_t req = 0, resp = 0;
    unsigned cls = shm_size_to_class(64);
    /* warm the connection and the daemon's lists, then time */
    time_refills(&c, cls, &refill, n / 10 + 1, &req, &resp);
    refill.n = 0;
    if (time_refills(&c, cls, &refill, n, &req, &resp)) {
        report_rtt("refill", &refill);
        bench_result(W_DAEMON, 0, "refill_req_bytes", (double)req);
        bench_result(W_DAEMON, 0, "refill_reply_bytes", (double)resp);
        if (time_echo(req, resp, &echo, n))
            report_rtt("echo", &echo);
    } else {
        bench_skip(W_DAEMON, 0, "Refill round trips failed");
    }
    if (time_large(&c, 256 << 10, &la, &lf, n)) {
        report_rtt("alloc_large", &la);
        report_rtt("free_large", &lf);
    }
    if (time_pings(&c, &ping, n))
        report_rtt("ping", &ping);
    brpc_close(&c);
    if (time_large_e2e(256 << 10, &e2e, n))
        report_rtt("large_e2e", &e2e);
    free(refill.ns), free(la.ns), free(lf.ns), free(ping.ns), free(echo.ns), free(e2e.ns);
}

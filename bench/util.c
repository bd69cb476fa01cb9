/* spanbench helpers: output, child processes, rings, memory readings.
 * See bench/bench.h. */
#include "config.h"

#include <errno.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bench/bench.h"

/* ---- output ---- */

static const char *wname[W_COUNT] = {
    "", "w1", "w2", "w3", "w4", "w5", "w6", "w7", "w8", "w9",
};

void bench_result(int w, size_t size, const char *metric, double value)
{
    printf("R\t%s\t%s\t%zu\t%s\t%.6g\n", bench_opts.impl, wname[w], size, metric, value);
    fflush(stdout);
}

void bench_skip(int w, size_t size, const char *fmt, ...)
{
    char buf[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    printf("S\t%s\t%s\t%zu\t%s\n", bench_opts.impl, wname[w], size, buf);
    fflush(stdout);
}

void bench_note(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("# ", stdout);
    vprintf(fmt, ap);
    fputc('\n', stdout);
    va_end(ap);
    fflush(stdout);
}

void bench_die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("spanbench: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    fflush(stdout);
    _exit(2);
}

/* ---- processes ----
 * Every child we fork is in `pids` until it is reaped, so a signal or a
 * failure can kill them all.  Slots are written by the main thread and
 * read by the signal handler: sig_atomic_t-sized plain ints are enough. */

#define MAX_PIDS 64
static volatile int pids[MAX_PIDS];

void bench_register_pid(int pid)
{
    for (int i = 0; i < MAX_PIDS; i++)
        if (pids[i] == 0) {
            pids[i] = pid;
            return;
        }
}

void bench_unregister_pid(int pid)
{
    for (int i = 0; i < MAX_PIDS; i++)
        if (pids[i] == pid)
            pids[i] = 0;
}

static void kill_registered(void)
{
    for (int i = 0; i < MAX_PIDS; i++)
        if (pids[i] > 0)
            kill(pids[i], SIGKILL);
}

static void (*signal_cleanup)(void);

static void on_signal(int sig)
{
    kill_registered();
    if (signal_cleanup)
        signal_cleanup();
    static const char msg[] = "spanbench: interrupted, cleaned up\n";
    ssize_t r = write(2, msg, sizeof msg - 1);
    (void)r;
    _exit(128 + sig);
}

void bench_install_signals(void (*cleanup)(void))
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    signal_cleanup = cleanup;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGHUP, &sa, NULL);
    sigaction(SIGALRM, &sa, NULL);
}

/* In a child: die with the parent, and drop the parent's handlers. */
static void child_init(void)
{
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    signal(SIGINT, SIG_DFL);
    signal(SIGTERM, SIG_DFL);
    signal(SIGHUP, SIG_DFL);
    signal(SIGALRM, SIG_DFL);
    for (int i = 0; i < MAX_PIDS; i++)
        pids[i] = 0;
}

int bench_spawn(int (*fn)(void *), void *arg)
{
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid < 0)
        bench_die("fork: %s", strerror(errno));
    if (pid == 0) {
        child_init();
        int rc = fn(arg);
        fflush(stdout);
        fflush(stderr);
        _exit(rc);
    }
    bench_register_pid(pid);
    return pid;
}

int bench_wait(int pid, double secs)
{
    uint64_t deadline = bench_now_ns() + (uint64_t)(secs * 1e9);
    int status;
    for (;;) {
        pid_t r = waitpid(pid, &status, WNOHANG);
        if (r == pid)
            break;
        if (r < 0 && errno != EINTR) {
            bench_unregister_pid(pid);
            return -1;
        }
        if (bench_now_ns() > deadline) {
            fprintf(stderr, "spanbench: child %d still running after %.0f s: killed\n",
                    pid, secs);
            kill(pid, SIGKILL);
            waitpid(pid, &status, 0);
            bench_unregister_pid(pid);
            return -1;
        }
        usleep(2000);
    }
    bench_unregister_pid(pid);
    if (WIFEXITED(status))
        return WEXITSTATUS(status);
    fprintf(stderr, "spanbench: child %d died of signal %d\n", pid, WTERMSIG(status));
    return -1;
}

int bench_in_child(int (*fn)(void *), void *arg)
{
    return bench_wait(bench_spawn(fn, arg), bench_opts.timeout);
}

/* ---- shared memory and rings ---- */

void *bench_shared_map(size_t len)
{
    void *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
        bench_die("mmap %zu shared bytes: %s", len, strerror(errno));
    return p;
}

void bench_shared_unmap(void *p, size_t len)
{
    munmap(p, len);
}

static inline void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}

void bench_meet(bench_gate_t *g, int n)
{
    atomic_fetch_add(&g->ready, 1);
    while (atomic_load(&g->ready) < n)
        sched_yield();
}

/* Spins, then yields: two cores are shared with everything else. */
static void backoff(unsigned *spins)
{
    if (++*spins < 64)
        cpu_relax();
    else
        sched_yield();
}

void bench_ring_put(bench_ring_t *r, uint64_t v)
{
    uint64_t h = r->head_priv;
    if (h - r->tail_seen >= BENCH_RING) {
        unsigned spins = 0;
        atomic_store_explicit(&r->head, h, memory_order_release);
        for (;;) {
            r->tail_seen = atomic_load_explicit(&r->tail, memory_order_acquire);
            if (h - r->tail_seen < BENCH_RING)
                break;
            r->full_waits += spins == 0;
            backoff(&spins);
        }
    }
    r->slot[h % BENCH_RING] = v;
    r->head_priv = ++h;
    if (h % BENCH_RING_PUBLISH == 0)
        atomic_store_explicit(&r->head, h, memory_order_release);
}

void bench_ring_close(bench_ring_t *r)
{
    atomic_store_explicit(&r->head, r->head_priv, memory_order_release);
    atomic_store_explicit(&r->stop, 1, memory_order_release);
}

bool bench_ring_get(bench_ring_t *r, uint64_t *v)
{
    uint64_t t = r->tail_priv;
    if (r->head_seen == t) {
        unsigned spins = 0;
        atomic_store_explicit(&r->tail, t, memory_order_release);
        for (;;) {
            r->head_seen = atomic_load_explicit(&r->head, memory_order_acquire);
            if (r->head_seen != t)
                break;
            if (atomic_load_explicit(&r->stop, memory_order_acquire) &&
                (r->head_seen = atomic_load_explicit(&r->head, memory_order_acquire)) == t)
                return false;
            r->empty_waits += spins == 0;
            backoff(&spins);
        }
    }
    *v = r->slot[t % BENCH_RING];
    r->tail_priv = ++t;
    if (t % BENCH_RING_PUBLISH == 0)
        atomic_store_explicit(&r->tail, t, memory_order_release);
    return true;
}

/* ---- memory readings ---- */

static uint64_t status_kb(const char *path, const char *key)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return 0;
    char line[256];
    size_t klen = strlen(key);
    uint64_t kb = 0;
    while (fgets(line, sizeof line, f))
        if (strncmp(line, key, klen) == 0) {
            kb = strtoull(line + klen, NULL, 10);
            break;
        }
    fclose(f);
    return kb;
}

uint64_t bench_rss_bytes(void)
{
    return status_kb("/proc/self/status", "VmRSS:") * 1024;
}

uint64_t bench_rss_anon_bytes(void)
{
    return status_kb("/proc/self/status", "RssAnon:") * 1024;
}

uint64_t bench_proc_cpu_ns(int pid)
{
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%d/stat", pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return 0;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    /* fields after the ")" of comm: state(3) ... utime(14) stime(15) */
    char *p = strrchr(buf, ')');
    if (!p)
        return 0;
    unsigned long long ut = 0, st = 0;
    if (sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut, &st) != 2)
        return 0;
    long hz = sysconf(_SC_CLK_TCK);
    return (ut + st) * (1000000000ull / (uint64_t)hz);
}

/* ---- percentiles ---- */

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

double bench_percentile(uint64_t *v, size_t n, double q)
{
    if (n == 0)
        return 0;
    qsort(v, n, sizeof *v, cmp_u64);
    size_t i = (size_t)(q * (double)(n - 1) + 0.5);
    return (double)v[i < n ? i : n - 1];
}

int bench_parse_list(const char *s, size_t *out, int max)
{
    int n = 0;
    char *copy = strdup(s), *save = NULL;
    for (char *t = strtok_r(copy, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        char *end;
        unsigned long long v = strtoull(t, &end, 10);
        if (*end == 'K' || *end == 'k')
            v <<= 10, end++;
        if (*end || v == 0 || n == max) {
            free(copy);
            return -1;
        }
        out[n++] = (size_t)v;
    }
    free(copy);
    return n;
}

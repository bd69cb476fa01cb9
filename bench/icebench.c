/* icebench: iceoryx chunk loan/release through its C binding, the
 * zero-copy shared-memory comparator of spand.  Same output as spanbench
 * (bench/bench.h).  It starts its own RouDi (iox-roudi, with
 * bench/roudi.toml: a pool for every benchmark size) and stops it at the
 * end, on failure and on SIGINT/SIGTERM.
 *
 * What maps to what:
 *   w1  loan + release on one publisher            (alloc + free)
 *   w3  two threads, a publisher each, w1 loops
 *   w4  publisher thread loans + publishes, subscriber thread takes + releases
 *   w5  the same with two processes
 *   w6  two processes, w1 loops
 * w2 (10,000 live objects) cannot be expressed: a publisher holds at most
 * 8 loans at a time (IOX_MAX_CHUNKS_ALLOCATED_PER_PUBLISHER_SIMULTANEOUSLY).
 * w7 and w8 do not apply: RouDi preallocates fixed pools at start and
 * never grows or returns them.
 *
 *   icebench [--workloads LIST] [--sizes LIST] [--reps N] [--secs S]
 *            [--quick] [--roudi PATH] [--config FILE] [--timeout S]
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <iceoryx_binding_c/chunk.h>
#include <iceoryx_binding_c/log.h>
#include <iceoryx_binding_c/publisher.h>
#include <iceoryx_binding_c/runtime.h>
#include <iceoryx_binding_c/subscriber.h>

#include "bench/bench.h"

bench_opts_t bench_opts = {
    .impl = "iceoryx",
    .secs = 0.2,
    .reps = 5,
    .workloads = ~0u,
    .sizes = {16, 64, 256, 1024, 4096, 16384, 262144},
    .nsizes = 7,
    .timeout = 60,
};

static const char *roudi_bin = "iox-roudi";
static const char *roudi_config;
static int roudi_pid;
static char roudi_log[64];
static unsigned instance;   /* service instance per measurement */

/* ---- RouDi ---- */

static int exec_roudi(void *arg)
{
    (void)arg;
    int fd = open(roudi_log, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (fd >= 0) {
        dup2(fd, 1);
        dup2(fd, 2);
    }
    const char *argv[] = {roudi_bin, "-m", "off", "-l", "info", "-c", roudi_config, NULL};
    execvp(roudi_bin, (char **)argv);
    fprintf(stderr, "exec %s: %s\n", roudi_bin, strerror(errno));
    return 127;
}

static bool log_has(const char *what)
{
    FILE *f = fopen(roudi_log, "r");
    if (!f)
        return false;
    char line[512];
    bool found = false;
    while (!found && fgets(line, sizeof line, f))
        found = strstr(line, what) != NULL;
    fclose(f);
    return found;
}

static void show_log(void)
{
    FILE *f = fopen(roudi_log, "r");
    if (!f)
        return;
    char line[512];
    while (fgets(line, sizeof line, f))
        fprintf(stderr, "  roudi: %s", line);
    fclose(f);
}

static void roudi_stop(void)
{
    if (roudi_pid > 0) {
        kill(roudi_pid, SIGTERM);
        if (bench_wait(roudi_pid, 10.0) != 0)
            show_log();
        roudi_pid = 0;
    }
    if (roudi_log[0])
        unlink(roudi_log);
    roudi_log[0] = 0;
}

static void roudi_cleanup_signal(void)
{
    if (roudi_pid > 0)
        kill(roudi_pid, SIGTERM);   /* RouDi removes its own shared memory */
    if (roudi_log[0])
        unlink(roudi_log);
}

static int roudi_start(void)
{
    if (access("/dev/shm/iceoryx_mgmt", F_OK) == 0) {
        fprintf(stderr, "icebench: another RouDi is running (/dev/shm/iceoryx_mgmt exists); "
                        "iceoryx allows one per host\n");
        return -1;
    }
    snprintf(roudi_log, sizeof roudi_log, "/tmp/icebench-roudi-%d.log", (int)getpid());
    roudi_pid = bench_spawn(exec_roudi, NULL);
    uint64_t deadline = bench_now_ns() + 15 * 1000000000ull;
    while (bench_now_ns() < deadline) {
        if (log_has("RouDi is ready for clients"))
            return 0;
        int status;
        if (waitpid(roudi_pid, &status, WNOHANG) == roudi_pid) {
            bench_unregister_pid(roudi_pid);
            roudi_pid = 0;
            fprintf(stderr, "icebench: RouDi exited at start-up\n");
            show_log();
            roudi_stop();
            return -1;
        }
        usleep(20000);
    }
    fprintf(stderr, "icebench: RouDi not ready within 15 s\n");
    show_log();
    roudi_stop();
    return -1;
}

/* ---- endpoints ---- */

static void runtime(const char *role)
{
    char name[64];
    snprintf(name, sizeof name, "icebench-%s-%d", role, (int)getpid());
    iox_set_loglevel(Iceoryx_LogLevel_Warn);
    iox_runtime_init(name);
}

static iox_pub_t publisher(iox_pub_storage_t *st, const char *event, bool blocking)
{
    iox_pub_options_t o;
    iox_pub_options_init(&o);
    if (blocking)
        o.subscriberTooSlowPolicy = ConsumerTooSlowPolicy_WAIT_FOR_CONSUMER;
    char inst[32];
    snprintf(inst, sizeof inst, "i%u", instance);
    return iox_pub_init(st, "icebench", inst, event, &o);
}

static iox_sub_t subscriber(iox_sub_storage_t *st, const char *event)
{
    iox_sub_options_t o;
    iox_sub_options_init(&o);
    o.queueCapacity = 256;
    o.queueFullPolicy = QueueFullPolicy_BLOCK_PRODUCER;
    char inst[32];
    snprintf(inst, sizeof inst, "i%u", instance);
    return iox_sub_init(st, "icebench", inst, event, &o);
}

static void *loan(iox_pub_t p, size_t size)
{
    void *chunk = NULL;
    enum iox_AllocationResult r;
    unsigned spins = 0;
    /* the pool is shared with the consumer's queue: wait for returns */
    while ((r = iox_pub_loan_chunk(p, &chunk, (uint32_t)size)) == AllocationResult_RUNNING_OUT_OF_CHUNKS)
        if (++spins > 64)
            sched_yield();
    if (r != AllocationResult_SUCCESS)
        bench_die("iox_pub_loan_chunk(%zu): result %d", size, (int)r);
    *(volatile char *)chunk = 1;
    bench_escape(chunk);
    return chunk;
}

static uint64_t loan_release(iox_pub_t p, size_t size, double secs, uint64_t *ns)
{
    uint64_t ops = 0, t0 = bench_now_ns(), end = t0 + (uint64_t)(secs * 1e9), t;
    do {
        for (int i = 0; i < 1024; i++)
            iox_pub_release_chunk(p, loan(p, size));
        ops += 1024;
        t = bench_now_ns();
    } while (t < end);
    *ns = t - t0;
    return ops;
}

/* ---- the workloads ---- */

static void w1(size_t size)
{
    runtime("w1");
    iox_pub_storage_t st;
    iox_pub_t p = publisher(&st, "w1", false);
    uint64_t ns;
    loan_release(p, size, bench_opts.secs / 5, &ns);
    uint64_t ops = loan_release(p, size, bench_opts.secs, &ns);
    bench_result(W_IMMEDIATE, size, "ops", (double)ops * 1e9 / (double)ns);
    iox_pub_deinit(p);
    iox_runtime_shutdown();
}

typedef struct {
    size_t size;
    int id;
    bench_gate_t *gate;
    uint64_t ops, ns;
} thr_t;

static void gate_wait(bench_gate_t *g)
{
    atomic_fetch_add(&g->ready, 1);
    while (!atomic_load(&g->go))
        sched_yield();
}

static void gate_open(bench_gate_t *g, int n)
{
    uint64_t deadline = bench_now_ns() + (uint64_t)(bench_opts.timeout * 1e9);
    while (atomic_load(&g->ready) < n && bench_now_ns() < deadline)
        usleep(1000);
    atomic_store(&g->go, 1);
}

static void *w3_thread(void *arg)
{
    thr_t *t = arg;
    iox_pub_storage_t st;
    char ev[16];
    snprintf(ev, sizeof ev, "w3t%d", t->id);
    iox_pub_t p = publisher(&st, ev, false);
    uint64_t ns;
    loan_release(p, t->size, bench_opts.secs / 5, &ns);
    gate_wait(t->gate);
    t->ops = loan_release(p, t->size, bench_opts.secs, &t->ns);
    iox_pub_deinit(p);
    return NULL;
}

static void w3(size_t size)
{
    runtime("w3");
    bench_gate_t g = {0};
    thr_t t[2] = {{size, 0, &g, 0, 0}, {size, 1, &g, 0, 0}};
    pthread_t th[2];
    for (int i = 0; i < 2; i++)
        pthread_create(&th[i], NULL, w3_thread, &t[i]);
    gate_open(&g, 2);
    for (int i = 0; i < 2; i++)
        pthread_join(th[i], NULL);
    uint64_t ns = t[0].ns > t[1].ns ? t[0].ns : t[1].ns;
    bench_result(W_THREADS, size, "ops", (double)(t[0].ops + t[1].ops) * 1e9 / (double)ns);
    iox_runtime_shutdown();
}

/* Workloads 4 and 5 run the exchange twice, as bench/wl.h does for the
 * other allocators: a warm-up for a fifth of the time, untimed, then the
 * timed part, begun when both sides have met at `met`.
 *
 * Producer: loan + publish for the warm-up, then for `secs`; after each
 * part one empty chunk (size 0 is refused, so a chunk whose first word is
 * 0) says the part is over. */
static void produce(size_t size, bench_gate_t *g, bench_gate_t *met)
{
    iox_pub_storage_t st;
    iox_pub_t p = publisher(&st, "pc", true);
    /* wait until the subscriber is connected, so that nothing is lost */
    uint64_t deadline = bench_now_ns() + 10 * 1000000000ull;
    while (!iox_pub_has_subscribers(p) && bench_now_ns() < deadline)
        usleep(1000);
    gate_wait(g);
    size_t sz = size < 8 ? 8 : size;
    uint64_t end = 0;
    for (int part = 0; part < 2; part++) {
        if (part == 1)
            bench_meet(met, 2);
        end = bench_now_ns() + (uint64_t)(bench_opts.secs / (part ? 1 : 5) * 1e9);
        do {
            for (int i = 0; i < 1024; i++) {
                uint64_t *c = loan(p, sz);
                c[0] = 1;
                iox_pub_publish_chunk(p, c);
            }
        } while (bench_now_ns() < end);
        uint64_t *c = loan(p, sz);
        c[0] = 0;
        iox_pub_publish_chunk(p, c);
    }
    /* keep the publisher until the consumer had everything */
    while (atomic_load(&g->done) == 0 && bench_now_ns() < end + 10 * 1000000000ull)
        usleep(1000);
    iox_pub_deinit(p);
}

/* Take + release until a part's empty chunk; the chunks taken, or
 * UINT64_MAX when nothing came for the timeout. */
static uint64_t consume_part(iox_sub_t s)
{
    uint64_t n = 0, t0 = bench_now_ns();
    unsigned spins = 0;
    for (;;) {
        const void *c;
        if (iox_sub_take_chunk(s, &c) != ChunkReceiveResult_SUCCESS) {
            if (++spins > 64)
                sched_yield();
            if (bench_now_ns() - t0 > (uint64_t)(bench_opts.timeout * 1e9))
                return UINT64_MAX;
            continue;
        }
        spins = 0;
        uint64_t v = *(const uint64_t *)c;
        iox_sub_release_chunk(s, c);
        if (v == 0)
            return n;
        n++;
    }
}

static uint64_t consume(bench_gate_t *g, bench_gate_t *met, uint64_t *ns)
{
    iox_sub_storage_t st;
    iox_sub_t s = subscriber(&st, "pc");
    gate_wait(g);
    uint64_t n = consume_part(s);
    if (n != UINT64_MAX)
        bench_meet(met, 2);             /* else the producer is gone: no wait */
    uint64_t t0 = bench_now_ns();
    if (n != UINT64_MAX)
        n = consume_part(s);
    *ns = bench_now_ns() - t0;
    atomic_store(&g->done, 1);
    iox_sub_deinit(s);
    return n == UINT64_MAX ? 0 : n;
}

typedef struct {
    size_t size;
    bench_gate_t gate;
    bench_gate_t met;           /* workloads 4 and 5: the warm-up is over */
    _Atomic uint64_t ops[2], ns[2];
} shared_t;

static void *w4_producer(void *arg)
{
    shared_t *sh = arg;
    produce(sh->size, &sh->gate, &sh->met);
    return NULL;
}

static void *w4_consumer(void *arg)
{
    shared_t *sh = arg;
    uint64_t ns;
    sh->ops[1] = consume(&sh->gate, &sh->met, &ns);
    sh->ns[1] = ns;
    return NULL;
}

static void w4(size_t size)
{
    runtime("w4");
    shared_t sh = {.size = size};
    pthread_t th[2];
    pthread_create(&th[0], NULL, w4_consumer, &sh);
    pthread_create(&th[1], NULL, w4_producer, &sh);
    gate_open(&sh.gate, 2);
    pthread_join(th[0], NULL);
    pthread_join(th[1], NULL);
    bench_result(W_XTHREAD, size, "ops", (double)sh.ops[1] * 1e9 / (double)sh.ns[1]);
    iox_runtime_shutdown();
}

/* ---- two processes ---- */

static shared_t *shm;

static int w5_worker(void *arg)
{
    int id = (int)(intptr_t)arg;
    runtime(id ? "w5c" : "w5p");
    if (id == 0) {
        produce(shm->size, &shm->gate, &shm->met);
    } else {
        uint64_t ns;
        shm->ops[1] = consume(&shm->gate, &shm->met, &ns);
        shm->ns[1] = ns;
    }
    iox_runtime_shutdown();
    exit(0);
}

static int w6_worker(void *arg)
{
    int id = (int)(intptr_t)arg;
    runtime(id ? "w6b" : "w6a");
    iox_pub_storage_t st;
    iox_pub_t p = publisher(&st, id ? "w6b" : "w6a", false);
    uint64_t ns;
    loan_release(p, shm->size, bench_opts.secs / 5, &ns);
    gate_wait(&shm->gate);
    shm->ops[id] = loan_release(p, shm->size, bench_opts.secs, &ns);
    shm->ns[id] = ns;
    iox_pub_deinit(p);
    iox_runtime_shutdown();
    exit(0);
}

static void two_procs(int w, size_t size)
{
    shm = bench_shared_map(sizeof *shm);
    shm->size = size;
    int pid[2];
    for (int i = 0; i < 2; i++)
        pid[i] = bench_spawn(w == W_XPROC ? w5_worker : w6_worker, (void *)(intptr_t)i);
    gate_open(&shm->gate, 2);
    bool ok = bench_wait(pid[0], bench_opts.timeout) == 0;
    ok = bench_wait(pid[1], bench_opts.timeout) == 0 && ok;
    if (!ok)
        bench_skip(w, size, "a worker process failed");
    else if (w == W_XPROC)
        bench_result(w, size, "ops", (double)shm->ops[1] * 1e9 / (double)shm->ns[1]);
    else
        bench_result(w, size, "ops", (double)(shm->ops[0] + shm->ops[1]) * 1e9 /
                                         (double)(shm->ns[0] > shm->ns[1] ? shm->ns[0] : shm->ns[1]));
    bench_shared_unmap(shm, sizeof *shm);
}

static void w5(size_t size) { two_procs(W_XPROC, size); }
static void w6(size_t size) { two_procs(W_PROCS, size); }

static void (*const runs[W_COUNT])(size_t) = {
    [W_IMMEDIATE] = w1, [W_THREADS] = w3, [W_XTHREAD] = w4,
    [W_XPROC] = w5, [W_PROCS] = w6,
};

static const char *why_not[W_COUNT] = {
    [W_BATCH] = "a publisher holds at most 8 loans at a time",
    [W_MEMORY] = "RouDi preallocates fixed pools; nothing to measure per object",
    [W_SCAVENGE] = "RouDi preallocates fixed pools and never returns them",
    [W_DAEMON] = "no allocation round trips: RouDi is not on the loan path",
};

typedef struct {
    int w;
    size_t size;
} job_t;

/* Children leave through exit(), not _exit(): the iceoryx runtime's
 * destructor unregisters from RouDi and removes its socket files. */
static int run_job(void *arg)
{
    job_t *j = arg;
    runs[j->w](j->size);
    fflush(stdout);
    exit(0);
}

static void usage(FILE *f)
{
    fputs("usage: icebench --config FILE [--roudi PATH] [--workloads LIST] [--sizes LIST]\n"
          "                [--reps N] [--secs S] [--quick] [--timeout S]\n", f);
}

int main(int argc, char **argv)
{
    static const struct option lo[] = {
        {"workloads", required_argument, 0, 'w'}, {"sizes", required_argument, 0, 's'},
        {"reps", required_argument, 0, 'r'},      {"secs", required_argument, 0, 't'},
        {"quick", no_argument, 0, 'q'},           {"roudi", required_argument, 0, 'R'},
        {"config", required_argument, 0, 'c'},    {"timeout", required_argument, 0, 'T'},
        {"help", no_argument, 0, 'h'},            {0, 0, 0, 0},
    };
    int c;
    while ((c = getopt_long(argc, argv, "w:s:r:t:c:h", lo, NULL)) != -1) {
        switch (c) {
        case 'w': {
            if (strcmp(optarg, "all") == 0)
                break;
            size_t w[W_COUNT];
            int n = bench_parse_list(optarg, w, W_COUNT);
            if (n <= 0)
                bench_die("bad --workloads '%s'", optarg);
            bench_opts.workloads = 0;
            for (int i = 0; i < n; i++)
                bench_opts.workloads |= 1u << w[i];
            break;
        }
        case 's':
            bench_opts.nsizes = bench_parse_list(optarg, bench_opts.sizes, BENCH_MAX_SIZES);
            if (bench_opts.nsizes <= 0)
                bench_die("bad --sizes '%s'", optarg);
            break;
        case 'r': bench_opts.reps = atoi(optarg); break;
        case 't': bench_opts.secs = atof(optarg); break;
        case 'q': bench_opts.secs = 0.03; bench_opts.reps = 1; break;
        case 'R': roudi_bin = optarg; break;
        case 'c': roudi_config = optarg; break;
        case 'T': bench_opts.timeout = atof(optarg); break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (!roudi_config || bench_opts.reps < 1 || bench_opts.secs <= 0) {
        usage(stderr);
        return 2;
    }
    setvbuf(stdout, NULL, _IOLBF, 0);
    bench_install_signals(roudi_cleanup_signal);
    bench_note("icebench iceoryx C binding, RouDi %s -c %s", roudi_bin, roudi_config);
    if (roudi_start() != 0)
        return 1;
    int failures = 0;
    for (int w = 1; w < W_COUNT; w++) {
        if (!(bench_opts.workloads & (1u << w)))
            continue;
        if (!runs[w]) {
            bench_skip(w, 0, "%s", why_not[w] ? why_not[w] : "not offered");
            continue;
        }
        for (int r = 0; r < bench_opts.reps; r++)
            for (int i = 0; i < bench_opts.nsizes; i++) {
                job_t j = {w, bench_opts.sizes[i]};
                instance++;
                if (bench_in_child(run_job, &j) != 0) {
                    bench_skip(w, j.size, "measurement failed");
                    failures++;
                }
            }
    }
    roudi_stop();
    return failures ? 1 : 0;
}

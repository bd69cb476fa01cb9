/* spanbench: measure one allocator on the workloads of bench/bench.h.
 *
 *   spanbench [--alloc malloc|spand|stub] [--impl LABEL] [--workloads LIST|all]
 *             [--sizes LIST] [--reps N] [--secs S] [--quick]
 *             [--spand PATH] [--arena-size SIZE] [--scavenge-interval S]
 *             [--scav-sizes LIST] [--scav-wait S] [--rtt N] [--timeout S] [-v]
 *
 * --alloc malloc measures whatever malloc the process has (run it under
 * LD_PRELOAD for jemalloc, mimalloc or tcmalloc); --alloc spand starts a
 * private spand, measures libspanclient, and stops the daemon and removes
 * its socket and arena at the end, on failure and on SIGINT/SIGTERM;
 * --alloc stub runs workloads 1, 2, 4, 5 and 6 on an allocator that does
 * nothing (bench/stub.c): each workload's own cost.
 * bench/run-bench.sh runs it for every allocator; see bench/README.md.
 */
#include "config.h"

#include <dlfcn.h>
#include <getopt.h>
#include <libgen.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/utsname.h>
#include <unistd.h>

#include "bench/bench.h"

bench_opts_t bench_opts = {
    .secs = 0.2,
    .reps = 5,
    .workloads = ~0u,
    .sizes = {16, 64, 256, 1024, 4096, 16384, 262144},
    .nsizes = 7,
    .scav_sizes = {256, 262144},
    .nscav_sizes = 2,
    .scav_wait = 2.0,
    .rtt_count = 2000,
    .timeout = 120,
    .arena_size = "8G",
    .scavenge_interval = 1,
};

static const bench_alloc_t *alloc;

static void usage(FILE *f)
{
    fputs("usage: spanbench [--alloc malloc|spand|stub] [--impl LABEL] [--workloads 1,2,..|all]\n"
          "                 [--sizes 16,64,..] [--reps N] [--secs S] [--quick]\n"
          "                 [--spand PATH] [--arena-size SIZE] [--scavenge-interval S]\n"
          "                 [--scav-sizes LIST] [--scav-wait S] [--rtt N] [--timeout S] [-v]\n",
          f);
}

/* Which malloc this process got: the one LD_PRELOAD put first, else glibc. */
static const char *malloc_name(void)
{
    if (dlsym(RTLD_DEFAULT, "mallctl"))
        return "jemalloc";
    if (dlsym(RTLD_DEFAULT, "mi_version"))
        return "mimalloc";
    if (dlsym(RTLD_DEFAULT, "tc_version"))
        return "tcmalloc";
    return "glibc";
}

static void default_spand_bin(void)
{
    static char path[PATH_MAX];
    const char *env = getenv("SPAND_BIN");
    if (env && *env) {
        bench_opts.spand_bin = env;
        return;
    }
    char self[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    if (n <= 0) {
        bench_opts.spand_bin = "spand";
        return;
    }
    self[n] = 0;
    snprintf(path, sizeof path, "%s/../daemon/spand", dirname(self));
    bench_opts.spand_bin = path;
}

static void parse_args(int argc, char **argv)
{
    enum { O_IMPL = 256, O_SPAND, O_ARENA, O_SCAVI, O_SCAVS, O_SCAVW, O_RTT, O_TIMEOUT, O_QUICK };
    static const struct option lo[] = {
        {"alloc", required_argument, 0, 'a'},
        {"impl", required_argument, 0, O_IMPL},
        {"workloads", required_argument, 0, 'w'},
        {"sizes", required_argument, 0, 's'},
        {"reps", required_argument, 0, 'r'},
        {"secs", required_argument, 0, 't'},
        {"quick", no_argument, 0, O_QUICK},
        {"spand", required_argument, 0, O_SPAND},
        {"arena-size", required_argument, 0, O_ARENA},
        {"scavenge-interval", required_argument, 0, O_SCAVI},
        {"scav-sizes", required_argument, 0, O_SCAVS},
        {"scav-wait", required_argument, 0, O_SCAVW},
        {"rtt", required_argument, 0, O_RTT},
        {"timeout", required_argument, 0, O_TIMEOUT},
        {"verbose", no_argument, 0, 'v'},
        {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0},
    };
    const char *which = "malloc";
    int c;
    default_spand_bin();
    while ((c = getopt_long(argc, argv, "a:w:s:r:t:vh", lo, NULL)) != -1) {
        switch (c) {
        case 'a': which = optarg; break;
        case O_IMPL: bench_opts.impl = optarg; break;
        case 'w':
            if (strcmp(optarg, "all") == 0) {
                bench_opts.workloads = ~0u;
            } else {
                size_t w[W_COUNT];
                int n = bench_parse_list(optarg, w, W_COUNT);
                if (n <= 0)
                    bench_die("bad --workloads '%s' (numbers 1..%d)", optarg, W_COUNT - 1);
                bench_opts.workloads = 0;
                for (int i = 0; i < n; i++) {
                    if (w[i] >= W_COUNT)
                        bench_die("no workload %zu (1..%d)", w[i], W_COUNT - 1);
                    bench_opts.workloads |= 1u << w[i];
                }
            }
            break;
        case 's':
            bench_opts.nsizes = bench_parse_list(optarg, bench_opts.sizes, BENCH_MAX_SIZES);
            if (bench_opts.nsizes <= 0)
                bench_die("bad --sizes '%s'", optarg);
            break;
        case O_SCAVS:
            bench_opts.nscav_sizes = bench_parse_list(optarg, bench_opts.scav_sizes, BENCH_MAX_SIZES);
            if (bench_opts.nscav_sizes <= 0)
                bench_die("bad --scav-sizes '%s'", optarg);
            break;
        case 'r':
            bench_opts.reps = atoi(optarg);
            if (bench_opts.reps < 1)
                bench_die("bad --reps '%s'", optarg);
            break;
        case 't':
            bench_opts.secs = atof(optarg);
            if (bench_opts.secs <= 0)
                bench_die("bad --secs '%s'", optarg);
            break;
        case O_QUICK:
            bench_opts.secs = 0.03;
            bench_opts.reps = 1;
            bench_opts.nscav_sizes = 1;
            bench_opts.scav_sizes[0] = 262144;
            bench_opts.scav_wait = 1.0;
            bench_opts.rtt_count = 200;
            break;
        case O_SPAND: bench_opts.spand_bin = optarg; break;
        case O_ARENA: bench_opts.arena_size = optarg; break;
        case O_SCAVI: bench_opts.scavenge_interval = atoi(optarg); break;
        case O_SCAVW: bench_opts.scav_wait = atof(optarg); break;
        case O_RTT:
            bench_opts.rtt_count = atoi(optarg);
            if (bench_opts.rtt_count < 10)
                bench_die("bad --rtt '%s' (at least 10)", optarg);
            break;
        case O_TIMEOUT: bench_opts.timeout = atof(optarg); break;
        case 'v': bench_opts.verbose = true; break;
        case 'h': usage(stdout); exit(0);
        default: usage(stderr); exit(2);
        }
    }
    if (optind != argc) {
        usage(stderr);
        exit(2);
    }
    if (strcmp(which, "spand") == 0) {
#ifdef BENCH_NO_SPAND
        bench_die("this spanbench was built without libspanclient");
#else
        alloc = &bench_alloc_spand;
#endif
        bench_opts.spand = true;
        if (!bench_opts.impl)
            bench_opts.impl = "spand";
    } else if (strcmp(which, "malloc") == 0) {
        alloc = &bench_alloc_libc;
        if (!bench_opts.impl)
            bench_opts.impl = malloc_name();
    } else if (strcmp(which, "stub") == 0) {
        alloc = &bench_alloc_stub;
        if (!bench_opts.impl)
            bench_opts.impl = "stub";
    } else {
        bench_die("unknown --alloc '%s' (malloc, spand or stub)", which);
    }
}

typedef struct {
    int w;
    size_t size;
} job_t;

static int run_job(void *arg)
{
    job_t *j = arg;
    alloc->run[j->w](j->size);
    return 0;
}

/* The sizes a workload runs at. */
static int sizes_of(int w, const size_t **sizes)
{
    static const size_t mem_sizes[] = {24, 8};
    static const size_t none[] = {0};
    switch (w) {
    case W_MEMORY: *sizes = mem_sizes; return 2;
    case W_SCAVENGE: *sizes = bench_opts.scav_sizes; return bench_opts.nscav_sizes;
    case W_DAEMON: *sizes = none; return 1;
    default: *sizes = bench_opts.sizes; return bench_opts.nsizes;
    }
}

int main(int argc, char **argv)
{
    parse_args(argc, argv);
    setvbuf(stdout, NULL, _IOLBF, 0);
    bench_install_signals(bench_opts.spand ? bench_daemon_cleanup_signal : NULL);
#ifdef BENCH_NO_SPAND
    bench_note("built without libspanclient: spand rows are missing");
#endif
    struct utsname u;
    uname(&u);
    bench_note("spanbench impl=%s secs=%g reps=%d kernel=%s", bench_opts.impl,
               bench_opts.secs, bench_opts.reps, u.release);
    if (bench_opts.spand && bench_daemon_start() != 0)
        return 1;

    int failures = 0;
    for (int w = 1; w < W_COUNT; w++) {
        if (!(bench_opts.workloads & (1u << w)))
            continue;
        const size_t *sizes;
        int ns = sizes_of(w, &sizes);
        if (!alloc->run[w]) {
            bench_skip(w, 0, "%s", w == W_XPROC ? "process-local: no process can free another's objects"
                                   : w == W_DAEMON ? "no daemon" : "not offered");
            continue;
        }
        for (int r = 0; r < bench_opts.reps; r++)
            for (int i = 0; i < ns; i++) {
                /* memory from a cold arena: a daemon that earlier workloads
                 * grew has the metadata of its pages backed already */
                if (bench_opts.spand && w == W_MEMORY) {
                    bench_daemon_stop();
                    if (bench_daemon_start() != 0)
                        return 1;
                }
                job_t j = {w, sizes[i]};
                int rc = bench_in_child(run_job, &j);
                if (rc != 0) {
                    bench_skip(w, sizes[i], "measurement failed (status %d)", rc);
                    failures++;
                }
            }
    }
    if (bench_opts.spand)
        bench_daemon_stop();
    return failures ? 1 : 0;
}

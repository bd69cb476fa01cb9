/* The workloads of bench/wl.h on spc_malloc/spc_free, against the private
 * daemon that spanbench started (bench/daemon.c).  Each measurement process
 * attaches afresh; a second, raw connection (bench/rpc.c) reads the
 * daemon's counters and holds the arena's fd, whose st_blocks is what the
 * arena costs the system. */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include <spanclient.h>

#include "bench/bench.h"
#include "bench/rpc.h"

static brpc_t ctl = {.ctl = {.fd = -1, .arena_fd = -1}};

static int spand_setup(void)
{
    int rc = spc_attach(bench_opts.sock);
    if (rc != 0) {
        fprintf(stderr, "spanbench: spc_attach(%s): %s\n", bench_opts.sock, strerror(-rc));
        return -1;
    }
    if (brpc_connect(&ctl, bench_opts.sock, true) != 0 || ctl.ctl.arena_fd < 0) {
        fprintf(stderr, "spanbench: no control session with spand (or no arena fd)\n");
        spc_detach();
        return -1;
    }
    return 0;
}

static void spand_teardown(void)
{
    spc_detach();
    brpc_close(&ctl);
}

static int64_t spand_refills(void)
{
    Spand__Response *r = brpc_stats(&ctl);
    if (!r)
        return -1;
    int64_t n = brpc_counter(r->stats, "refills");
    brpc_free(r);
    return n;
}

/* The arena's resident bytes (what tmpfs holds for it) plus this process's
 * private memory (thread caches and anything else the library keeps). */
static uint64_t spand_footprint(void)
{
    struct stat st;
    if (fstat(ctl.ctl.arena_fd, &st) != 0)
        bench_die("fstat of the arena: %s", strerror(errno));
    return (uint64_t)st.st_blocks * 512 + bench_rss_anon_bytes();
}

static int spand_scavenge(void)
{
    Spand__Request req = SPAND__REQUEST__INIT;
    Spand__Scavenge s = SPAND__SCAVENGE__INIT;
    req.body_case = SPAND__REQUEST__BODY_SCAVENGE;
    req.scavenge = &s;
    Spand__Response *r = brpc_call(&ctl, &req);
    int rc = r && !r->error ? 0 : -1;
    brpc_free(r);
    return rc;
}

#define WL(name) spand_##name
#define WL_EXPORT bench_alloc_spand
#define WL_LABEL "spand"
#define WL_ALLOC(n) spc_malloc(n)
#define WL_FREE(p) spc_free(p)
#define WL_SETUP() spand_setup()
#define WL_TEARDOWN() spand_teardown()
#define WL_FOOTPRINT() spand_footprint()
#define WL_REFILLS() spand_refills()
#define WL_TRIM() spand_scavenge()
#define WL_DAEMON_PID() bench_daemon_pid()
#define WL_CROSS_PROCESS
#define WL_TO_WIRE(p) spc_offset(p)
#define WL_FROM_WIRE(v) spc_pointer(v)
#define WL_DAEMON_WORKLOAD bench_w9_daemon

#include "bench/wl.h"

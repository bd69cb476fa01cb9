/* The harness's own cost: a stand-in for an allocator that does no work, in
 * a shared library of its own so that each call crosses a PLT entry as every
 * allocator's does (bench/wl_stub.c, bench/README.md).  Every allocation
 * gets the same buffer back; a free does nothing.  What it reads in each
 * throughput workload (all but workload 3, whose two threads would share
 * the buffer's line) is the rate no allocator can beat there on this
 * machine. */
#include "config.h"

#include <stddef.h>

#include "bench/bench.h"

#define STUB_BYTES (256u << 10)   /* the largest size spanbench asks for */

static unsigned char stub_buf[STUB_BYTES] __attribute__((aligned(4096)));

__attribute__((visibility("default"))) void *bench_stub_malloc(size_t n)
{
    return n <= STUB_BYTES ? stub_buf : NULL;
}

__attribute__((visibility("default"))) void bench_stub_free(void *p)
{
    (void)p;
}

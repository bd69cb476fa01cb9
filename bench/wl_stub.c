/* The throughput workloads of bench/wl.h (but workload 3) on bench/stub.c's
 * allocator, which does no work: each workload's floor, printed beside the
 * allocators in RESULTS.md. */
#include "config.h"

#include <stddef.h>
#include <stdint.h>

#include "bench/bench.h"

#define WL(name) stub_##name
#define WL_EXPORT bench_alloc_stub
#define WL_LABEL "stub"
#define WL_STUB
#define WL_ALLOC(n) bench_stub_malloc(n)
#define WL_FREE(p) bench_stub_free(p)
#define WL_SETUP() 0
#define WL_TEARDOWN() ((void)0)
#define WL_REFILLS() ((int64_t)-1)
/* workload 5: a forked worker has the one buffer at the same address, and
 * its free does nothing with what it gets */
#define WL_CROSS_PROCESS
#define WL_TO_WIRE(p) ((uint64_t)(uintptr_t)(p))
#define WL_FROM_WIRE(v) ((void *)(uintptr_t)(v))

#include "bench/wl.h"

/* Workload 1 of bench/wl.h on bench/stub.c's allocator, which does no work:
 * the loop's floor, printed beside the allocators in RESULTS.md. */
#include "config.h"

#include <stddef.h>

#include "bench/bench.h"

#define WL(name) stub_##name
#define WL_EXPORT bench_alloc_stub
#define WL_LABEL "stub"
#define WL_W1_ONLY
#define WL_ALLOC(n) bench_stub_malloc(n)
#define WL_FREE(p) bench_stub_free(p)
#define WL_SETUP() 0
#define WL_TEARDOWN() ((void)0)
#define WL_REFILLS() ((int64_t)-1)

#include "bench/wl.h"

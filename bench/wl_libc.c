/* The workloads of bench/wl.h on malloc/free: glibc's, or whichever
 * allocator LD_PRELOAD puts in front of it (jemalloc, mimalloc, tcmalloc). */
#include "config.h"

#include <dlfcn.h>
#include <malloc.h>
#include <stdlib.h>

#include "bench/bench.h"

/* Give free memory back to the system with whatever the allocator in use
 * offers: jemalloc's purge of all arenas, mimalloc's forced collect,
 * tcmalloc's ReleaseFreeMemory, else glibc's malloc_trim. */
static int libc_trim(void)
{
    int (*mallctl)(const char *, void *, size_t *, void *, size_t) =
        (int (*)(const char *, void *, size_t *, void *, size_t))dlsym(RTLD_DEFAULT, "mallctl");
    if (mallctl)
        return mallctl("arena.4096.purge", NULL, NULL, NULL, 0) == 0 ? 0 : -1;
    void (*mi_collect)(_Bool) = (void (*)(_Bool))dlsym(RTLD_DEFAULT, "mi_collect");
    if (mi_collect) {
        mi_collect(1);
        return 0;
    }
    void (*tc_release)(void) =
        (void (*)(void))dlsym(RTLD_DEFAULT, "MallocExtension_ReleaseFreeMemory");
    if (tc_release) {
        tc_release();
        return 0;
    }
    malloc_trim(0);
    return 0;
}

#define WL(name) libc_##name
#define WL_EXPORT bench_alloc_libc
#define WL_LABEL "malloc"
#define WL_ALLOC(n) malloc(n)
#define WL_FREE(p) free(p)
#define WL_SETUP() 0
#define WL_TEARDOWN() ((void)0)
#define WL_FOOTPRINT() bench_rss_bytes()
#define WL_REFILLS() ((int64_t)-1)
#define WL_TRIM() libc_trim()
#define WL_DAEMON_PID() 0

#include "bench/wl.h"

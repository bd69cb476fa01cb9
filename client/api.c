/* See shm/layout.h for the overview; doc/design.md section 3 for the client.
 *
 * The public entry points of spanclient.h: argument checks, then the fast
 * paths of client/cache.h.  Large objects (> SHM_MAX_SMALL) come from the
 * large pool of the arena (shm/lpool.h) when it has one of their page
 * count, else from the daemon (AllocLarge); they go back to the pool, or
 * to the daemon (FreeLarge) when it is full or takes no such size.
 */
#include "config.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "client/cache.h"
#include "shm/lpool.h"

void spci_log(const char *fmt, ...)
{
    spc_log_fn fn = spci_proc.log;
    if (fn == NULL)
        return;
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    fn(msg, spci_proc.log_arg);
}

SPC_PUBLIC void spc_set_log_fn(spc_log_fn fn, void *arg)
{
    pthread_mutex_lock(&spci_proc.lock);
    spci_proc.log = fn;
    spci_proc.log_arg = arg;
    pthread_mutex_unlock(&spci_proc.lock);
}

/* errno for a failed RPC or attach. */
static int rpc_errno(int rc)
{
    switch (rc) {
    case -ENOMEM: case -EINVAL: case -E2BIG:
        return rc == -E2BIG ? ENOMEM : -rc;
    default:
        return ENOTCONN;
    }
}

/* The pages of a large object of `size` bytes aligned to `align` that a
 * thread cache keeps spans for (those the pool takes: the caches only keep
 * what the pool would), or 0: an alignment over a page (any span is page
 * aligned, no more), a size the pool does not take, or nothing mapped. */
static uint64_t cached_pages(uint64_t size, uint64_t align)
{
    if (spci_map.base == NULL || align > SHM_PAGE_SIZE ||
        size > (uint64_t)SHM_LPOOL_MAX_PAGES << SHM_PAGE_SHIFT)
        return 0;
    uint64_t npages = (size + SHM_PAGE_SIZE - 1) >> SHM_PAGE_SHIFT;
    return shm_lpool_bucket(spci_map.base, npages) != NULL ? npages : 0;
}

/* A freed large span of exactly the pages `size` needs, with no round
 * trip: from this thread's own cache (cache.h lcache), else from the large
 * pool (shm/lpool.h).  NULL when neither has one, or for a size or an
 * alignment they do not keep (cached_pages). */
static void *reuse_large(uint64_t size, uint64_t align)
{
    uint8_t *base = spci_map.base;
    uint64_t npages = cached_pages(size, align);
    if (npages == 0)
        return NULL;
    spci_cache_t *c = spci_tls.tc;
    for (unsigned k = 0; k < SPCI_LCACHE_SLOTS; k++) {   /* the empty cache: all NULL */
        shm_span_t *s = c->lcache[k];
        if (s != NULL && s->npages == npages) {
            c->lcache[k] = NULL;
            spci_uncache_large(s);
            return shm_span_addr(base, s);
        }
    }
    /* a whole batch from the pool: the first allocated, the rest into this
     * thread's free slots.  A thread that never allocated a small object
     * has no cache yet: it gets one now (as a freeing thread does), or it
     * would take one span a batch and push the rest back, walking them,
     * at every allocation (a thread that only makes large buffers for
     * another process to free: w5 at 256 KiB); without one, one span only */
    if (c == &spci_empty_cache) {
        int saved = errno;
        if ((c = spci_cache_create()) == NULL)
            c = &spci_empty_cache;
        errno = saved;
    }
    unsigned nfree = 0, free_slot[SPCI_LCACHE_SLOTS];
    for (unsigned k = 0; k < SPCI_LCACHE_SLOTS && c != &spci_empty_cache; k++)
        if (c->lcache[k] == NULL)
            free_slot[nfree++] = k;
    shm_span_t *got[SPCI_LCACHE_SLOTS + 1];
    shm_spanid_t bad;
    uint32_t n = shm_lpool_pop_batch(base, npages, got, 1 + nfree, spci_proc.session, &bad);
    for (uint32_t k = 1; k < n; k++)
        c->lcache[free_slot[k - 1]] = got[k];
    if (n > 0) {
        c->lstreak = 0;                 /* frees come back: no more extras */
        return shm_span_addr(base, got[0]);
    }
    if (bad != 0)
        spci_log("the large pool's bucket of %llu pages gave span %u, which is not a "
                 "pooled large span of that size; dropped it", (unsigned long long)npages,
                 bad);
    return NULL;
}

/* How many extra spans of `npages` pages (cached_pages: 0 for a size the
 * cache does not keep) the next AllocLarge asks for, for this thread's
 * cache: none with no free slot; else 0, 1, 3, then 7 for a thread whose large allocations of one
 * size keep needing the daemon (nothing freed comes back through the
 * pool), so that a burst of them pays one round trip for up to 8, and a
 * lone one, or one of a new size, no more memory than it asked for. */
static uint32_t large_extra(spci_cache_t *c, uint64_t npages)
{
    if (c == &spci_empty_cache || npages == 0)
        return 0;
    if (c->lpages != npages) {          /* another size: start again */
        c->lpages = (uint32_t)npages;
        c->lstreak = 0;
    }
    uint32_t nfree = 0;
    for (unsigned k = 0; k < SPCI_LCACHE_SLOTS; k++)
        nfree += c->lcache[k] == NULL;
    uint32_t want = (1u << c->lstreak) - 1;
    if (c->lstreak < 3)
        c->lstreak++;
    return want < nfree ? want : nfree;
}

/* Put the extra spans an AllocLarge gave (offsets xoff[0..n), tagged
 * CACHED for this session, spans of npages pages) into the thread's cache,
 * each checked first: a span the daemon did not describe so is left alone (this session's end
 * gives back whatever stays cached to it). */
static void keep_extras(spci_cache_t *c, uint64_t npages, const uint64_t *xoff, uint32_t n)
{
    uint8_t *base = spci_map.base;
    unsigned k = 0;
    for (uint32_t i = 0; i < n; i++) {
        shm_span_t *s = NULL;
        uint32_t idx;
        if (xoff[i] < spci_map.size &&                 /* then the check says where */
            spci_check(base + xoff[i], &s, &idx) == SHM_PTR_OK &&
            shm_load_acquire(&s->xstate) == SHM_SPAN_LARGE && s->npages == npages &&
            shm_load_relaxed(&s->xowner) == SHM_LARGE_CACHED &&
            shm_load_relaxed(&s->xlarge) == spci_proc.session) {
            while (k < SPCI_LCACHE_SLOTS && c->lcache[k] != NULL)
                k++;
            if (k < SPCI_LCACHE_SLOTS) {
                c->lcache[k] = s;
                continue;
            }
        }
        spci_log("AllocLarge's extra span at offset %#llx is not a cached span of %llu "
                 "pages for this session, or there is no room for it; left to the daemon",
                 (unsigned long long)xoff[i], (unsigned long long)npages);
    }
}

/* The round trip of a large allocation neither the thread's cache nor the
 * pool could serve: kept out of spci_alloc_large, whose hits are the hot
 * path. */
static __attribute__((noinline, cold)) void *alloc_large_rpc(uint64_t size, uint64_t align)
{
    uint64_t off = 0, xoff[SPCI_LCACHE_SLOTS];
    uint32_t nx = 0;
    pthread_mutex_lock(&spci_proc.lock);
    int rc = spci_ensure_attached();
    spci_cache_t *c = spci_tls.tc;
    uint64_t npages = cached_pages(size, align);
    if (rc == 0)
        rc = spci_rpc_alloc_large_locked(size, align, large_extra(c, npages), &off, xoff, &nx);
    pthread_mutex_unlock(&spci_proc.lock);
    if (nx > 0)
        keep_extras(c, npages, xoff, nx);
    if (rc != 0) {
        errno = rpc_errno(rc);
        return NULL;
    }
    if (off < spci_map.data_off || off - spci_map.data_off >= spci_map.data_len) {
        spci_log("AllocLarge answered offset %#llx, outside the arena", (unsigned long long)off);
        errno = EPROTO;
        return NULL;
    }
    return spci_map.base + off;
}

void *spci_alloc_large(uint64_t size, uint64_t align)
{
    /* nothing bigger than the arena can ever fit: say so without a round trip */
    if (size > SHM_MAX_ARENA_SIZE || (spci_map.data_len && size > spci_map.data_len)) {
        errno = ENOMEM;
        return NULL;
    }
    void *p = reuse_large(size, align);
    if (p != NULL)
        return p;
    return alloc_large_rpc(size, align);
}

/* The two fast paths start a cache line each (SPCI_HOT), so that their
 * speed does not move with the size of unrelated code before them: at
 * bytes 0x10 and 0x20 of a line, where changes elsewhere in the library
 * had moved them, w1 and w2 at 16 B ran 2-9 % slower than line-aligned
 * (bench/TRIED.md, twelfth round). */
#define SPCI_HOT __attribute__((aligned(64)))

SPC_PUBLIC SPCI_HOT void *spc_malloc(size_t size)
{
    spci_cache_t *c = spci_tls.tc;
    if (SPCI_LIKELY(size - (SPCI_TINY_LIMIT + 1) < SHM_MAX_SMALL - SPCI_TINY_LIMIT))
        return spci_alloc_cls(c, shm_size_to_class(size));      /* 5 .. 32 KiB */
    if (size <= SPCI_TINY_LIMIT)
        return spci_alloc_tiny(c, size);                        /* 0 .. 4 */
    return spci_alloc_large(size, 0);
}

SPC_PUBLIC SPCI_HOT void spc_free(void *p)
{
    if (SPCI_LIKELY(p != NULL))
        spci_free_fast(p);
}

SPC_PUBLIC void *spc_calloc(size_t n, size_t size)
{
    size_t total;
    if (__builtin_mul_overflow(n, size, &total)) {
        errno = ENOMEM;
        return NULL;
    }
    void *p = spc_malloc(total);
    if (p != NULL)
        memset(p, 0, total);          /* reused objects are not zero */
    return p;
}

/* Bytes usable at the live object p, or 0 with *why set. */
static size_t usable(const void *p, shm_bad_t *why)
{
    shm_span_t *s;
    uint32_t i;
    *why = spci_check(p, &s, &i);
    if (*why != SHM_PTR_OK)
        return 0;
    if (shm_load_acquire(&s->xstate) == SHM_SPAN_LARGE)
        return (size_t)s->npages << SHM_PAGE_SHIFT;
    if (s->sizeclass == SHM_CLASS_TINY) {
        uint8_t v = shm_load_relaxed(shm_tiny_count(spci_map.base, s, i));
        return (size_t)1 << (v >> 6);
    }
    return shm_classes[s->sizeclass].size;
}

SPC_PUBLIC size_t spc_usable_size(const void *p)
{
    if (p == NULL)
        return 0;
    shm_bad_t why;
    size_t n = usable(p, &why);
    if (n == 0)
        errno = EINVAL;
    return n;
}

/* Would an object of `size` bytes land where p (usable `have`) is? */
static bool fits_in_place(size_t have, size_t size)
{
    if (have <= SPCI_TINY_LIMIT)                    /* a tiny piece of granule have */
        return size <= SPCI_TINY_LIMIT && (1u << spci_tiny_code(size)) == have;
    if (have <= SHM_MAX_SMALL)
        return size > SPCI_TINY_LIMIT && size <= SHM_MAX_SMALL &&
               shm_classes[shm_size_to_class(size)].size == have;
    return size > SHM_MAX_SMALL && size <= have && size >= have / 2;   /* large */
}

SPC_PUBLIC void *spc_realloc(void *p, size_t size)
{
    if (p == NULL)
        return spc_malloc(size);
    if (size == 0) {
        spc_free(p);
        return NULL;
    }
    shm_bad_t why;
    size_t have = usable(p, &why);
    if (have == 0)
        spci_bogus_free("spc_realloc", p, shm_bad_str(why));
    if (fits_in_place(have, size))
        return p;
    void *q = spc_malloc(size);
    if (q == NULL)
        return NULL;                  /* p is left as it was */
    memcpy(q, p, have < size ? have : size);
    spc_free(p);
    return q;
}

SPC_PUBLIC void *spc_aligned_alloc(size_t align, size_t size)
{
    if (align == 0 || (align & (align - 1)) != 0) {
        errno = EINVAL;
        return NULL;
    }
    if (size == 0)
        size = 1;
    if (align <= SHM_PAGE_SIZE && size <= SHM_MAX_SMALL) {
        /* objects of a page-aligned span are aligned to any power of two
         * that divides their size: the first such class that fits */
        for (unsigned cls = shm_size_to_class(size); cls < SHM_CLASS_TINY; cls++)
            if (shm_classes[cls].size % align == 0)
                return spci_alloc_cls(spci_tls.tc, cls);
    }
    return spci_alloc_large(size, align);
}

/* spc_offset and spc_pointer: one range test on the common path (every
 * object a process hands to another through a queue takes both); NULL, 0,
 * no arena mapped yet and anything out of range take the cold half. */
static __attribute__((noinline, cold)) uint64_t offset_slow(const void *p)
{
    if (p == NULL)
        return 0;
    errno = EINVAL;
    return 0;
}

SPC_PUBLIC uint64_t spc_offset(const void *p)
{
    uint64_t off = (uint64_t)((const uint8_t *)p - spci_map.base);
    if (SPCI_LIKELY(spci_map.base != NULL && off < spci_map.size))
        return off;             /* NULL is far below any mapping: not here */
    return offset_slow(p);
}

static __attribute__((noinline, cold)) void *pointer_slow(uint64_t offset)
{
    if (offset == 0)
        return NULL;
    if (spci_map.base == NULL && spci_ensure_attached() != 0) {
        errno = ENOTCONN;
        return NULL;
    }
    if (offset < spci_map.data_off || offset >= spci_map.size) {
        errno = EINVAL;
        return NULL;
    }
    return spci_map.base + offset;
}

SPC_PUBLIC void *spc_pointer(uint64_t offset)
{
    uint8_t *base = spci_map.base;
    /* data_off > 0 (the header comes first): offset 0 fails this test */
    if (SPCI_LIKELY(base != NULL &&
                    offset - spci_map.data_off < spci_map.size - spci_map.data_off))
        return base + offset;
    return pointer_slow(offset);
}

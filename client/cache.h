/* See shm/layout.h for the overview; doc/design.md section 3 for the client.
 *
 * The thread cache and its fast paths: no lock, no atomic read-modify-write,
 * no system call.  Everything here is static inline; the slow paths
 * (client/cache.c, client/free.c) are noinline and cold.
 *
 * Each thread starts at spci_empty_cache (mimalloc's trick): every bin is
 * empty and every tiny block full, so the first allocation of any size falls
 * into the slow path, which attaches, creates the thread's real cache and
 * switches spci_tls.tc to it.  The fast path never asks "initialized?".
 *
 * A bin (one per size class) caches what the fast path needs of the class's
 * current span.  It hands out objects from two places:
 *   - head: a LIFO list, threaded through the objects, of the objects this
 *     thread freed into the current span.  A thread that frees and
 *     allocates again gets back the object it just touched, and the next
 *     pointer it returns is known as soon as the free is done (the free
 *     stores it in head): nothing in the loop waits for the free's checks.
 *         alloc: pop head; i = ((p - start) * divmul) >> 32; set bit i.
 *   - mask: the free objects of one word of the span's alloc bitmap, taken
 *     when the list and the last mask ran dry (cache.c, find_word).  Every
 *     other free object is just a clear bit: nothing is written into it
 *     when it is freed (here, or by another process through the remote
 *     stack and its drain) and nothing is read from it when it is handed
 *     out, so its line stays wherever it was; the caller's first write is
 *     the only miss, and no later allocation depends on it.
 *         alloc: k = lowest bit of mask; clear it in mask, set it in *word;
 *                return wbase + k * size.
 * The bitmap stays the truth (shm/layout.h): a bit is clear exactly when
 * the object is free, wherever the bin keeps it, so the drain and the
 * daemon need nothing from the bin.  Objects on the list and in mask are
 * disjoint: mask is taken only when the list is empty, and the list only
 * gets objects that were handed out.  A free bit outside both (an object
 * the drain freed, or one freed while its span was not current) is found
 * by a later find_word.
 * Class 0 and classes with no current span have head == NULL and mask 0.
 * divmul and size are set for every class of a real cache (the free fast
 * path uses them for any span the thread holds); the empty cache has zeros.
 *
 * Tiny allocations (1..SPCI_TINY_LIMIT = 4 bytes; 0 counts as 1) are carved
 * from 16-byte blocks of class SHM_CLASS_TINY, one granule g = 1 << code per
 * block (code 0..2: 1, 2, 4 bytes; code 3, 8 bytes, is no longer made:
 * 5..8-byte requests take the 8-byte class 1, which costs one bitmap bit per
 * object instead of a count byte per two, and has the plain fast path).  tiny[code] is the current block's next
 * free granule and end; the shared live count of the block is not touched
 * while the thread carves it (bias scheme, see cache.c).
 *
 * Page offsets.  A core matches a load against the older stores still in
 * flight by the address bits below 4 KiB first, and a load of bytes at the
 * page offset of such a store's bytes waits for it, even when the two
 * addresses differ ("4K aliasing").  Every operation of a class stores into
 * its bin (head, mask), so a line its fast path loads at the bin's page
 * offset, on those bytes, costs that class a few cycles at every
 * operation: at w1 (bench/) 15-35 % of its rate.  (The placement below
 * works by whole lines, which errs on the safe side.)  Until this was
 * understood it looked like one size class in one benchmark running slower
 * for no reason (bench/TRIED.md, eighth round): the free read the arena's
 * coordinates from the global spci_map, at a page offset fixed by the
 * library's layout, while malloc put the cache anywhere, so some class's
 * bin landed on spci_map's offset, and which one changed with the heap.
 * Now:
 *   - the lines the fast paths load other than the arena's, the object's
 *     and the bin's own are this thread's spci_tls (the cache pointer and a
 *     copy of what the free needs of spci_map, one line), the size-class
 *     tables' lines and, on the free's span-map path, bins[0]'s line (tid);
 *   - the cache is placed in its allocation (a page of slack) at the page
 *     offset, of the 64 a line can have, where the fewest classes up to 16
 *     KiB have one of those lines at their own bin's page offset, nor the
 *     first line of their objects when those start pages, and where the
 *     remote free's batch slots (rfree, which it stores into) are off the
 *     thread-local line (attach.c, cache_place).  The bins cover 67 lines
 *     and a page holds 64, so the cache's own lines share offsets too:
 *     bins[0]'s (tid) with bin 64's, line 0 (tiny) with bin 63's, bin 1's
 *     with bin 65's, bin 2's with bin 66's (no bin there, only the tiny
 *     class's divmul and size);
 *   - the fast paths store nothing else that a class's next operation loads
 *     (no stack frame: the free keeps its values in scratch registers).
 * The arena's lines (a class-map byte, a bitmap word; on the free's
 * span-map path a span-map entry and a descriptor) can still share a bin's
 * offset for some span; the bin's stored fields are its last 16 bytes, off
 * the bytes of those lines the fast paths read most.
 */
#ifndef SPCI_CACHE_H
#define SPCI_CACHE_H

#include "client/internal.h"
#include "shm/lpool.h"

/* hstate of a span a thread holds (the holder field of shm_span_t) */
enum {
    SPCI_H_NONE = 0,    /* not on a private list (fresh, or being released) */
    SPCI_H_CURRENT,     /* a bin's current span */
    SPCI_H_AVAIL,       /* has free objects (clear bits) */
    SPCI_H_FULL,        /* had none when last looked at */
};

#define SPCI_TINY_LIMIT 4u        /* requests 0..4 are tiny; 5..8 take class 1 */
#define SPCI_TINY_BIAS 32u        /* added to a held tiny block's count */
#define SPCI_TINY_COUNT_MASK 63u  /* low 6 bits: count; top 2: granule code */
#define SPCI_PENDING_MAX 64u      /* spans waiting to be released */
#define SPCI_RFREE_SLOTS 8u       /* spans with remote frees waiting, per thread */
#define SPCI_RFREE_BATCH 64u      /* remote frees pushed with one CAS, at most */
#define SPCI_RFREE_BYTES (512u << 10) /* and at most this many bytes of objects */
#define SPCI_LCACHE_SLOTS 8u      /* freed large spans a thread keeps */
#define SPCI_PROMOTE_MAX 1024u    /* a full span of a class up to this size
                                     becomes current at its first free
                                     (cache.c, spci_free_owned) */
#define SPCI_ALIAS_BYTES 4096u    /* loads are matched to older stores by the
                                     address bits below this first (page offsets) */
_Static_assert(SPCI_LCACHE_SLOTS + 1 <= SHM_LPOOL_BATCH_MAX, "a full cache and one more span make a batch");

/* Hot per-class state: one cache line, written by the owning thread only. */
typedef struct spci_bin_s {
    uint8_t *start;             /* current span's first byte */
    uint64_t *bitmap;           /* current span's alloc bitmap */
    uint64_t *word;             /* the bitmap word mask was taken from */
    uint8_t *wbase;             /* address of that word's object 0 */
    /* bytes of objects in the current span (nelems * size): the free takes
     * an object p as the current span's when p - start < limit; 0 with no
     * current span, and always for the tiny class, whose pieces are not
     * objects of their own */
    uint32_t limit;
    uint32_t pad;
    uint32_t divmul;            /* shm_classes[cls].divmul, even with no span */
    uint32_t size;              /* shm_classes[cls].size, even with no span */
    /* the two fields the fast paths store, last: the first bytes of a line
     * are where a span's first bitmap words sit, and a load waits for a
     * store to the same bytes of its page offset (page offsets, above).
     * (The list paths' fields at bytes 8-15 of each 16, off the bytes where
     * objects start, ran 3-7 % slower at w1: bench/TRIED.md.) */
    void *head;                 /* this thread's frees into the current span */
    uint64_t mask;              /* free objects of *word not handed out yet */
} spci_bin_t;
_Static_assert(offsetof(spci_bin_t, head) == 48, "the stored fields end the line");

/* The current tiny block of one granule: [pos, end) not handed out yet. */
typedef struct spci_tiny_s {
    uint8_t *pos;
    uint8_t *end;
} spci_tiny_t;

/* A private list of held spans through hnext/hprev (span ids). */
typedef struct spci_slist_s {
    shm_spanid_t head, tail;
    uint32_t n;                 /* spans on it */
    uint32_t pages;             /* their pages */
} spci_slist_t;

/* Remote frees of one span that this thread has checked but not pushed yet
 * (client/free.c): their indices, pushed onto the span's remote-free stack
 * as records (shm/span.h) with one CAS when `cap` are waiting,
 * when another span needs the slot, or when the cache is flushed (thread
 * exit, detach).  One CAS a batch instead of one an object: a locked
 * instruction waits for every store before it.  And nothing is written into
 * a freed object until the push, and then only into the first of each
 * record: the objects' lines stay with the core that wrote them last. */
typedef struct spci_rfree_s {
    shm_span_t *span;           /* NULL: slot empty */
    uint64_t mask;              /* bit (i & 63) of every object i waiting */
    uint32_t n;                 /* objects waiting */
    /* span's shape, for the next frees into it (spci_free_other): a span
     * with objects waiting here cannot go back to the heap, so it stays;
     * unless one of them was a double free, and the span was emptied and
     * cut again meanwhile: `cut` tells (rfree_push) */
    uint32_t divmul, size;
    uint32_t nelems;            /* 0 for the tiny class: its pieces never take
                                   that path */
    uint32_t cut;               /* span's xcut when the batch was opened */
    /* objects pushed at once: SPCI_RFREE_BATCH, or fewer where that many
     * would hold more than SPCI_RFREE_BYTES waiting */
    uint32_t cap;
    uint64_t first;             /* offset of its first byte */
    uint16_t idx[SPCI_RFREE_BATCH]; /* their indices, in the order freed */
    uint8_t pad[256 - 48 - 2 * SPCI_RFREE_BATCH];
} __attribute__((aligned(64))) spci_rfree_t;
_Static_assert(sizeof(spci_rfree_t) == 256, "a slot's offset is a shift of the descriptor's "
               "address (spci_rfree_slot)");

/* Take large span s out of a thread's cache (tag SHM_LARGE_CACHED -> 0,
 * shm/layout.h): allocated again, in this thread's hands, whether it is
 * handed out or freed on to the pool or the daemon. */
static inline void spci_uncache_large(shm_span_t *s)
{
    shm_store_relaxed(&s->xlarge, 0);
    shm_store_release(&s->xowner, 0);
}

/* Cold per-class state, slow path only. */
typedef struct spci_class_s {
    shm_span_t *cur;            /* the bin's current span, NULL none */
    spci_slist_t avail;         /* hstate AVAIL */
    spci_slist_t full;          /* hstate FULL */
    uint32_t batch;             /* spans to ask for in the next Refill */
    uint32_t refills;
    uint32_t peak_pages;        /* most pages held at once (after a Refill) */
} spci_class_t;

struct spci_cache_s {
    /* hot: the fast paths, lines 0 to 67 (page offsets: above) */
    spci_tiny_t tiny[4];        /* line 0 */
    union {
        spci_bin_t bins[SHM_NCLASSES];      /* lines 1 to 67 */
        struct {                /* bins[0]'s line (class 0 allocates nothing) */
            uint32_t tid;       /* kernel tid of the thread; ~0 in the empty cache */
            uint32_t pad;
        };
    } __attribute__((aligned(64)));
    /* cold: the slow paths */
    spci_class_t cls[SHM_NCLASSES] __attribute__((aligned(64)));
    spci_rfree_t rfree[SPCI_RFREE_SLOTS] __attribute__((aligned(64))); /* by descriptor */
    /* freed large spans (tag SHM_LARGE_CACHED) kept for this thread's next
     * allocation of their size: the large pool's bucket heads are shared
     * by every process, a CAS on them a cache miss when two processes
     * allocate at once; NULL: slot empty (client/api.c, free.c) */
    shm_span_t *lcache[SPCI_LCACHE_SLOTS];
    /* AllocLarge round trips in a row for spans of lpages pages, with no
     * allocation the shared pool served in between (0..3): the next of that
     * size asks for 2^lstreak - 1 extra spans for lcache (client/api.c) */
    uint32_t lstreak, lpages;
    shm_spanid_t pending[SPCI_PENDING_MAX]; /* xowner cleared, off every list */
    uint32_t npending;
    spci_cache_t *next, *prev;  /* spci_proc.caches, under spci_proc.lock */
    void *mem;                  /* the allocation the cache was placed in */
    struct spci_tls_s *tls;     /* its thread's spci_tls (attach, detach) */
} __attribute__((aligned(64)));
_Static_assert(offsetof(spci_cache_t, bins) == 64 && sizeof(spci_bin_t) == 64 &&
               offsetof(spci_cache_t, tid) == 64,
               "line 0 the tiny blocks, line 1 + k bin k; tid on bin 0's line");

extern spci_cache_t spci_empty_cache;

/* The slot of span s's remote-free batch in c: by the descriptor's address
 * (descriptors are an array of 128-byte entries, so this is its id plus a
 * constant), which needs no load of spci_map (page offsets, above); with
 * 256-byte slots the slot's offset is a mask and a shift of it. */
static inline spci_rfree_t *spci_rfree_slot(spci_cache_t *c, const shm_span_t *s)
{
    return &c->rfree[((uintptr_t)s / sizeof *s) & (SPCI_RFREE_SLOTS - 1)];
}

/* The thread's one line of thread-local state, the first thing both fast
 * paths load: the cache, and what the free needs of the arena's mapping
 * (spci_map's fields, copied here rather than read from that global so that
 * the free loads them in parallel with tc, and from a line whose page offset
 * the cache is placed around: page offsets, above).  Written by the thread
 * itself (tc) and under spci_proc.lock by attach and detach (map, through
 * spci_cache_t.tls, for every thread with a cache) and the fork child
 * handler; map all zeros while nothing is mapped or the thread has no cache,
 * so the free's range test sends every pointer to the slow path. */
typedef struct spci_tls_s {
    spci_cache_t *tc;           /* &spci_empty_cache until the thread has one */
    spci_fmap_t map;
} __attribute__((aligned(64))) spci_tls_t;

extern __thread spci_tls_t spci_tls __attribute__((tls_model("initial-exec")));

/* Granule code of a tiny request of 0..SPCI_TINY_LIMIT bytes. */
static inline unsigned spci_tiny_code(size_t size)
{
    return (unsigned)(size >= 2) + (unsigned)(size >= 3);  /* 0, 0, 1, 2, 2: no table to load */
}

/* Pop an object of class cls (1..SHM_NCLASSES-1) from the bin. */
static inline void *spci_alloc_cls(spci_cache_t *c, unsigned cls)
{
    spci_bin_t *b = &c->bins[cls];
    void *p = b->head;
    if (SPCI_LIKELY(p != NULL)) {
        b->head = *(void **)p;
        /* high half: the object's index (shm_obj_index) */
        uint64_t prod = (uint64_t)((uint8_t *)p - b->start) * b->divmul;
        uint64_t *w = b->bitmap + (prod >> 38);
        shm_word_store(w, shm_word_load(w) | 1ull << ((prod >> 32) & 63));
        return p;
    }
    uint64_t m = b->mask;
    if (SPCI_UNLIKELY(m == 0))
        return spci_alloc_slow(c, cls);
    b->mask = m & (m - 1);
    shm_word_store(b->word, shm_word_load(b->word) | (m & (0 - m)));
    return b->wbase + (uint64_t)__builtin_ctzll(m) * b->size;
}

/* A tiny allocation of 0..SPCI_TINY_LIMIT bytes. */
static inline void *spci_alloc_tiny(spci_cache_t *c, size_t size)
{
    unsigned code = spci_tiny_code(size);
    spci_tiny_t *t = &c->tiny[code];
    uint8_t *p = t->pos;
    if (SPCI_UNLIKELY(p >= t->end))
        return spci_tiny_slow(c, code);
    t->pos = p + (1u << code);
    return p;
}

/* Free p.  Two fast cases, both for objects of spans this thread holds:
 *   - an object of its class's current span, onto the bin's list.  The
 *     class map (shm/layout.h) names the class of p's page, and p is the
 *     current span's when p - start < limit: no span descriptor is read,
 *     and nothing but the object's own bit is trusted.  The map is a hint:
 *     a stale or wrong byte sends p to a bin whose current span does not
 *     hold it, and on to the second case.
 *   - an object of a span on the avail list (its bit alone), found through
 *     the span map and the descriptor, whose holder must be this thread.
 * Everything else (validation failures included) goes to spci_free_slow,
 * which checks everything again from scratch, or to spci_free_other and
 * spci_free_held.  Every call out is a tail call: no stack frame. */
static inline void spci_free_fast(void *p)
{
    spci_cache_t *c = spci_tls.tc;
    const spci_fmap_t *m = &spci_tls.map;
    if (SPCI_UNLIKELY((uintptr_t)p - m->data >= m->data_len)) {
        spci_free_slow(p);              /* outside, nothing mapped, or no cache yet */
        return;
    }
    uintptr_t hint = shm_load_relaxed(
        (_Atomic uint8_t *)(m->classmap + ((uintptr_t)p >> SHM_PAGE_SHIFT)));
    if (SPCI_UNLIKELY(hint >= SHM_NCLASSES)) {
        spci_free_slow(p);              /* not a byte the daemon writes */
        return;
    }
    spci_bin_t *b = &c->bins[hint];     /* bins[0] and the tiny bin: limit 0 */
    uint64_t rel = (uint64_t)((uint8_t *)p - b->start);
    if (SPCI_LIKELY(rel < b->limit)) {
        uint32_t divmul = b->divmul;
        uint64_t prod = rel * divmul;   /* high half: the index */
        uint64_t *w = b->bitmap + (prod >> 38);
        if (SPCI_UNLIKELY(!shm_obj_starts(prod, divmul))) {
            spci_free_slow(p);          /* not an object's first byte */
            return;
        }
        /* one load of the bitmap word for the test and the clear: only the
         * holder (this thread) writes it (shm/span.h) */
        uint64_t word = shm_word_load(w), bit = 1ull << ((prod >> 32) & 63);
        if (SPCI_UNLIKELY(!(word & bit))) {
            spci_free_slow(p);          /* reports the double free */
            return;
        }
        shm_word_store(w, word & ~bit);
        *(void **)p = b->head;
        b->head = p;
        return;
    }
    uint64_t off = (uint64_t)((uint8_t *)p - m->base);
    shm_spanid_t id = shm_load_acquire(
        (_Atomic uint32_t *)(m->pagemap + ((uintptr_t)p >> SHM_PAGE_SHIFT) * sizeof(uint32_t)));
    shm_span_t *s = m->spans + id;      /* id 0: descriptor 0, never owned */
    if (SPCI_UNLIKELY(shm_load_relaxed(&s->xowner) != c->tid)) {
        spci_free_other(p, s, off, c);  /* another holder, large, bogus */
        return;
    }
    /* we hold s: its identity is stable and its state is HELD */
    unsigned cls = s->sizeclass;
    if (SPCI_UNLIKELY(cls == SHM_CLASS_TINY)) {
        spci_free_slow(p);              /* a piece of a tiny block */
        return;
    }
    uint8_t *bitmap = m->bitmaps + (uint64_t)s->start * SHM_BITMAP_PAGE_BYTES;
    b = &c->bins[cls];                  /* divmul and size are always set */
    __asm__("" : "+r"(b));              /* kept, not recomputed from c and cls: with
                                           those live too the path ran out of
                                           scratch registers and saved some on the
                                           stack (page offsets, above) */
    rel = off - ((uint64_t)s->start << SHM_PAGE_SHIFT);
    uint32_t divmul = b->divmul;
    uint64_t prod = rel * divmul;
    uint32_t i = (uint32_t)(prod >> 32);
    if (SPCI_UNLIKELY(!shm_obj_starts(prod, divmul) || i >= s->nelems)) {
        spci_free_slow(p);
        return;
    }
    uint64_t *w = (uint64_t *)bitmap + (i >> 6);
    uint64_t word = shm_word_load(w), bit = 1ull << (i & 63);
    if (SPCI_UNLIKELY(!(word & bit))) {
        spci_free_slow(p);              /* reports the double free */
        return;
    }
    if (SPCI_LIKELY(s->hstate == SPCI_H_AVAIL))
        shm_word_store(w, word & ~bit); /* another held span: the bit alone */
    else
        spci_free_held(s, i);           /* full: it moves to the avail list; or
                                           the current span, reached through a
                                           stale class-map byte */
}

#endif /* SPCI_CACHE_H */

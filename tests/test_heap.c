/* See shm/layout.h for the overview.
 *
 * The page heap (daemon/heap.c): growth, best fit, splitting and merging,
 * large spans and alignment, the span map, scavenging, running out of room
 * and failures to back pages, and a randomized workload checked against a
 * reference model with spd_heap_verify after every step.
 */
#include "config.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "daemon/list.h"
#include "tests/test_core.h"

#define MiB (1ULL << 20)

static uint64_t span_off(shm_arena_t *a, shm_spanid_t id)
{
    return (uint64_t)fx_span(a, id)->start << SHM_PAGE_SHIFT;
}

static uint32_t heap_pages(shm_arena_t *a)
{
    return a->hdr->heap.end_page - a->hdr->heap.first_page;
}

/* A LARGE span of exactly n pages. */
static shm_spanid_t large(shm_arena_t *a, uint32_t n)
{
    int err = 1;
    shm_spanid_t id = spd_heap_alloc_large(a, (uint64_t)n * SHM_PAGE_SIZE, 0, &err);
    CU_ASSERT(id != 0);
    CU_ASSERT_EQUAL(err, 0);
    if (id != 0)
        CU_ASSERT_EQUAL(fx_span(a, id)->npages, n);
    return id;
}

static void free_large(shm_arena_t *a, shm_spanid_t id)
{
    CU_ASSERT_EQUAL(spd_heap_free_large(a, span_off(a, id)), 0);
}

/* The FREE span that starts at `page`, or 0. */
static shm_spanid_t free_span_at(shm_arena_t *a, uint32_t page)
{
    shm_spanid_t id = shm_load_relaxed(&shm_spanmap(a->base)[page]);
    if (id == 0 || fx_state(a, id) != SHM_SPAN_FREE || fx_span(a, id)->start != page)
        return 0;
    return id;
}

static void test_init(void)
{
    shm_arena_t *a = fx_new(64 * MiB);
    CU_ASSERT_PTR_NOT_NULL_FATAL(a);
    shm_heap_t *h = &a->hdr->heap;
    CU_ASSERT_EQUAL(h->first_page, a->hdr->data_off >> SHM_PAGE_SHIFT);
    CU_ASSERT_EQUAL(h->end_page, h->first_page);
    CU_ASSERT_EQUAL(h->limit_page, (64 * MiB) >> SHM_PAGE_SHIFT);
    CU_ASSERT_EQUAL(h->free_pages, 0);
    CU_ASSERT_EQUAL(h->treap_root, 0);
    CU_ASSERT_EQUAL(a->hdr->spanalloc.hwm, 1);
    CU_ASSERT_EQUAL(a->hdr->spanalloc.inuse, 0);
    CU_ASSERT(a->hdr->spanalloc.backed >= 2);
    CU_ASSERT(a->hdr->spanalloc.max >= a->hdr->npages);
    /* only the header and the first descriptors are backed */
    CU_ASSERT(shm_arena_resident(a) <= a->hdr->spanmap_off + 2 * MiB);
    VERIFY_OK(a);
}

/* Every class: a span of the class's shape, CENTRAL, every page mapped. */
static void test_small_spans(void)
{
    shm_arena_t *a = fx_new(64 * MiB);
    CU_ASSERT_PTR_NOT_NULL_FATAL(a);
    shm_spanid_t ids[SHM_NCLASSES] = {0};
    uint32_t cuts[SHM_NCLASSES] = {0};
    for (unsigned c = 1; c < SHM_NCLASSES; c++) {
        int err = 1;
        shm_spanid_t id = spd_heap_alloc_small(a, c, &err);
        CU_ASSERT_FATAL(id != 0);
        CU_ASSERT_EQUAL(err, 0);
        shm_span_t *s = fx_span(a, id);
        CU_ASSERT_EQUAL(fx_state(a, id), SHM_SPAN_CENTRAL);
        CU_ASSERT_EQUAL(s->sizeclass, c);
        CU_ASSERT_EQUAL(s->npages, shm_classes[c].npages);
        CU_ASSERT_EQUAL(s->nelems, shm_classes[c].nelems);
        CU_ASSERT_EQUAL(s->next, 0);
        CU_ASSERT_EQUAL(s->prev, 0);
        CU_ASSERT_EQUAL(shm_load_relaxed(&s->xremote), 0);
        CU_ASSERT_EQUAL(shm_span_count(a->base, s), shm_classes[c].nreserved);
        for (uint32_t p = 0; p < s->npages; p++)
            CU_ASSERT_EQUAL(shm_spanmap(a->base)[s->start + p], id);
        /* a cut into another class is another span to a freer (xcut) */
        uint32_t cut = shm_load_relaxed(&s->xcut);
        shm_span_cut(a->base, s, c);
        CU_ASSERT_NOT_EQUAL(shm_load_relaxed(&s->xcut), cut);
        cuts[c] = shm_load_relaxed(&s->xcut);
        fx_hold(a, id, 0);
        ids[c] = id;
        VERIFY_OK(a);
    }
    CU_ASSERT_EQUAL(a->hdr->stats.spans_allocated, SHM_NCLASSES - 1);
    for (unsigned c = 1; c < SHM_NCLASSES; c++) {
        fx_unhold(a, ids[c]);
        spd_heap_free(a, ids[c]);
        /* given back (kept, or merged and its descriptor freed): a freer
         * that opened a batch for it must see another span */
        CU_ASSERT_NOT_EQUAL(shm_load_relaxed(&fx_span(a, ids[c])->xcut), cuts[c]);
        VERIFY_OK(a);
    }
    CU_ASSERT_EQUAL(a->hdr->heap.free_pages, heap_pages(a));
    CU_ASSERT_EQUAL(a->hdr->spanalloc.inuse, 1);     /* one free span is left */
    CU_ASSERT_EQUAL(a->hdr->stats.spans_freed, SHM_NCLASSES - 1);
    int err = 0;
    CU_ASSERT_EQUAL(spd_heap_alloc_small(a, 0, &err), 0);
    CU_ASSERT_EQUAL(err, -EINVAL);
    CU_ASSERT_EQUAL(spd_heap_alloc_small(a, SHM_NCLASSES, &err), 0);
    CU_ASSERT_EQUAL(err, -EINVAL);
}

/* The heap grows by >= 1 MiB a time, but backs only the pages taken: the
 * rest of a step is backed when a later take cuts it. */
static void test_growth(void)
{
    shm_arena_t *a = fx_new(64 * MiB);
    CU_ASSERT_PTR_NOT_NULL_FATAL(a);
    uint64_t r0 = shm_arena_resident(a);
    shm_spanid_t first = large(a, 1);
    CU_ASSERT_EQUAL(a->hdr->stats.grows, 1);
    CU_ASSERT_EQUAL(a->hdr->stats.grown_bytes, SHM_GROW_MIN_PAGES * SHM_PAGE_SIZE);
    CU_ASSERT_EQUAL(heap_pages(a), SHM_GROW_MIN_PAGES);
    /* the page taken and the step's span-map slots (512 bytes, in at most
     * two 4 KiB pages), class-map bytes (128, at most two pages) and
     * bitmap slots (16 KiB), not its other 127 pages */
    uint64_t meta = 8 * 4096;
    CU_ASSERT(shm_arena_resident(a) >= r0 + SHM_PAGE_SIZE);
    CU_ASSERT(shm_arena_resident(a) <= r0 + SHM_PAGE_SIZE + meta);
    if (shm_arena_resident(a) > r0 + SHM_PAGE_SIZE + meta)
        fprintf(stderr, "grew by %llu bytes\n",
                (unsigned long long)(shm_arena_resident(a) - r0));
    CU_ASSERT_EQUAL(a->hdr->heap.free_pages, SHM_GROW_MIN_PAGES - 1);
    CU_ASSERT_EQUAL(fx_span(a, free_span_at(a, fx_span(a, first)->start + 1))->flags,
                    SHM_SPAN_UNBACKED_SOME);
    VERIFY_OK(a);
    /* 127 more single pages fit without growing, each backed when taken */
    for (int i = 0; i < 127; i++)
        memset(fx_addr(a, large(a, 1)), 0x5a, SHM_PAGE_SIZE);   /* no SIGBUS */
    CU_ASSERT_EQUAL(a->hdr->stats.grows, 1);
    CU_ASSERT_EQUAL(a->hdr->heap.free_pages, 0);
    CU_ASSERT(shm_arena_resident(a) >= r0 + 1 * MiB);
    VERIFY_OK(a);
    uint64_t r1 = shm_arena_resident(a);
    large(a, 1);
    CU_ASSERT_EQUAL(a->hdr->stats.grows, 2);
    CU_ASSERT_EQUAL(heap_pages(a), 2 * SHM_GROW_MIN_PAGES);
    CU_ASSERT(shm_arena_resident(a) >= r1 + SHM_PAGE_SIZE);
    CU_ASSERT(shm_arena_resident(a) <= r1 + SHM_PAGE_SIZE + meta);
    VERIFY_OK(a);
    /* a request larger than the step grows by exactly what is missing: the
     * free tail (127 pages) is merged with the new pages */
    uint32_t end = a->hdr->heap.end_page;
    shm_spanid_t big = large(a, 1000);
    CU_ASSERT_EQUAL(a->hdr->stats.grows, 3);
    CU_ASSERT_EQUAL(fx_span(a, big)->start, end - 127);
    CU_ASSERT_EQUAL(a->hdr->heap.end_page, end - 127 + 1000);
    CU_ASSERT_EQUAL(a->hdr->stats.grown_bytes,
                    (2ULL * SHM_GROW_MIN_PAGES + 1000 - 127) * SHM_PAGE_SIZE);
    CU_ASSERT_EQUAL(a->hdr->heap.free_pages, 0);
    VERIFY_OK(a);
    /* data pages, span-map slots and bitmap slots are all backed: writing
     * them cannot fault (a SIGBUS would end the test) */
    memset(fx_addr(a, big), 0xab, 1000ULL * SHM_PAGE_SIZE);
    memset(fx_addr(a, first), 0xcd, SHM_PAGE_SIZE);
    CU_ASSERT(shm_arena_resident(a) >= heap_pages(a) * (uint64_t)SHM_PAGE_SIZE);
}

/* A freed span merges with free neighbours on both sides. */
static void test_merge_both_sides(void)
{
    shm_arena_t *a = fx_new(64 * MiB);
    CU_ASSERT_PTR_NOT_NULL_FATAL(a);
    shm_spanid_t A = large(a, 3), B = large(a, 5), C = large(a, 7), D = large(a, 2);
    uint32_t a0 = fx_span(a, A)->start;
    CU_ASSERT_EQUAL(fx_span(a, B)->start, a0 + 3);
    CU_ASSERT_EQUAL(fx_span(a, C)->start, a0 + 8);
    CU_ASSERT_EQUAL(fx_span(a, D)->start, a0 + 15);
    uint32_t inuse = a->hdr->spanalloc.inuse;
    free_large(a, A);
    VERIFY_OK(a);
    free_large(a, C);
    VERIFY_OK(a);
    CU_ASSERT_EQUAL(a->hdr->spanalloc.inuse, inuse);  /* two free spans now */
    CU_ASSERT(free_span_at(a, a0) != 0);
    CU_ASSERT(free_span_at(a, a0 + 8) != 0);
    free_large(a, B);                               /* joins A and C */
    VERIFY_OK(a);
    shm_spanid_t m = free_span_at(a, a0);
    CU_ASSERT_FATAL(m != 0);
    CU_ASSERT_EQUAL(fx_span(a, m)->npages, 15);
    CU_ASSERT_EQUAL(a->hdr->spanalloc.inuse, inuse - 2);
    CU_ASSERT_EQUAL(a->hdr->heap.free_head[15], m);
    /* the interior of the merged span maps to 0, its edges to it */
    for (uint32_t p = a0; p < a0 + 15; p++)
        CU_ASSERT_EQUAL(shm_spanmap(a->base)[p], (p == a0 || p == a0 + 14) ? m : 0);
    /* freeing D joins the merged span and the free tail into one */
    free_large(a, D);
    VERIFY_OK(a);
    m = free_span_at(a, a0);
    CU_ASSERT_FATAL(m != 0);
    CU_ASSERT_EQUAL(fx_span(a, m)->npages, heap_pages(a));
    CU_ASSERT_EQUAL(a->hdr->spanalloc.inuse, 1);
    CU_ASSERT_EQUAL(a->hdr->heap.treap_root, m);
    CU_ASSERT_EQUAL(a->hdr->stats.spans_freed, 4);
    CU_ASSERT_EQUAL(a->hdr->stats.large_frees, 4);
}

/* Exact list first, then the smallest larger list, then the treap's best
 * fit (fewest pages, lowest address). */
static void test_best_fit(void)
{
    shm_arena_t *a = fx_new(64 * MiB);
    CU_ASSERT_PTR_NOT_NULL_FATAL(a);
    static const uint32_t sizes[] = { 5, 7, 300, 200, 200, 129 };
    shm_spanid_t hole[6], sep[6];
    for (int i = 0; i < 6; i++) {
        hole[i] = large(a, sizes[i]);
        sep[i] = large(a, 1);
    }
    uint32_t at[6];
    for (int i = 0; i < 6; i++) {
        at[i] = fx_span(a, hole[i])->start;
        free_large(a, hole[i]);
    }
    VERIFY_OK(a);
    CU_ASSERT_EQUAL(fx_span(a, large(a, 5))->start, at[0]);    /* exact */
    CU_ASSERT_EQUAL(fx_span(a, large(a, 6))->start, at[1]);    /* next list up */
    VERIFY_OK(a);
    CU_ASSERT_EQUAL(a->hdr->heap.free_head[1], free_span_at(a, at[1] + 6));
    /* 130 pages: the 200-page spans beat the 300; the lower one wins the tie;
     * the 129-page span is too small */
    CU_ASSERT_EQUAL(fx_span(a, large(a, 130))->start, at[3]);
    VERIFY_OK(a);
    /* 70 pages left at at[3]+130 (a list); 129 fits the 129 exactly */
    CU_ASSERT_EQUAL(fx_span(a, large(a, 129))->start, at[5]);
    CU_ASSERT_EQUAL(fx_span(a, large(a, 70))->start, at[3] + 130);
    CU_ASSERT_EQUAL(fx_span(a, large(a, 200))->start, at[4]);
    CU_ASSERT_EQUAL(fx_span(a, large(a, 250))->start, at[2]);
    VERIFY_OK(a);
    (void)sep;
}

/* Large spans with alignments from a page to 4 MiB; the unaligned head and
 * the tail go back to the heap. */
static void test_large_aligned(void)
{
    shm_arena_t *a = fx_new(128 * MiB);
    CU_ASSERT_PTR_NOT_NULL_FATAL(a);
    large(a, 3);                                  /* break the alignment */
    for (unsigned shift = 0; shift <= 22; shift++) {
        uint64_t align = 1ULL << shift;
        uint64_t bytes = 40000 + shift * 1000;
        int err = 1;
        shm_spanid_t id = spd_heap_alloc_large(a, bytes, align, &err);
        CU_ASSERT_FATAL(id != 0);
        CU_ASSERT_EQUAL(err, 0);
        shm_span_t *s = fx_span(a, id);
        uint64_t addr = (uint64_t)(uintptr_t)fx_addr(a, id);
        CU_ASSERT_EQUAL(addr % (align > SHM_PAGE_SIZE ? align : SHM_PAGE_SIZE), 0);
        CU_ASSERT_EQUAL(s->npages, (bytes + SHM_PAGE_SIZE - 1) / SHM_PAGE_SIZE);
        CU_ASSERT_EQUAL(fx_state(a, id), SHM_SPAN_LARGE);
        CU_ASSERT_EQUAL(s->sizeclass, 0);
        VERIFY_OK(a);
        /* every page's span is this one; the start is the object */
        for (uint32_t p = 0; p < s->npages; p++)
            CU_ASSERT_PTR_EQUAL(shm_span_of(a->base, fx_addr(a, id) + p * SHM_PAGE_SIZE + 17), s);
        shm_span_t *got = NULL;
        uint32_t idx = 99;
        CU_ASSERT_EQUAL(shm_ptr_check(a->base, fx_addr(a, id), &got, &idx), SHM_PTR_OK);
        CU_ASSERT_PTR_EQUAL(got, s);
        CU_ASSERT_EQUAL(shm_ptr_check(a->base, fx_addr(a, id) + 8, &got, &idx),
                        SHM_PTR_NOT_START);
        if (shift % 2)
            free_large(a, id);
        VERIFY_OK(a);
    }
    uint64_t live = heap_pages(a) - a->hdr->heap.free_pages;
    CU_ASSERT(live > 0);
    CU_ASSERT_EQUAL(a->hdr->stats.large_allocs, 24);
    CU_ASSERT_EQUAL(a->hdr->stats.large_frees, 11);
}

/* Bad sizes, alignments and offsets get clear errors and change nothing. */
static void test_large_invalid(void)
{
    shm_arena_t *a = fx_new(64 * MiB);
    CU_ASSERT_PTR_NOT_NULL_FATAL(a);
    shm_spanid_t L = large(a, 4);
    int err = 0;
    shm_spanid_t small = spd_heap_alloc_small(a, 7, &err);
    CU_ASSERT_FATAL(small != 0);
    fx_hold(a, small, 0);
    shm_heap_t before = a->hdr->heap;
    shm_stats_t sbefore = a->hdr->stats;
    CU_ASSERT_EQUAL(spd_heap_alloc_large(a, 0, 0, &err), 0);
    CU_ASSERT_EQUAL(err, -EINVAL);
    CU_ASSERT_EQUAL(spd_heap_alloc_large(a, 100000, 3 * SHM_PAGE_SIZE, &err), 0);
    CU_ASSERT_EQUAL(err, -EINVAL);
    CU_ASSERT_EQUAL(spd_heap_alloc_large(a, 100000, 1ULL << 40, &err), 0);
    CU_ASSERT_EQUAL(err, -EINVAL);
    CU_ASSERT_EQUAL(spd_heap_alloc_large(a, 65 * MiB, 0, &err), 0);
    CU_ASSERT_EQUAL(err, -ENOMEM);
    CU_ASSERT_EQUAL(spd_heap_alloc_large(a, UINT64_MAX, 0, &err), 0);
    CU_ASSERT_EQUAL(err, -ENOMEM);
    CU_ASSERT_EQUAL(spd_heap_alloc_large(a, 1 * MiB, 64 * MiB, &err), 0);
    CU_ASSERT_EQUAL(err, -ENOMEM);                /* cannot fit 64 MiB aligned */
    uint64_t off = span_off(a, L);
    CU_ASSERT_EQUAL(spd_heap_free_large(a, off + 8), -EINVAL);            /* not a page */
    CU_ASSERT_EQUAL(spd_heap_free_large(a, off + SHM_PAGE_SIZE), -EINVAL); /* inside */
    CU_ASSERT_EQUAL(spd_heap_free_large(a, span_off(a, small)), -EINVAL); /* small */
    CU_ASSERT_EQUAL(spd_heap_free_large(a, 0), -EINVAL);                  /* header */
    CU_ASSERT_EQUAL(spd_heap_free_large(a, a->hdr->data_off - SHM_PAGE_SIZE), -EINVAL);
    CU_ASSERT_EQUAL(spd_heap_free_large(a, (uint64_t)a->hdr->heap.end_page << 13), -EINVAL);
    CU_ASSERT_EQUAL(spd_heap_free_large(a, 1ULL << 40), -EINVAL);         /* outside */
    CU_ASSERT_EQUAL(spd_heap_free_large(a, off + 5 * SHM_PAGE_SIZE), -EINVAL); /* free */
    CU_ASSERT_EQUAL(memcmp(&before, &a->hdr->heap, sizeof before), 0);
    CU_ASSERT_EQUAL(memcmp(&sbefore, &a->hdr->stats, sizeof sbefore), 0);
    VERIFY_OK(a);
    CU_ASSERT_EQUAL(spd_heap_free_large(a, off), 0);
    CU_ASSERT_EQUAL(spd_heap_free_large(a, off), -EINVAL);                /* double */
    VERIFY_OK(a);
    /* spd_heap_free of a FREE or DEAD span changes nothing */
    before = a->hdr->heap;
    spd_heap_free(a, shm_spanmap(a->base)[off >> SHM_PAGE_SHIFT]);
    spd_heap_free(a, 0);
    spd_heap_free(a, a->hdr->spanalloc.hwm + 5);
    CU_ASSERT_EQUAL(memcmp(&before, &a->hdr->heap, sizeof before), 0);
    VERIFY_OK(a);
}

/* shm_span_of finds the span of every byte page of in-use spans, and nothing
 * on free pages or outside the heap. */
static void test_spanmap_lookup(void)
{
    shm_arena_t *a = fx_new(64 * MiB);
    CU_ASSERT_PTR_NOT_NULL_FATAL(a);
    shm_spanid_t ids[40];
    for (int i = 0; i < 40; i++) {
        int err;
        if (i % 3 == 0) {
            ids[i] = spd_heap_alloc_small(a, 1 + (unsigned)i % (SHM_NCLASSES - 1), &err);
            fx_hold(a, ids[i], 1);
        } else {
            ids[i] = large(a, 1 + (uint32_t)i * 7);
        }
        CU_ASSERT_FATAL(ids[i] != 0);
    }
    for (int i = 0; i < 40; i++) {
        shm_span_t *s = fx_span(a, ids[i]);
        for (uint32_t p = 0; p < s->npages; p++) {
            uint8_t *pg = fx_addr(a, ids[i]) + (uint64_t)p * SHM_PAGE_SIZE;
            CU_ASSERT_PTR_EQUAL(shm_span_of(a->base, pg), s);
            CU_ASSERT_PTR_EQUAL(shm_span_of(a->base, pg + SHM_PAGE_SIZE - 1), s);
        }
    }
    CU_ASSERT_PTR_NULL(shm_span_of(a->base, a->base));
    CU_ASSERT_PTR_NULL(shm_span_of(a->base, a->base + a->hdr->data_off - 1));
    CU_ASSERT_PTR_NULL(shm_span_of(a->base, a->base + a->hdr->arena_size));
    /* free the odd large ones: their interiors no longer map */
    for (int i = 1; i < 40; i += 2) {
        if (i % 3 == 0)
            continue;
        shm_span_t *s = fx_span(a, ids[i]);
        uint8_t *p0 = fx_addr(a, ids[i]);
        uint32_t n = s->npages;
        free_large(a, ids[i]);
        for (uint32_t p = 1; p + 1 < n; p++)
            CU_ASSERT_PTR_NULL(shm_span_of(a->base, p0 + (uint64_t)p * SHM_PAGE_SIZE));
        shm_span_t *got;
        uint32_t idx;
        CU_ASSERT_NOT_EQUAL(shm_ptr_check(a->base, p0, &got, &idx), SHM_PTR_OK);
    }
    VERIFY_OK(a);
}

/* The scavenger punches idle free spans; taking their pages backs them. */
static void test_scavenge(void)
{
    shm_arena_t *a = fx_new(64 * MiB);
    CU_ASSERT_PTR_NOT_NULL_FATAL(a);
    shm_spanid_t A = large(a, 40), sep1 = large(a, 1), B = large(a, 60), sep2 = large(a, 1);
    memset(fx_addr(a, A), 1, 40 * SHM_PAGE_SIZE);
    uint32_t a0 = fx_span(a, A)->start, b0 = fx_span(a, B)->start;
    free_large(a, A);
    free_large(a, B);
    uint32_t now = spd_now();
    CU_ASSERT_EQUAL(spd_heap_scavenge(a, now, 3600, UINT64_MAX), 0);  /* not idle */
    CU_ASSERT_EQUAL(spd_heap_scavenge(a, now, 0, 0), 0);              /* no budget */
    CU_ASSERT_EQUAL(a->hdr->heap.unbacked_pages, 0);
    uint64_t r0 = shm_arena_resident(a);
    /* a budget of 10 pages still punches one span (the first found) */
    uint64_t got = spd_heap_scavenge(a, now + 5, 0, 10);
    CU_ASSERT(got > 0);
    CU_ASSERT_EQUAL(shm_arena_resident(a), r0 - got);
    CU_ASSERT_EQUAL(a->hdr->stats.scavenged_bytes, got);
    CU_ASSERT_EQUAL(a->hdr->stats.scavenges, 1);
    uint64_t unb = a->hdr->heap.unbacked_pages;
    CU_ASSERT(unb == 40 || unb == 60 || unb == heap_pages(a) - 102);
    VERIFY_OK(a);
    got += spd_heap_scavenge(a, now + 5, 0, UINT64_MAX);
    CU_ASSERT_EQUAL(a->hdr->heap.unbacked_pages, a->hdr->heap.free_pages);
    CU_ASSERT_EQUAL(a->hdr->stats.scavenged_bytes, got);
    /* every byte counted came off the resident set; A and B were backed,
     * the rest of the heap's growth step may never have been */
    CU_ASSERT_EQUAL(shm_arena_resident(a), r0 - got);
    CU_ASSERT(got >= 100 * SHM_PAGE_SIZE);
    CU_ASSERT_EQUAL(fx_span(a, free_span_at(a, a0))->flags, SHM_SPAN_UNBACKED_ALL);
    CU_ASSERT_EQUAL(fx_span(a, free_span_at(a, b0))->flags, SHM_SPAN_UNBACKED_ALL);
    VERIFY_OK(a);
    /* punched again: nothing more */
    CU_ASSERT_EQUAL(spd_heap_scavenge(a, now + 9, 0, UINT64_MAX), 0);
    /* taking 30 pages of A (the smallest fit: the tail has 26) backs them
     * again; the rest stays punched */
    uint64_t r1 = shm_arena_resident(a);
    shm_spanid_t T = large(a, 30);
    CU_ASSERT_EQUAL(fx_span(a, T)->start, a0);
    CU_ASSERT_EQUAL(shm_arena_resident(a), r1 + 30 * SHM_PAGE_SIZE);
    CU_ASSERT_EQUAL(fx_span(a, T)->flags, 0);
    shm_spanid_t rest = free_span_at(a, a0 + 30);
    CU_ASSERT_FATAL(rest != 0);
    CU_ASSERT_EQUAL(fx_span(a, rest)->flags, SHM_SPAN_UNBACKED_ALL);
    CU_ASSERT_EQUAL(a->hdr->heap.unbacked_pages, a->hdr->heap.free_pages);
    uint8_t *p = fx_addr(a, T);
    CU_ASSERT_EQUAL(p[0], 0);                     /* punched pages read as zero */
    memset(p, 7, 30 * SHM_PAGE_SIZE);
    VERIFY_OK(a);
    /* freeing sep1 (backed) merges it with punched neighbours: SOME */
    free_large(a, sep1);
    shm_spanid_t m = free_span_at(a, a0 + 30);
    CU_ASSERT_FATAL(m != 0);
    CU_ASSERT_EQUAL(fx_span(a, m)->npages, 10 + 1 + 60);
    CU_ASSERT_EQUAL(fx_span(a, m)->flags, SHM_SPAN_UNBACKED_SOME);
    CU_ASSERT_EQUAL(a->hdr->heap.unbacked_pages, a->hdr->heap.free_pages - 71);
    VERIFY_OK(a);
    /* a SOME span is backed again when taken, and punched whole later */
    shm_spanid_t U = large(a, 71);
    CU_ASSERT_EQUAL(fx_span(a, U)->start, a0 + 30);
    memset(fx_addr(a, U), 9, 71 * SHM_PAGE_SIZE);
    free_large(a, U);
    CU_ASSERT_EQUAL(fx_span(a, free_span_at(a, a0 + 30))->flags, 0);
    CU_ASSERT(spd_heap_scavenge(a, spd_now() + 1, 0, UINT64_MAX) > 0);
    CU_ASSERT_EQUAL(a->hdr->heap.unbacked_pages, a->hdr->heap.free_pages);
    VERIFY_OK(a);
    (void)sep2;
}

/* Fill the arena until -ENOMEM; the failure changes nothing; freeing
 * everything leaves one free span covering the whole heap. */
static void test_full_arena(void)
{
    shm_arena_t *a = fx_new(16 * MiB);
    CU_ASSERT_PTR_NOT_NULL_FATAL(a);
    enum { MAXL = 4096 };
    shm_spanid_t *live = calloc(MAXL, sizeof *live);
    bool *is_small = calloc(MAXL, sizeof *is_small);
    CU_ASSERT_PTR_NOT_NULL_FATAL(live);
    CU_ASSERT_PTR_NOT_NULL_FATAL(is_small);
    unsigned n = 0;
    int err = 0;
    for (;;) {
        shm_spanid_t id;
        if (n % 3 == 0) {
            id = spd_heap_alloc_small(a, 1 + n % (SHM_NCLASSES - 1), &err);
            if (id)
                fx_hold(a, id, 2);
        } else {
            id = spd_heap_alloc_large(a, (1 + n % 23) * SHM_PAGE_SIZE, 0, &err);
        }
        if (id == 0)
            break;
        CU_ASSERT_FATAL(n < MAXL);
        is_small[n] = n % 3 == 0;
        live[n++] = id;
    }
    CU_ASSERT_EQUAL(err, -ENOMEM);
    CU_ASSERT(n > 50);
    VERIFY_OK(a);
    /* what is left is still handed out, a page at a time, to the last one */
    for (;;) {
        shm_spanid_t id = spd_heap_alloc_large(a, SHM_PAGE_SIZE, 0, &err);
        if (id == 0)
            break;
        CU_ASSERT_FATAL(n < MAXL);
        is_small[n] = false;
        live[n++] = id;
    }
    CU_ASSERT_EQUAL(err, -ENOMEM);
    CU_ASSERT_EQUAL(a->hdr->heap.free_pages, 0);
    /* the heap grew up to the end of the reservation, not past it */
    CU_ASSERT_EQUAL(a->hdr->heap.end_page, a->hdr->heap.limit_page);
    VERIFY_OK(a);
    /* a failed request changes nothing */
    shm_heap_t hb = a->hdr->heap;
    shm_fixalloc_t fb = a->hdr->spanalloc;
    shm_stats_t sb = a->hdr->stats;
    CU_ASSERT_EQUAL(spd_heap_alloc_large(a, SHM_PAGE_SIZE, 0, &err), 0);
    CU_ASSERT_EQUAL(err, -ENOMEM);
    CU_ASSERT_EQUAL(spd_heap_alloc_small(a, 1, &err), 0);
    CU_ASSERT_EQUAL(err, -ENOMEM);
    CU_ASSERT_EQUAL(memcmp(&hb, &a->hdr->heap, sizeof hb), 0);
    CU_ASSERT_EQUAL(memcmp(&fb, &a->hdr->spanalloc, sizeof fb), 0);
    CU_ASSERT_EQUAL(memcmp(&sb, &a->hdr->stats, sizeof sb), 0);
    VERIFY_OK(a);
    /* free in an interleaved order */
    for (unsigned pass = 0; pass < 2; pass++)
        for (unsigned i = pass; i < n; i += 2) {
            if (is_small[i]) {
                fx_unhold(a, live[i]);
                spd_heap_free(a, live[i]);
            } else {
                free_large(a, live[i]);
            }
            if (i % 16 == 0)
                VERIFY_OK(a);
        }
    VERIFY_OK(a);
    CU_ASSERT_EQUAL(a->hdr->heap.free_pages, heap_pages(a));
    CU_ASSERT_EQUAL(a->hdr->spanalloc.inuse, 1);
    CU_ASSERT_EQUAL(a->hdr->sessions[2].nspans, 0);
    /* and the whole heap can be taken again in one piece */
    shm_spanid_t all = spd_heap_alloc_large(a, (uint64_t)heap_pages(a) * SHM_PAGE_SIZE, 0, &err);
    CU_ASSERT(all != 0);
    VERIFY_OK(a);
    free(live);
    free(is_small);
}

/* Snapshot of what a failed call must not change. */
typedef struct snap_s {
    shm_heap_t heap;
    shm_fixalloc_t fix;
    uint64_t spans_allocated, grows;
} snap_t;

static snap_t snap(shm_arena_t *a)
{
    return (snap_t){ a->hdr->heap, a->hdr->spanalloc, a->hdr->stats.spans_allocated,
                     a->hdr->stats.grows };
}

static bool snap_same(const snap_t *x, const snap_t *y)
{
    return memcmp(&x->heap, &y->heap, sizeof x->heap) == 0 &&
           x->fix.free_head == y->fix.free_head && x->fix.hwm == y->fix.hwm &&
           x->fix.inuse == y->fix.inuse && x->spans_allocated == y->spans_allocated &&
           x->grows == y->grows;
}

/* Every shm_arena_back the heap makes can fail: growing (data, span map,
 * bitmap), backing descriptors, backing punched pages again.  Each failure
 * is -ENOMEM and leaves the heap exactly as it was. */
static void test_backing_failures(void)
{
    shm_arena_t *a = fx_new(256 * MiB);
    CU_ASSERT_PTR_NOT_NULL_FATAL(a);
    int err = 0;
    /* growing: fail the 1st, 2nd and 3rd call (data, span map, bitmap) */
    for (int k = 0; k < 3; k++) {
        snap_t s0 = snap(a);
        uint64_t r0 = shm_arena_resident(a);
        fx_back_fail = k;
        fx_back_calls = 0;
        CU_ASSERT_EQUAL(spd_heap_alloc_large(a, 300 * SHM_PAGE_SIZE, 0, &err), 0);
        fx_back_fail = -1;
        CU_ASSERT_EQUAL(err, -ENOMEM);
        CU_ASSERT_EQUAL(fx_back_calls, (unsigned)k + 1);
        snap_t s1 = snap(a);
        CU_ASSERT(snap_same(&s0, &s1));
        /* the data pages a failed grow backed are punched again; only the
         * span map's slots (one OS page) may stay */
        CU_ASSERT(shm_arena_resident(a) <= r0 + 2 * 4096);
        VERIFY_OK(a);
    }
    shm_spanid_t keep = large(a, 300);
    /* descriptors: use up every backed descriptor, then fail backing more */
    uint32_t room = a->hdr->spanalloc.backed - a->hdr->spanalloc.hwm;
    CU_ASSERT(room > 1000);
    shm_spanid_t *ids = calloc(room, sizeof *ids);
    CU_ASSERT_PTR_NOT_NULL_FATAL(ids);
    unsigned n = 0;
    /* 1-page spans; each leaves the free tail in a new descriptor at most */
    while (a->hdr->spanalloc.backed - a->hdr->spanalloc.hwm > 0 && n < room)
        ids[n++] = large(a, 1);
    VERIFY_OK(a);
    CU_ASSERT_EQUAL(a->hdr->spanalloc.hwm, a->hdr->spanalloc.backed);
    snap_t s0 = snap(a);
    fx_back_fail = 0;
    shm_spanid_t none = spd_heap_alloc_large(a, SHM_PAGE_SIZE, 0, &err);
    fx_back_fail = -1;
    /* either the last free run was used up exactly (no descriptor needed) or
     * the call failed cleanly */
    if (none == 0) {
        CU_ASSERT_EQUAL(err, -ENOMEM);
        snap_t s1 = snap(a);
        CU_ASSERT(snap_same(&s0, &s1));
    } else {
        ids[n++] = none;
    }
    VERIFY_OK(a);
    shm_spanid_t more = large(a, 1);              /* backing works again */
    CU_ASSERT(a->hdr->spanalloc.backed > s0.fix.backed);
    VERIFY_OK(a);
    for (unsigned i = 0; i < n; i++)
        free_large(a, ids[i]);
    free_large(a, more);
    free(ids);
    VERIFY_OK(a);
    /* backing punched pages again */
    free_large(a, keep);
    CU_ASSERT(spd_heap_scavenge(a, spd_now() + 10, 0, UINT64_MAX) > 0);
    CU_ASSERT_EQUAL(a->hdr->heap.unbacked_pages, a->hdr->heap.free_pages);
    s0 = snap(a);
    fx_back_fail = 0;
    CU_ASSERT_EQUAL(spd_heap_alloc_small(a, 5, &err), 0);
    fx_back_fail = -1;
    CU_ASSERT_EQUAL(err, -ENOMEM);
    snap_t s1 = snap(a);
    CU_ASSERT(snap_same(&s0, &s1));
    VERIFY_OK(a);
    shm_spanid_t ok = spd_heap_alloc_small(a, 5, &err);
    CU_ASSERT(ok != 0);
    if (ok) {
        memset(fx_addr(a, ok), 0x5a, SHM_PAGE_SIZE);  /* backed again: no SIGBUS */
        fx_hold(a, ok, 0);
    }
    VERIFY_OK(a);
}

/* ---- the randomized workload ---- */

typedef struct live_s {
    shm_spanid_t id;
    uint32_t start, npages;
    bool small;
} live_t;

typedef struct model_s {
    shm_arena_t *a;
    live_t *live;
    unsigned nlive, cap;
    uint32_t *owner;         /* per page from first_page: 1 + index into live, 0 free */
    uint64_t live_pages;
    unsigned allocs, frees, enomem;
} model_t;

static bool model_claim(model_t *m, unsigned k)
{
    const live_t *l = &m->live[k];
    uint32_t first = m->a->hdr->heap.first_page;
    bool ok = l->start >= first && l->start + l->npages <= m->a->hdr->heap.end_page;
    for (uint32_t p = l->start; ok && p < l->start + l->npages; p++) {
        if (m->owner[p - first] != 0)
            ok = false;          /* two live spans on one page */
        else
            m->owner[p - first] = k + 1;
    }
    m->live_pages += l->npages;
    return ok;
}

static void model_release(model_t *m, unsigned k)
{
    uint32_t first = m->a->hdr->heap.first_page;
    const live_t *l = &m->live[k];
    for (uint32_t p = l->start; p < l->start + l->npages; p++)
        m->owner[p - first] = 0;
    m->live_pages -= l->npages;
    /* move the last one into the hole, renumbering its pages */
    unsigned last = --m->nlive;
    if (k != last) {
        m->live[k] = m->live[last];
        for (uint32_t p = m->live[k].start; p < m->live[k].start + m->live[k].npages; p++)
            m->owner[p - first] = k + 1;
    }
}

static void model_alloc(model_t *m)
{
    shm_arena_t *a = m->a;
    live_t l = { 0 };
    int err = 0;
    uint64_t r = fx_rand();
    uint64_t free_before = a->hdr->heap.free_pages;
    uint32_t end_before = a->hdr->heap.end_page;
    uint64_t align = 0;
    if (r % 2) {
        unsigned c = 1 + (unsigned)((r >> 8) % (SHM_NCLASSES - 1));
        l.id = spd_heap_alloc_small(a, c, &err);
        l.small = true;
        if (l.id) {
            CU_ASSERT_EQUAL(fx_span(a, l.id)->npages, shm_classes[c].npages);
            CU_ASSERT_EQUAL(fx_span(a, l.id)->sizeclass, c);
            fx_hold(a, l.id, (unsigned)(r >> 20) % 3);
        }
    } else {
        /* mostly small runs, sometimes big ones, sometimes aligned */
        uint64_t pages = (r >> 8) % 8 == 0 ? 100 + (r >> 16) % 400 : 1 + (r >> 16) % 40;
        uint64_t bytes = pages * SHM_PAGE_SIZE - (r >> 32) % SHM_PAGE_SIZE;
        if ((r >> 40) % 10 == 0)
            align = SHM_PAGE_SIZE << ((r >> 44) % 7);
        l.id = spd_heap_alloc_large(a, bytes, align, &err);
        if (l.id) {
            CU_ASSERT_EQUAL(fx_span(a, l.id)->npages, pages);
            CU_ASSERT_EQUAL(fx_state(a, l.id), SHM_SPAN_LARGE);
            if (align)
                CU_ASSERT_EQUAL((uintptr_t)fx_addr(a, l.id) % align, 0);
        }
    }
    if (l.id == 0) {
        CU_ASSERT_EQUAL(err, -ENOMEM);
        CU_ASSERT_EQUAL(a->hdr->heap.free_pages, free_before);
        CU_ASSERT_EQUAL(a->hdr->heap.end_page, end_before);
        m->enomem++;
        return;
    }
    l.start = fx_span(a, l.id)->start;
    l.npages = fx_span(a, l.id)->npages;
    CU_ASSERT_FATAL(m->nlive < m->cap);
    m->live[m->nlive] = l;
    CU_ASSERT(model_claim(m, m->nlive));
    m->nlive++;
    m->allocs++;
}

static void model_free(model_t *m)
{
    unsigned k = (unsigned)(fx_rand() % m->nlive);
    live_t l = m->live[k];
    shm_span_t *s = fx_span(m->a, l.id);
    CU_ASSERT_EQUAL(s->start, l.start);           /* nothing moved it */
    CU_ASSERT_EQUAL(s->npages, l.npages);
    if (l.small) {
        fx_unhold(m->a, l.id);
        spd_heap_free(m->a, l.id);
    } else {
        CU_ASSERT_EQUAL(spd_heap_free_large(m->a, (uint64_t)l.start << SHM_PAGE_SHIFT), 0);
    }
    model_release(m, k);
    m->frees++;
}

static void test_random_workload(void)
{
    shm_arena_t *a = fx_new(32 * MiB);
    CU_ASSERT_PTR_NOT_NULL_FATAL(a);
    model_t m = { .a = a, .cap = 8192 };
    m.live = calloc(m.cap, sizeof *m.live);
    m.owner = calloc(a->hdr->npages, sizeof *m.owner);
    CU_ASSERT_PTR_NOT_NULL_FATAL(m.live);
    CU_ASSERT_PTR_NOT_NULL_FATAL(m.owner);
    fx_seed(0x5eed0001);
    const unsigned ops = 100000;
    unsigned verified = 0, failed = 0;
    for (unsigned i = 0; i < ops && failed < 3; i++) {
        uint64_t r = fx_rand() % 100;
        /* keep the live set between ~0 and ~2500 pages, with tides */
        unsigned tide = (i / 5000) % 2 ? 35 : 60;
        if (m.nlive == 0 || (r < tide && m.live_pages < 2500))
            model_alloc(&m);
        else if (r < 99)
            model_free(&m);
        else
            spd_heap_scavenge(a, spd_now() + 1, 0, 1 + fx_rand() % 200);
        shm_heap_t *h = &a->hdr->heap;
        CU_ASSERT_EQUAL(h->free_pages + m.live_pages, h->end_page - h->first_page);
        char msg[256];
        if (spd_heap_verify(a, msg, sizeof msg) != 0) {
            fprintf(stderr, "\n    step %u: %s\n", i, msg);
            failed++;
        }
        verified++;
    }
    CU_ASSERT_EQUAL(failed, 0);
    CU_ASSERT_EQUAL(verified, ops);
    CU_ASSERT(m.allocs > 30000);
    CU_ASSERT(m.frees > 30000);
    while (m.nlive > 0)
        model_free(&m);
    VERIFY_OK(a);
    CU_ASSERT_EQUAL(a->hdr->heap.free_pages, heap_pages(a));
    CU_ASSERT_EQUAL(a->hdr->spanalloc.inuse, 1);
    CU_ASSERT_EQUAL(a->hdr->stats.spans_allocated, m.allocs);
    CU_ASSERT_EQUAL(a->hdr->stats.spans_freed, m.allocs);
    free(m.live);
    free(m.owner);
}

CU_TestInfo heap_tests[] = {
    { "a fresh heap", test_init },
    { "small spans of every class", test_small_spans },
    { "growth in steps of >= 1 MiB, backed", test_growth },
    { "free merges on both sides", test_merge_both_sides },
    { "exact list, then best fit", test_best_fit },
    { "large spans with alignment", test_large_aligned },
    { "bad large requests and frees", test_large_invalid },
    { "span map lookups of every page", test_spanmap_lookup },
    { "scavenging and backing again", test_scavenge },
    { "full arena: ENOMEM, then free all", test_full_arena },
    { "failures to back pages leave the heap intact", test_backing_failures },
    { "randomized workload, verified every step", test_random_workload },
    CU_TEST_INFO_NULL,
};

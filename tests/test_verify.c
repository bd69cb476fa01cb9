/* See shm/layout.h for the overview.
 *
 * The verifier (daemon/verify.c) fails on deliberately broken heaps: one
 * test per kind of damage, each on a heap that verified before the damage,
 * each expecting -1 and a message that names the problem.
 */
#include "config.h"

#include <string.h>

#include "daemon/list.h"
#include "shm/lpool.h"
#include "tests/test_core.h"
#include "tests/span_take.h"

/* A heap with a bit of everything. */
typedef struct world_s {
    shm_arena_t *a;
    shm_spanid_t L1, L2, L3;     /* 1-page LARGE spans at the heap's start */
    shm_spanid_t F3;             /* a FREE span of 3 pages, alone on its list */
    shm_spanid_t T1, T2;         /* FREE spans of 200 and 300 pages (treap) */
    shm_spanid_t P, P2;          /* CENTRAL partial spans of class 5 */
    shm_spanid_t Fu;             /* CENTRAL full span of class 52 (every object allocated) */
    shm_spanid_t H;              /* HELD by session 1, class 3 (341 objects) */
    shm_spanid_t Ti;             /* HELD by session 2, the tiny class */
    shm_spanid_t Lg;             /* a LARGE span of 10 pages, followed by free pages */
} world_t;

static shm_spanid_t lg(shm_arena_t *a, uint32_t n)
{
    int err;
    shm_spanid_t id = spd_heap_alloc_large(a, (uint64_t)n * SHM_PAGE_SIZE, 0, &err);
    CU_ASSERT_FATAL(id != 0);
    return id;
}

static shm_spanid_t taken(shm_arena_t *a, unsigned cls, uint32_t nalloc)
{
    int err;
    shm_spanid_t id = spd_central_take(a, cls, &err);
    CU_ASSERT_FATAL(id != 0);
    for (uint32_t i = 0; i < nalloc; i++)
        CU_ASSERT_PTR_NOT_NULL(fx_take(a->base, fx_span(a, id)));
    return id;
}

static bool build(world_t *w)
{
    shm_arena_t *a = w->a = fx_new(64ULL << 20);
    if (a == NULL)
        return false;
    w->L1 = lg(a, 1);
    w->L2 = lg(a, 1);
    w->L3 = lg(a, 1);
    w->F3 = lg(a, 3);
    lg(a, 1);
    w->T1 = lg(a, 200);
    lg(a, 1);
    w->T2 = lg(a, 300);
    lg(a, 1);
    w->P = taken(a, 5, 3);
    w->P2 = taken(a, 5, 7);
    w->Fu = taken(a, 52, shm_classes[52].nelems);
    CU_ASSERT_EQUAL(spd_central_put(a, w->P), SPD_PUT_PARTIAL);
    CU_ASSERT_EQUAL(spd_central_put(a, w->P2), SPD_PUT_PARTIAL);
    CU_ASSERT_EQUAL(spd_central_put(a, w->Fu), SPD_PUT_FULL);
    w->H = taken(a, 3, 100);
    fx_hold(a, w->H, 0);
    w->Ti = taken(a, SHM_CLASS_TINY, 10);
    fx_hold(a, w->Ti, 1);
    w->Lg = lg(a, 10);
    /* the holes last, so that nothing above was cut out of them */
    uint32_t t1 = fx_span(a, w->T1)->start, t2 = fx_span(a, w->T2)->start;
    uint32_t f3 = fx_span(a, w->F3)->start;
    spd_heap_free_large(a, (uint64_t)t1 << SHM_PAGE_SHIFT);
    spd_heap_free_large(a, (uint64_t)t2 << SHM_PAGE_SHIFT);
    spd_heap_free_large(a, (uint64_t)f3 << SHM_PAGE_SHIFT);
    w->T1 = shm_spanmap(a->base)[t1];
    w->T2 = shm_spanmap(a->base)[t2];
    w->F3 = shm_spanmap(a->base)[f3];
    char msg[256];
    int rc = spd_heap_verify(a, msg, sizeof msg);
    if (rc != 0)
        fprintf(stderr, "\n    build: %s\n", msg);
    CU_ASSERT_EQUAL(rc, 0);
    CU_ASSERT_EQUAL(a->hdr->heap.free_head[3], w->F3);
    CU_ASSERT_EQUAL(fx_span(a, w->F3)->next, 0);
    CU_ASSERT(a->hdr->heap.treap_root == w->T1 || a->hdr->heap.treap_root == w->T2);
    return rc == 0;
}

/* spd_heap_verify fails, and its message names the problem. */
static void expect_broken(shm_arena_t *a, const char *what1, const char *what2)
{
    char msg[256] = "untouched";
    int rc = spd_heap_verify(a, msg, sizeof msg);
    CU_ASSERT_EQUAL(rc, -1);
    bool named = strstr(msg, what1) != NULL && (what2 == NULL || strstr(msg, what2) != NULL);
    if (!named)
        fprintf(stderr, "\n    wanted \"%s\"%s%s, got: %s\n", what1, what2 ? " and " : "",
                what2 ? what2 : "", msg);
    CU_ASSERT(named);
}

#define WORLD(w)                                                               \
    world_t w;                                                                 \
    CU_ASSERT_FATAL(build(&w));                                                \
    shm_arena_t *a = w.a;                                                      \
    _Atomic uint32_t *map = shm_spanmap(a->base);                              \
    (void)map

static void test_spanmap_inuse(void)
{
    WORLD(w);
    map[fx_span(a, w.Lg)->start + 3] = 0;
    expect_broken(a, "spanmap", "in-use span");
}

static void test_spanmap_first_page(void)
{
    WORLD(w);
    map[fx_span(a, w.H)->start] = 0;
    expect_broken(a, "spanmap", "no span");
}

static void test_spanmap_free_interior(void)
{
    WORLD(w);
    map[fx_span(a, w.T1)->start + 5] = w.H;
    expect_broken(a, "spanmap", "free span");
}

static void test_spanmap_dead(void)
{
    WORLD(w);
    /* a descriptor that is DEAD: make one by merging */
    spd_heap_free_large(a, (uint64_t)fx_span(a, w.L1)->start << SHM_PAGE_SHIFT);
    shm_spanid_t l2 = w.L2;
    uint32_t p2 = fx_span(a, l2)->start;
    spd_heap_free_large(a, (uint64_t)p2 << SHM_PAGE_SHIFT);   /* merges: L2 dies */
    VERIFY_OK(a);
    CU_ASSERT_EQUAL_FATAL(fx_state(a, l2), SHM_SPAN_DEAD);
    map[fx_span(a, w.Lg)->start] = l2;
    expect_broken(a, "spanmap", "DEAD");
}

static void test_spanmap_outside(void)
{
    WORLD(w);
    uint32_t end = a->hdr->heap.end_page;
    CU_ASSERT_FATAL(end % 1024 != 0);   /* the slot shares a backed OS page */
    map[end] = w.Lg;
    expect_broken(a, "spanmap", "past the heap's end");
}

static void test_classmap_held(void)
{
    WORLD(w);
    _Atomic uint8_t *cm = shm_classmap(a->base);
    uint32_t last = fx_span(a, w.H)->start + fx_span(a, w.H)->npages - 1;
    CU_ASSERT_EQUAL(cm[last], 3);
    cm[last] = 4;
    expect_broken(a, "classmap", "class 3) says class 4");
}

static void test_classmap_central(void)
{
    WORLD(w);
    shm_classmap(a->base)[fx_span(a, w.P)->start] = 0;
    expect_broken(a, "classmap", "class 5) says class 0");
}

static void test_overlap(void)
{
    WORLD(w);
    fx_span(a, w.Lg)->npages += 1;      /* over the free tail's first page */
    expect_broken(a, "overlap", NULL);
}

static void test_two_lists(void)
{
    WORLD(w);
    CU_ASSERT_EQUAL_FATAL(a->hdr->central[7].partial, 0);
    spd_list_push(a->base, &a->hdr->central[7].partial, w.F3);
    a->hdr->central[7].npartial = 1;
    expect_broken(a, "two lists", "heap free list 3");
}

static void test_adjacent_free(void)
{
    WORLD(w);
    spd_heap_free_large(a, (uint64_t)fx_span(a, w.L1)->start << SHM_PAGE_SHIFT);
    VERIFY_OK(a);
    /* L2 turned FREE by hand, on the right list, counted: only the merge is
     * missing */
    shm_store_release(&fx_span(a, w.L2)->xstate, SHM_SPAN_FREE);
    spd_list_push(a->base, &a->hdr->heap.free_head[1], w.L2);
    a->hdr->heap.free_pages += 1;
    expect_broken(a, "adjacent free spans", NULL);
}

static void test_free_count(void)
{
    WORLD(w);
    a->hdr->heap.free_pages += 1;
    expect_broken(a, "free_pages", NULL);
}

static void test_unbacked_count(void)
{
    WORLD(w);
    a->hdr->heap.unbacked_pages += 3;
    expect_broken(a, "unbacked_pages", NULL);
}

static void test_free_span_off_list(void)
{
    WORLD(w);
    spd_list_remove(a->base, &a->hdr->heap.free_head[3], w.F3);
    expect_broken(a, "is on no list", "expected its heap free list");
}

static void test_wrong_kind_on_heap_list(void)
{
    WORLD(w);
    CU_ASSERT_EQUAL_FATAL(a->hdr->heap.free_head[10], 0);
    spd_list_push(a->base, &a->hdr->heap.free_head[10], w.Lg);
    expect_broken(a, "LARGE", "heap free list 10");
}

static void test_broken_prev(void)
{
    WORLD(w);
    shm_central_t *c = &a->hdr->central[5];
    CU_ASSERT_EQUAL_FATAL(c->npartial, 2);
    fx_span(a, fx_span(a, c->partial)->next)->prev = 0;
    expect_broken(a, "prev", NULL);
}

static void test_treap_order(void)
{
    WORLD(w);
    shm_spanid_t root = a->hdr->heap.treap_root;
    shm_span_t *r = fx_span(a, root);
    /* the other node hangs on the wrong side */
    shm_spanid_t tmp = r->left;
    r->left = r->right;
    r->right = tmp;
    expect_broken(a, "treap", "out of order");
}

static void test_treap_priority(void)
{
    WORLD(w);
    shm_spanid_t root = a->hdr->heap.treap_root;
    shm_span_t *r = fx_span(a, root);
    shm_spanid_t child = r->left ? r->left : r->right;
    CU_ASSERT_FATAL(child != 0);
    shm_span_t *c = fx_span(a, child);
    /* rotate: keys stay in order, the heap order breaks */
    if (r->left == child) {
        r->left = c->right;
        c->right = root;
    } else {
        r->right = c->left;
        c->left = root;
    }
    a->hdr->heap.treap_root = child;
    expect_broken(a, "treap", "priority");
}

static void test_treap_wrong_size(void)
{
    WORLD(w);
    /* a 3-page span moved into the treap */
    spd_list_remove(a->base, &a->hdr->heap.free_head[3], w.F3);
    shm_span_t *r = fx_span(a, a->hdr->heap.treap_root);
    shm_spanid_t *slot = r->left == 0 ? &r->left : &r->right;
    CU_ASSERT_FATAL(*slot == 0);
    *slot = w.F3;
    expect_broken(a, "treap", "3 pages");
}

static void test_stray_bitmap_bit(void)
{
    WORLD(w);
    shm_span_t *s = fx_span(a, w.H);
    CU_ASSERT_FATAL(s->nelems % 64 != 0);
    shm_bit_set(shm_span_bitmap(a->base, s), s->nelems);
    expect_broken(a, "bitmap", "nelems");
}

static void test_reserved_bit(void)
{
    WORLD(w);
    shm_bit_clear(shm_span_bitmap(a->base, fx_span(a, w.Ti)), 0);
    expect_broken(a, "bitmap", "reserved");
}

static void test_partial_without_free(void)
{
    WORLD(w);
    shm_span_t *s = fx_span(a, w.P);
    for (uint32_t i = 0; i < s->nelems; i++)
        shm_bit_set(shm_span_bitmap(a->base, s), i);
    expect_broken(a, "partial", "no free object");
}

static void test_central_full_count(void)
{
    WORLD(w);
    a->hdr->central[52].nfull += 1;
    expect_broken(a, "central", "nfull");
}

static void test_central_partial_count(void)
{
    WORLD(w);
    a->hdr->central[5].npartial -= 1;
    expect_broken(a, "central", "npartial");
}

static void test_central_class(void)
{
    WORLD(w);
    /* the full span of class 52 moved to class 53's list */
    spd_list_remove(a->base, &a->hdr->central[52].full, w.Fu);
    a->hdr->central[52].nfull--;
    spd_list_push(a->base, &a->hdr->central[53].full, w.Fu);
    a->hdr->central[53].nfull++;
    expect_broken(a, "central", "class 53");
}

static void test_quarantine_misplaced(void)
{
    WORLD(w);
    fx_span(a, w.P)->flags = SHM_SPAN_CORRUPT;
    expect_broken(a, "quarantined", NULL);
}

static void test_session_owner(void)
{
    WORLD(w);
    fx_span(a, w.H)->session = 2;
    expect_broken(a, "session", "session 2");
}

static void test_session_count(void)
{
    WORLD(w);
    a->hdr->sessions[0].nspans += 1;
    expect_broken(a, "session", "nspans");
}

static void test_held_off_list(void)
{
    WORLD(w);
    fx_unhold(a, w.Ti);
    expect_broken(a, "HELD", "expected a session list");
}

static void test_central_off_list(void)
{
    WORLD(w);
    int err;
    shm_spanid_t id = spd_central_take(a, 9, &err);   /* taken and not placed */
    CU_ASSERT_FATAL(id != 0);
    expect_broken(a, "CENTRAL", "expected a central list");
}

static void test_leaked_descriptor(void)
{
    WORLD(w);
    shm_fixalloc_t *f = &a->hdr->spanalloc;
    CU_ASSERT_FATAL(f->hwm < f->backed);
    shm_spanid_t id = f->hwm++;
    f->inuse++;
    shm_span_t *s = fx_span(a, id);
    s->start = fx_span(a, w.Lg)->start;
    s->npages = 1;
    shm_store_release(&s->xstate, SHM_SPAN_LARGE);
    expect_broken(a, "leak", NULL);
}

static void test_fixalloc_count(void)
{
    WORLD(w);
    a->hdr->spanalloc.inuse += 1;
    expect_broken(a, "span allocator", NULL);
}

static void test_header_bounds(void)
{
    WORLD(w);
    a->hdr->heap.end_page = a->hdr->heap.limit_page + 1;
    expect_broken(a, "header", "end_page");
}

static void test_free_span_flags(void)
{
    WORLD(w);
    fx_span(a, w.T1)->flags = SHM_SPAN_UNBACKED_ALL | SHM_SPAN_UNBACKED_SOME;
    expect_broken(a, "flags", NULL);
}

static void test_small_shape(void)
{
    WORLD(w);
    fx_span(a, w.H)->nelems -= 1;
    expect_broken(a, "class 3", "objects");
}

/* ---- the large pool: an arena with no session, three pooled spans ---- */

typedef struct pool_s {
    shm_arena_t *a;
    shm_spanid_t x, y, z;        /* x and y pooled in the 6-page bucket, z in 9 */
} pool_t;

static bool build_pool(pool_t *p)
{
    shm_arena_t *a = p->a = fx_new(64ULL << 20);
    if (a == NULL)
        return false;
    a->hdr->lpool.cap_pages = 1024;
    p->x = lg(a, 6);
    p->y = lg(a, 6);
    p->z = lg(a, 9);
    lg(a, 9);                    /* allocated, tag 0 */
    CU_ASSERT_EQUAL(shm_lpool_free(a->base, fx_span(a, p->x)), SHM_LFREE_POOLED);
    CU_ASSERT_EQUAL(shm_lpool_free(a->base, fx_span(a, p->y)), SHM_LFREE_POOLED);
    CU_ASSERT_EQUAL(shm_lpool_free(a->base, fx_span(a, p->z)), SHM_LFREE_POOLED);
    char msg[256];
    int rc = spd_heap_verify(a, msg, sizeof msg);
    if (rc != 0)
        fprintf(stderr, "\n    build_pool: %s\n", msg);
    CU_ASSERT_EQUAL(rc, 0);
    return rc == 0;
}

#define POOL(p)                                                                \
    pool_t p;                                                                  \
    CU_ASSERT_FATAL(build_pool(&p));                                           \
    shm_arena_t *a = p.a

static void test_large_tag(void)
{
    WORLD(w);
    shm_store_relaxed(&fx_span(a, w.Lg)->xowner, 1234);
    expect_broken(a, "large span", "tag");
}

/* A large span kept by a thread's cache names the caching session in
 * xremote; an open session is fine, a closed one is a span nobody will
 * ever free (the daemon frees them when a session ends). */
static void test_large_cached_closed(void)
{
    WORLD(w);
    shm_span_t *s = fx_span(a, w.Lg);
    uint32_t slot = SHM_MAX_SESSIONS - 2;                   /* the world uses the first */
    CU_ASSERT_EQUAL_FATAL(a->hdr->sessions[slot].pid, 0);
    CU_ASSERT_EQUAL_FATAL(a->hdr->sessions[slot + 1].pid, 0);
    a->hdr->sessions[slot].pid = 4242;                      /* an open session */
    a->hdr->nsessions++;
    shm_store_relaxed(&s->xowner, SHM_LARGE_CACHED);
    shm_store_relaxed(&s->xlarge, slot + 1);
    char msg[256];
    CU_ASSERT_EQUAL(spd_heap_verify(a, msg, sizeof msg), 0);
    shm_store_relaxed(&s->xlarge, slot + 2);               /* not open */
    expect_broken(a, "large span", "not open");
}

static void test_pool_xpages(void)
{
    POOL(p);
    shm_fetch_add_relaxed(&a->hdr->lpool.xpages, 1);
    expect_broken(a, "large pool", "xpages");
}

static void test_pool_cycle(void)
{
    POOL(p);
    shm_store_relaxed(&fx_span(a, p.x)->xlarge, p.y);      /* y -> x -> y */
    expect_broken(a, "large pool", "twice");
}

static void test_pool_wrong_size(void)
{
    POOL(p);
    shm_store_relaxed(&fx_span(a, p.x)->xlarge, p.z);      /* a 9-page span among 6 */
    expect_broken(a, "large pool", "of 9 pages");
}

static void test_pool_untagged(void)
{
    POOL(p);
    shm_store_relaxed(&fx_span(a, p.y)->xowner, 0);
    expect_broken(a, "large pool", "not a POOLED large span");
}

static void test_pool_lost(void)
{
    POOL(p);
    shm_store_relaxed(&fx_span(a, p.y)->xlarge, 0);        /* x falls off */
    shm_fetch_sub_relaxed(&a->hdr->lpool.xpages, 6);
    expect_broken(a, "large pool", "tagged POOLED");
}

CU_TestInfo verify_tests[] = {
    { "a large span with a bad tag", test_large_tag },
    { "a large span cached by a session that is not open", test_large_cached_closed },
    { "large pool: xpages off", test_pool_xpages },
    { "large pool: a cycle", test_pool_cycle },
    { "large pool: a span of the wrong size", test_pool_wrong_size },
    { "large pool: an allocated span in a bucket", test_pool_untagged },
    { "large pool: a pooled span on no bucket", test_pool_lost },
    { "span map: an in-use page maps to 0", test_spanmap_inuse },
    { "span map: a span's first page maps to 0", test_spanmap_first_page },
    { "span map: a free span's interior maps", test_spanmap_free_interior },
    { "span map: a page maps to a dead descriptor", test_spanmap_dead },
    { "span map: a page past the heap maps", test_spanmap_outside },
    { "class map: a held span's last page names another class", test_classmap_held },
    { "class map: a central span's first page names none", test_classmap_central },
    { "overlapping spans", test_overlap },
    { "a span on two lists", test_two_lists },
    { "two adjacent free spans", test_adjacent_free },
    { "wrong free page count", test_free_count },
    { "wrong unbacked page count", test_unbacked_count },
    { "a free span on no list", test_free_span_off_list },
    { "a large span on a heap list", test_wrong_kind_on_heap_list },
    { "a broken prev link", test_broken_prev },
    { "treap out of order", test_treap_order },
    { "treap out of heap order", test_treap_priority },
    { "a small free span in the treap", test_treap_wrong_size },
    { "a stray bitmap bit above nelems", test_stray_bitmap_bit },
    { "a reserved tiny object unmarked", test_reserved_bit },
    { "a partial span with no free object", test_partial_without_free },
    { "wrong central full count", test_central_full_count },
    { "wrong central partial count", test_central_partial_count },
    { "a span on another class's list", test_central_class },
    { "a quarantined span off the full list", test_quarantine_misplaced },
    { "a held span with the wrong session", test_session_owner },
    { "wrong session count", test_session_count },
    { "a held span on no session list", test_held_off_list },
    { "a central span on no list", test_central_off_list },
    { "a leaked descriptor", test_leaked_descriptor },
    { "wrong span-allocator count", test_fixalloc_count },
    { "header bounds", test_header_bounds },
    { "free span flags", test_free_span_flags },
    { "a small span of the wrong shape", test_small_shape },
    CU_TEST_INFO_NULL,
};

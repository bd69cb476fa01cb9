/* See shm/layout.h for the overview.
 *
 * Central lists (daemon/central.c): take and put between partial, full and
 * the heap; remote frees turning full spans partial; the sweep and its
 * budget; quarantine of a corrupt remote stack; errors; and a randomized
 * take / allocate / remote-free / release workload verified every step.
 */
#include "config.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "daemon/list.h"
#include "tests/test_core.h"
#include "tests/span_take.h"

static uint8_t *obj(shm_arena_t *a, shm_spanid_t id, uint32_t i)
{
    shm_span_t *s = fx_span(a, id);
    return shm_span_addr(a->base, s) + (uint64_t)i * shm_classes[s->sizeclass].size;
}

/* Take a span of `cls` and allocate `n` objects from it as its holder. */
static shm_spanid_t take_alloc(shm_arena_t *a, unsigned cls, uint32_t n)
{
    int err = 1;
    shm_spanid_t id = spd_central_take(a, cls, &err);
    CU_ASSERT(id != 0);
    CU_ASSERT_EQUAL(err, 0);
    if (id == 0)
        return 0;
    shm_span_t *s = fx_span(a, id);
    CU_ASSERT_EQUAL(fx_state(a, id), SHM_SPAN_CENTRAL);
    CU_ASSERT_EQUAL(s->hstate, 0);
    CU_ASSERT_EQUAL(s->hnext, 0);
    CU_ASSERT_EQUAL(s->hprev, 0);
    CU_ASSERT_EQUAL(s->next, 0);
    CU_ASSERT_EQUAL(s->prev, 0);
    CU_ASSERT_EQUAL(shm_load_relaxed(&s->xowner), 0);
    for (uint32_t i = 0; i < n; i++)
        CU_ASSERT_PTR_NOT_NULL(fx_take(a->base, s));
    return id;
}

static void test_take_from_heap(void)
{
    shm_arena_t *a = fx_new(64ULL << 20);
    CU_ASSERT_PTR_NOT_NULL_FATAL(a);
    for (unsigned c = 1; c < SHM_NCLASSES; c++) {
        uint64_t before = a->hdr->stats.spans_allocated;
        shm_spanid_t id = take_alloc(a, c, 0);
        CU_ASSERT_FATAL(id != 0);
        CU_ASSERT_EQUAL(a->hdr->stats.spans_allocated, before + 1);
        CU_ASSERT_EQUAL(fx_span(a, id)->sizeclass, c);
        CU_ASSERT_EQUAL(fx_span(a, id)->nelems, shm_classes[c].nelems);
        fx_hold(a, id, 0);
        VERIFY_OK(a);
    }
    int err = 0;
    CU_ASSERT_EQUAL(spd_central_take(a, 0, &err), 0);
    CU_ASSERT_EQUAL(err, -EINVAL);
    CU_ASSERT_EQUAL(spd_central_take(a, SHM_NCLASSES, &err), 0);
    CU_ASSERT_EQUAL(err, -EINVAL);
}

/* put: empty -> heap, some free -> partial, none free -> full; take prefers
 * partial, then full spans with remote frees, then the heap. */
static void test_put_and_take(void)
{
    shm_arena_t *a = fx_new(64ULL << 20);
    CU_ASSERT_PTR_NOT_NULL_FATAL(a);
    const unsigned c = 8;                     /* 64 B */
    const uint32_t nel = shm_classes[c].nelems;
    CU_ASSERT_FATAL(nel > 77);
    shm_central_t *ce = &a->hdr->central[c];
    uint64_t free0;

    shm_spanid_t e = take_alloc(a, c, 0);
    free0 = a->hdr->heap.free_pages;
    CU_ASSERT_EQUAL(spd_central_put(a, e), SPD_PUT_HEAP);
    CU_ASSERT_EQUAL(a->hdr->heap.free_pages, free0 + shm_classes[c].npages);
    VERIFY_OK(a);

    /* objects allocated and freed again locally: still empty */
    e = take_alloc(a, c, 20);
    for (uint32_t i = 0; i < 20; i++)
        shm_bit_clear(shm_span_bitmap(a->base, fx_span(a, e)), i);
    CU_ASSERT_EQUAL(spd_central_put(a, e), SPD_PUT_HEAP);

    shm_spanid_t p = take_alloc(a, c, 5);
    fx_hold(a, p, 0);                          /* as Refill hands it out */
    fx_unhold(a, p);
    CU_ASSERT_EQUAL(spd_central_put(a, p), SPD_PUT_PARTIAL);
    CU_ASSERT_EQUAL(ce->npartial, 1);
    CU_ASSERT_EQUAL(ce->partial, p);
    CU_ASSERT_EQUAL(fx_state(a, p), SHM_SPAN_CENTRAL);
    CU_ASSERT_EQUAL(fx_span(a, p)->session, 0);
    CU_ASSERT_EQUAL(fx_span(a, p)->hstate, 0);
    VERIFY_OK(a);
    uint64_t allocated = a->hdr->stats.spans_allocated;
    CU_ASSERT_EQUAL(take_alloc(a, c, 0), p);   /* partial first */
    CU_ASSERT_EQUAL(ce->npartial, 0);
    CU_ASSERT_EQUAL(a->hdr->stats.spans_allocated, allocated);
    CU_ASSERT_EQUAL(shm_span_count(a->base, fx_span(a, p)), 5);
    /* the next holder starts from the bitmap: the next object is the first
     * free one */
    uint8_t *o = fx_take(a->base, fx_span(a, p));
    CU_ASSERT_PTR_EQUAL(o, obj(a, p, 5));
    fx_hold(a, p, 0);

    /* full */
    shm_spanid_t f = take_alloc(a, c, nel);
    CU_ASSERT_EQUAL(spd_central_put(a, f), SPD_PUT_FULL);
    CU_ASSERT_EQUAL(ce->nfull, 1);
    VERIFY_OK(a);
    shm_spanid_t n = take_alloc(a, c, 0);      /* nothing came back: a new span */
    CU_ASSERT(n != f);
    CU_ASSERT_EQUAL(ce->nfull, 1);
    CU_ASSERT_EQUAL(a->hdr->stats.spans_allocated, allocated + 2);   /* f and n */
    fx_hold(a, n, 0);
    /* a remote free makes the full span usable: take drains it */
    shm_remote_push(a->base, fx_span(a, f), obj(a, f, 77));
    CU_ASSERT_EQUAL(take_alloc(a, c, 0), f);
    CU_ASSERT_EQUAL(ce->nfull, 0);
    CU_ASSERT_EQUAL(shm_span_count(a->base, fx_span(a, f)), nel - 1);
    CU_ASSERT_EQUAL(shm_load_relaxed(&fx_span(a, f)->xremote), 0);
    fx_hold(a, f, 0);
    VERIFY_OK(a);

    /* put drains the remote stack first: all objects freed remotely while
     * the span was held -> heap */
    shm_spanid_t r = take_alloc(a, c, 10);
    fx_hold(a, r, 1);
    for (uint32_t i = 0; i < 10; i++)
        shm_remote_push(a->base, fx_span(a, r), obj(a, r, i));
    fx_unhold(a, r);
    CU_ASSERT_EQUAL(spd_central_put(a, r), SPD_PUT_HEAP);
    CU_ASSERT_EQUAL(fx_state(a, r) == SHM_SPAN_FREE || fx_state(a, r) == SHM_SPAN_DEAD, 1);
    VERIFY_OK(a);
}

/* Full spans: some objects freed remotely -> partial; all -> heap; none ->
 * stays; the budget bounds the spans looked at.  Partial spans emptied by
 * remote frees -> heap. */
static void test_sweep(void)
{
    shm_arena_t *a = fx_new(64ULL << 20);
    CU_ASSERT_PTR_NOT_NULL_FATAL(a);
    const unsigned c = 20;                    /* 208 B */
    const uint32_t nel = shm_classes[c].nelems;
    CU_ASSERT_FATAL(nel > 21);
    shm_central_t *ce = &a->hdr->central[c];
    shm_spanid_t s[4];
    for (int i = 0; i < 4; i++) {
        s[i] = take_alloc(a, c, nel);
        CU_ASSERT_FATAL(s[i] != 0);
    }
    for (int i = 0; i < 4; i++)
        CU_ASSERT_EQUAL(spd_central_put(a, s[i]), SPD_PUT_FULL);
    CU_ASSERT_EQUAL(ce->nfull, 4);
    CU_ASSERT_EQUAL(spd_central_sweep(a, 100), 0);   /* nothing came back */
    shm_remote_push(a->base, fx_span(a, s[0]), obj(a, s[0], 3));
    for (uint32_t i = 0; i < nel; i++)
        shm_remote_push(a->base, fx_span(a, s[1]), obj(a, s[1], i));
    shm_remote_push(a->base, fx_span(a, s[3]), obj(a, s[3], nel - 1));
    uint64_t freed = a->hdr->stats.spans_freed;
    /* budget 2 looks at s[3] and s[2] (the list is newest first) */
    CU_ASSERT_EQUAL(spd_central_sweep(a, 2), 1);
    CU_ASSERT_EQUAL(ce->npartial, 1);
    CU_ASSERT_EQUAL(ce->partial, s[3]);
    CU_ASSERT_EQUAL(ce->nfull, 3);
    VERIFY_OK(a);
    CU_ASSERT_EQUAL(spd_central_sweep(a, 100), 2);
    CU_ASSERT_EQUAL(ce->npartial, 2);
    CU_ASSERT_EQUAL(ce->nfull, 1);
    CU_ASSERT_EQUAL(ce->full, s[2]);
    CU_ASSERT_EQUAL(a->hdr->stats.spans_freed, freed + 1);   /* s[1] */
    CU_ASSERT_EQUAL(shm_span_count(a->base, fx_span(a, s[0])), nel - 1);
    VERIFY_OK(a);
    CU_ASSERT_EQUAL(spd_central_sweep(a, 0), 0);

    /* partial spans are swept too: s[3] (nel - 1 live) with some of its objects
     * freed remotely stays partial; once the rest come back it goes to the
     * heap */
    for (uint32_t i = 0; i < 20; i++)
        shm_remote_push(a->base, fx_span(a, s[3]), obj(a, s[3], i));
    CU_ASSERT_EQUAL(spd_central_sweep(a, 100), 0);
    CU_ASSERT_EQUAL(ce->npartial, 2);
    CU_ASSERT_EQUAL(shm_span_count(a->base, fx_span(a, s[3])), nel - 21);
    VERIFY_OK(a);
    for (uint32_t i = 20; i < nel - 1; i++)
        shm_remote_push(a->base, fx_span(a, s[3]), obj(a, s[3], i));
    CU_ASSERT_EQUAL(spd_central_sweep(a, 100), 1);
    CU_ASSERT_EQUAL(ce->npartial, 1);
    CU_ASSERT_EQUAL(ce->partial, s[0]);
    CU_ASSERT_EQUAL(a->hdr->stats.spans_freed, freed + 2);   /* s[1], s[3] */
    VERIFY_OK(a);
}

/* A bogus node on a remote stack quarantines the span for good. */
static void test_quarantine(void)
{
    shm_arena_t *a = fx_new(64ULL << 20);
    CU_ASSERT_PTR_NOT_NULL_FATAL(a);
    const unsigned c = 16;                    /* 128 B */
    shm_central_t *ce = &a->hdr->central[c];
    shm_spanid_t q = take_alloc(a, c, 10);
    fx_hold(a, q, 0);
    shm_remote_push(a->base, fx_span(a, q), obj(a, q, 2));
    shm_remote_push(a->base, fx_span(a, q), obj(a, q, 30));   /* never allocated */
    fx_unhold(a, q);
    CU_ASSERT_EQUAL(spd_central_put(a, q), SPD_PUT_CORRUPT);
    CU_ASSERT_EQUAL(fx_span(a, q)->flags, SHM_SPAN_CORRUPT);
    CU_ASSERT_EQUAL(fx_state(a, q), SHM_SPAN_CENTRAL);
    CU_ASSERT_EQUAL(ce->full, q);
    CU_ASSERT_EQUAL(ce->nfull, 1);
    CU_ASSERT_EQUAL(ce->npartial, 0);
    VERIFY_OK(a);
    /* take never hands it out, though it has free objects */
    shm_spanid_t t = take_alloc(a, c, shm_classes[c].nelems);
    CU_ASSERT(t != q);
    /* a full span put later goes before it; the quarantined one stays last */
    CU_ASSERT_EQUAL(spd_central_put(a, t), SPD_PUT_FULL);
    CU_ASSERT_EQUAL(ce->full, t);
    CU_ASSERT_EQUAL(fx_span(a, t)->next, q);
    VERIFY_OK(a);
    /* remote frees to the quarantined span are not drained by the sweep */
    shm_remote_push(a->base, fx_span(a, q), obj(a, q, 5));
    CU_ASSERT_EQUAL(spd_central_sweep(a, 100), 0);
    CU_ASSERT(shm_load_relaxed(&fx_span(a, q)->xremote) != 0);
    for (int i = 0; i < 5; i++) {
        shm_spanid_t x = spd_central_take(a, c, NULL);
        CU_ASSERT(x != 0 && x != q);
        if (x)
            fx_hold(a, x, 0);
    }
    VERIFY_OK(a);
    /* a full span whose stack goes bad while in central: take quarantines it */
    shm_spanid_t f = take_alloc(a, 41, shm_classes[41].nelems);   /* 2048 B, all of them */
    CU_ASSERT_EQUAL(spd_central_put(a, f), SPD_PUT_FULL);
    shm_remote_push(a->base, fx_span(a, f), obj(a, f, 1) + 16);
    int err;
    shm_spanid_t g = spd_central_take(a, 41, &err);
    CU_ASSERT(g != 0 && g != f);
    CU_ASSERT_EQUAL(fx_span(a, f)->flags, SHM_SPAN_CORRUPT);
    CU_ASSERT_EQUAL(a->hdr->central[41].full, f);
    fx_hold(a, g, 0);
    /* ... and so does the sweep */
    shm_spanid_t h = take_alloc(a, 41, shm_classes[41].nelems);
    CU_ASSERT_EQUAL(spd_central_put(a, h), SPD_PUT_FULL);
    shm_remote_push(a->base, fx_span(a, h), a->base + 8);
    CU_ASSERT_EQUAL(spd_central_sweep(a, 10), 0);
    CU_ASSERT_EQUAL(fx_span(a, h)->flags, SHM_SPAN_CORRUPT);
    CU_ASSERT_EQUAL(a->hdr->central[41].nfull, 2);
    VERIFY_OK(a);
}

static void test_take_enomem(void)
{
    shm_arena_t *a = fx_new(16ULL << 20);
    CU_ASSERT_PTR_NOT_NULL_FATAL(a);
    int err = 0;
    while (spd_heap_alloc_large(a, SHM_PAGE_SIZE, 0, &err) != 0)
        ;
    CU_ASSERT_EQUAL(err, -ENOMEM);
    shm_heap_t before = a->hdr->heap;
    CU_ASSERT_EQUAL(spd_central_take(a, 3, &err), 0);
    CU_ASSERT_EQUAL(err, -ENOMEM);
    CU_ASSERT_EQUAL(memcmp(&before, &a->hdr->heap, sizeof before), 0);
    VERIFY_OK(a);
}

/* ---- randomized: sessions take, allocate, free remotely and release ---- */

typedef struct objs_s {
    uint32_t *idx;           /* allocated object indices (reserved excluded) */
    uint32_t n, cap;
} objs_t;

typedef struct cmodel_s {
    shm_arena_t *a;
    objs_t *by_id;           /* per span id */
    uint32_t nids;
    shm_spanid_t held[512];
    unsigned nheld;
} cmodel_t;

static objs_t *objs_of(cmodel_t *m, shm_spanid_t id)
{
    CU_ASSERT_FATAL(id < m->nids);
    return &m->by_id[id];
}

static void objs_add(objs_t *o, uint32_t i)
{
    if (o->n == o->cap) {
        o->cap = o->cap ? 2 * o->cap : 64;
        o->idx = realloc(o->idx, o->cap * sizeof *o->idx);
        CU_ASSERT_PTR_NOT_NULL_FATAL(o->idx);
    }
    o->idx[o->n++] = i;
}

/* Objects on the span's remote stack, not drained yet (a read-only walk
 * over its records). */
static uint32_t remote_len(shm_arena_t *a, const shm_span_t *s)
{
    uint32_t n = 0;
    for (uint64_t off = shm_load_acquire(&s->xremote); off != 0 && n <= s->nelems;) {
        n += shm_remote_record_count(a->base + off);
        off = *(uint64_t *)(a->base + off) & SHM_REMOTE_OFF_MASK;
    }
    return n;
}

/* The bitmap counts the model's live objects, the reserved ones, and the
 * remote frees not drained yet. */
static bool count_matches(cmodel_t *m, shm_spanid_t id)
{
    shm_span_t *s = fx_span(m->a, id);
    return shm_span_count(m->a->base, s) ==
           objs_of(m, id)->n + shm_classes[s->sizeclass].nreserved + remote_len(m->a, s);
}

static void c_take(cmodel_t *m)
{
    if (m->nheld == sizeof m->held / sizeof m->held[0])
        return;
    static const unsigned classes[] = { 1, 5, 19, 41, 52, SHM_CLASS_TINY };
    unsigned cls = classes[fx_rand() % 6];
    int err;
    shm_spanid_t id = spd_central_take(m->a, cls, &err);
    CU_ASSERT_FATAL(id != 0);
    shm_span_t *s = fx_span(m->a, id);
    CU_ASSERT(count_matches(m, id));
    CU_ASSERT(shm_span_count(m->a->base, s) < s->nelems);   /* something free */
    fx_hold(m->a, id, (unsigned)(fx_rand() % 4));
    /* allocate some of it, as a client would */
    uint32_t want = 1 + (uint32_t)(fx_rand() % s->nelems);
    uint8_t *p;
    uint32_t size = shm_classes[cls].size;
    while (want-- > 0 && (p = fx_take(m->a->base, s)) != NULL)
        objs_add(objs_of(m, id), (uint32_t)((p - shm_span_addr(m->a->base, s)) / size));
    m->held[m->nheld++] = id;
}

static void c_release(cmodel_t *m)
{
    unsigned k = (unsigned)(fx_rand() % m->nheld);
    shm_spanid_t id = m->held[k];
    m->held[k] = m->held[--m->nheld];
    fx_unhold(m->a, id);
    spd_put_t where = spd_central_put(m->a, id);
    CU_ASSERT(where != SPD_PUT_CORRUPT);
    if (where == SPD_PUT_HEAP) {
        CU_ASSERT_EQUAL(objs_of(m, id)->n, 0);
    } else {
        CU_ASSERT(count_matches(m, id));
        shm_span_t *s = fx_span(m->a, id);
        bool full = shm_span_count(m->a->base, s) == s->nelems;
        CU_ASSERT_EQUAL(where == SPD_PUT_FULL, full);
    }
}

/* Free a random live object of a random span from "another process". */
static void c_remote_free(cmodel_t *m)
{
    uint32_t hwm = m->a->hdr->spanalloc.hwm;
    for (int tries = 0; tries < 64; tries++) {
        shm_spanid_t id = (tries % 2 == 0 && m->nheld > 0)
                          ? m->held[fx_rand() % m->nheld]
                          : 1 + (shm_spanid_t)(fx_rand() % (hwm - 1));
        objs_t *o = &m->by_id[id];
        if (o->n == 0)
            continue;
        uint32_t k = (uint32_t)(fx_rand() % o->n);
        uint32_t i = o->idx[k];
        o->idx[k] = o->idx[--o->n];
        shm_remote_push(m->a->base, fx_span(m->a, id), obj(m->a, id, i));
        return;
    }
}

static void test_central_random(void)
{
    shm_arena_t *a = fx_new(256ULL << 20);
    CU_ASSERT_PTR_NOT_NULL_FATAL(a);
    cmodel_t m = { .a = a, .nids = a->hdr->spanalloc.max };
    m.by_id = calloc(m.nids, sizeof *m.by_id);
    CU_ASSERT_PTR_NOT_NULL_FATAL(m.by_id);
    fx_seed(0x5eed0003);
    unsigned failed = 0, sweeps = 0;
    for (unsigned i = 0; i < 20000 && failed < 3; i++) {
        uint64_t r = fx_rand() % 100;
        if (m.nheld == 0 || r < 25)
            c_take(&m);
        else if (r < 50)
            c_release(&m);
        else if (r < 98)
            c_remote_free(&m);
        else
            sweeps += spd_central_sweep(a, 1 + (uint32_t)(fx_rand() % 8));
        char msg[256];
        if (spd_heap_verify(a, msg, sizeof msg) != 0) {
            fprintf(stderr, "\n    step %u: %s\n", i, msg);
            failed++;
        }
    }
    CU_ASSERT_EQUAL(failed, 0);
    CU_ASSERT(sweeps > 0);
    /* free every object, release every span, sweep: all back in the heap */
    for (shm_spanid_t id = 1; id < m.nids; id++)
        while (m.by_id[id].n > 0) {
            objs_t *o = &m.by_id[id];
            shm_remote_push(a->base, fx_span(a, id), obj(a, id, o->idx[--o->n]));
        }
    while (m.nheld > 0)
        c_release(&m);
    while (spd_central_sweep(a, 1000) > 0)
        ;
    VERIFY_OK(a);
    for (unsigned c = 1; c < SHM_NCLASSES; c++) {
        CU_ASSERT_EQUAL(a->hdr->central[c].nfull, 0);
        /* partial spans are left with their remote frees drained at put or
         * take; drain them the way a take would, then put them back */
        while (a->hdr->central[c].npartial > 0) {
            shm_spanid_t id = spd_central_take(a, c, NULL);
            CU_ASSERT_EQUAL_FATAL(spd_central_put(a, id), SPD_PUT_HEAP);
        }
    }
    VERIFY_OK(a);
    CU_ASSERT_EQUAL(a->hdr->heap.free_pages, a->hdr->heap.end_page - a->hdr->heap.first_page);
    CU_ASSERT_EQUAL(a->hdr->spanalloc.inuse, 1);
    for (shm_spanid_t id = 1; id < m.nids; id++)
        free(m.by_id[id].idx);
    free(m.by_id);
}

CU_TestInfo central_tests[] = {
    { "take from an empty central: a new span", test_take_from_heap },
    { "put and take: heap, partial, full", test_put_and_take },
    { "sweep moves full spans with remote frees", test_sweep },
    { "a corrupt remote stack is quarantined", test_quarantine },
    { "take when the arena is full", test_take_enomem },
    { "randomized sessions, verified every step", test_central_random },
    CU_TEST_INFO_NULL,
};

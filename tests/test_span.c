/* See shm/layout.h for the overview.
 *
 * Span operations (shm/span.c) on spans from the heap: the alloc bitmap
 * follows a model through takes and frees; the remote-free stack under concurrent pushes from several threads; drains
 * that meet bogus nodes; and a second process that opens the same arena and
 * sees the same spans.
 */
#include "config.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "daemon/list.h"
#include "tests/test_core.h"
#include "tests/span_take.h"

static uint8_t *obj_addr(shm_arena_t *a, const shm_span_t *s, uint32_t i)
{
    return shm_span_addr(a->base, s) + (uint64_t)i * shm_classes[s->sizeclass].size;
}

/* The bitmap against the model, and the count. */
static bool check_bitmap(shm_arena_t *a, shm_span_t *s, const bool *alloc)
{
    const uint64_t *bm = shm_span_bitmap(a->base, s);
    uint32_t live = 0;
    for (uint32_t i = 0; i < s->nelems; i++) {
        if (shm_bit_test(bm, i) != alloc[i])
            return false;
        live += alloc[i];
    }
    return live == shm_span_count(a->base, s);
}

/* Random takes and frees on spans of several classes: a take hands out the
 * free object of lowest index (NULL only when none is free) and sets its
 * bit, a free clears it.  After every operation the bitmap is checked, and
 * so is the word a thread cache would take next (shm_span_free_word, from
 * a random word, wrapping around). */
static void test_bitmap_take(void)
{
    shm_arena_t *a = fx_new(64ULL << 20);
    CU_ASSERT_PTR_NOT_NULL_FATAL(a);
    static const unsigned classes[] = { 1, 3, 9, 17, 37, 44, 53, 65, SHM_CLASS_TINY };
    uint32_t maxn = 0;                 /* the model array fits every span */
    for (unsigned k = 0; k < sizeof classes / sizeof classes[0]; k++)
        if (shm_classes[classes[k]].nelems > maxn)
            maxn = shm_classes[classes[k]].nelems;
    bool *alloc = calloc(maxn, sizeof *alloc);
    CU_ASSERT_PTR_NOT_NULL_FATAL(alloc);
    fx_seed(0x5eed0002);
    for (unsigned k = 0; k < sizeof classes / sizeof classes[0]; k++) {
        unsigned cls = classes[k];
        int err;
        shm_spanid_t id = spd_heap_alloc_small(a, cls, &err);
        CU_ASSERT_FATAL(id != 0);
        shm_span_t *s = fx_span(a, id);
        uint32_t nres = shm_classes[cls].nreserved;
        memset(alloc, 0, maxn * sizeof *alloc);
        for (uint32_t i = 0; i < nres; i++)
            alloc[i] = true;
        CU_ASSERT(check_bitmap(a, s, alloc));
        unsigned bad = 0, takes = 0, full = 0;
        for (unsigned op = 0; op < 3000; op++) {
            uint64_t r = fx_rand();
            if (r % 10 < 6) {
                uint32_t lowest = nres;
                while (lowest < s->nelems && alloc[lowest])
                    lowest++;
                uint8_t *p = fx_take(a->base, s);
                if (p != NULL) {
                    uint32_t i = (uint32_t)((p - shm_span_addr(a->base, s)) /
                                            shm_classes[cls].size);
                    CU_ASSERT(p == obj_addr(a, s, i));
                    CU_ASSERT_EQUAL(i, lowest);      /* the lowest free one */
                    alloc[i] = true;
                    takes++;
                } else {
                    CU_ASSERT_EQUAL(lowest, s->nelems);  /* none was free */
                    full++;
                }
            } else {
                uint32_t i = nres + (uint32_t)((r >> 8) % (s->nelems - nres));
                if (alloc[i]) {
                    shm_bit_clear(shm_span_bitmap(a->base, s), i);
                    alloc[i] = false;
                }
            }
            if (!check_bitmap(a, s, alloc))
                bad++;
            /* the word a thread cache would take looking from a random word
             * on: the first at or after it, wrapping once, with a free
             * object, and exactly that word's free objects */
            uint32_t words = (s->nelems + 63) / 64, from = (uint32_t)(r >> 20) % (words + 1);
            uint32_t want = UINT32_MAX, wi = UINT32_MAX;
            for (uint32_t q = 0; q < words && want == UINT32_MAX; q++) {
                uint32_t w = (from % words + q) % words;
                for (uint32_t i = w * 64; i < w * 64 + 64 && i < s->nelems; i++)
                    if (!alloc[i])
                        want = w;
            }
            uint64_t mask = 0;
            bool found = shm_span_free_word(a->base, s, from, &wi, &mask);
            if (found != (want != UINT32_MAX) || (found && wi != want))
                bad++;
            for (uint32_t i = 0; found && i < 64; i++)
                if (((mask >> i) & 1) !=
                    (wi * 64 + i < s->nelems && !alloc[wi * 64 + i]))
                    bad++;
        }
        CU_ASSERT_EQUAL(bad, 0);
        CU_ASSERT(takes > 100 || s->nelems < 100);
        CU_ASSERT(full > 0 || s->nelems > 1000);     /* ran full, at small spans */
        /* the span goes to central like a released span */
        spd_put_t where = spd_central_put(a, id);
        CU_ASSERT(where == SPD_PUT_PARTIAL || where == SPD_PUT_FULL || where == SPD_PUT_HEAP);
        VERIFY_OK(a);
    }
    free(alloc);
}

/* ---- remote frees from several threads ---- */

#define NTHREADS 4

typedef struct pusher_s {
    shm_arena_t *a;
    shm_span_t *s;
    unsigned t;
    pthread_barrier_t *go;
} pusher_t;

/* Even threads push one object at a time; odd ones collect batches of up
 * to 37 indices and push each with one CAS, as records of up to the class's
 * cap (the client's batched remote frees: a batch spans several records in
 * the small classes). */
static void *pusher(void *arg)
{
    pusher_t *p = arg;
    uint16_t idx[37];
    unsigned n = 0;
    pthread_barrier_wait(p->go);
    for (uint32_t i = p->t; i < p->s->nelems; i += NTHREADS) {
        if (p->t % 2 == 0) {
            shm_remote_push(p->a->base, p->s, obj_addr(p->a, p->s, i));
            continue;
        }
        idx[n++] = (uint16_t)i;
        if (n == sizeof idx / sizeof idx[0]) {
            shm_remote_push_batch(p->a->base, p->s, idx, n);
            n = 0;
        }
    }
    if (n > 0)
        shm_remote_push_batch(p->a->base, p->s, idx, n);
    return NULL;
}

typedef struct drainer_s {
    shm_arena_t *a;
    shm_span_t *s;
    uint32_t want;
    uint32_t got, drains, errors;
    pthread_barrier_t *go;
} drainer_t;

/* The holder: drains while the pushes go on, until it has them all. */
static void *drainer(void *arg)
{
    drainer_t *d = arg;
    pthread_barrier_wait(d->go);
    unsigned spins = 0;
    while (d->got < d->want && spins < 100000000) {
        uint64_t bad;
        int n = shm_span_drain_remote(d->a->base, d->s, &bad);
        if (n < 0) {
            d->errors++;
            break;
        }
        d->got += (uint32_t)n;
        d->drains += n > 0;
        spins++;
    }
    return NULL;
}

/* Every object of a span is popped, then pushed by NTHREADS threads at once
 * while the holder drains; every object comes back exactly once (a second
 * arrival would be a free of a clear bit, which the drain reports). */
static void test_remote_threads(void)
{
    shm_arena_t *a = fx_new(64ULL << 20);
    CU_ASSERT_PTR_NOT_NULL_FATAL(a);
    static const unsigned classes[] = { 1, 2, 8, 16, 22 };
    for (unsigned round = 0; round < 20; round++) {
        unsigned cls = classes[round % 5];
        int err;
        shm_spanid_t id = spd_heap_alloc_small(a, cls, &err);
        CU_ASSERT_FATAL(id != 0);
        shm_span_t *s = fx_span(a, id);
        uint32_t taken = 0;
        while (fx_take(a->base, s) != NULL)
            taken++;
        CU_ASSERT_EQUAL(taken, s->nelems);
        CU_ASSERT_EQUAL(shm_span_count(a->base, s), s->nelems);
        pthread_barrier_t go;
        pthread_barrier_init(&go, NULL, NTHREADS + 1);
        pusher_t p[NTHREADS];
        pthread_t th[NTHREADS + 1];
        drainer_t d = { a, s, s->nelems, 0, 0, 0, &go };
        for (unsigned t = 0; t < NTHREADS; t++) {
            p[t] = (pusher_t){ a, s, t, &go };
            CU_ASSERT_EQUAL_FATAL(pthread_create(&th[t], NULL, pusher, &p[t]), 0);
        }
        /* odd rounds: drain concurrently; even rounds: one drain at the end */
        bool concurrent = round % 2;
        if (concurrent) {
            CU_ASSERT_EQUAL_FATAL(pthread_create(&th[NTHREADS], NULL, drainer, &d), 0);
        } else {
            pthread_barrier_wait(&go);
        }
        for (unsigned t = 0; t < NTHREADS + (concurrent ? 1u : 0u); t++)
            pthread_join(th[t], NULL);
        pthread_barrier_destroy(&go);
        if (!concurrent) {
            uint64_t bad = 0;
            int n = shm_span_drain_remote(a->base, s, &bad);
            CU_ASSERT_EQUAL(n, (int)s->nelems);
            d.got = (uint32_t)(n > 0 ? n : 0);
        }
        CU_ASSERT_EQUAL(d.errors, 0);
        CU_ASSERT_EQUAL(d.got, s->nelems);
        CU_ASSERT_EQUAL(shm_span_count(a->base, s), 0);
        CU_ASSERT_EQUAL(shm_load_relaxed(&s->xremote), 0);
        uint64_t bad;
        CU_ASSERT_EQUAL(shm_span_drain_remote(a->base, s, &bad), 0);
        CU_ASSERT_EQUAL(spd_central_put(a, id), SPD_PUT_HEAP);
        VERIFY_OK(a);
    }
}

/* A drain stops at the first bogus node and reports its offset. */
static void test_drain_bogus(void)
{
    shm_arena_t *a = fx_new(64ULL << 20);
    CU_ASSERT_PTR_NOT_NULL_FATAL(a);
    int err;
    shm_spanid_t id = spd_heap_alloc_small(a, 8, &err);   /* 64-byte objects */
    shm_spanid_t other = spd_heap_alloc_small(a, 8, &err);
    CU_ASSERT_FATAL(id != 0 && other != 0);
    shm_span_t *s = fx_span(a, id);
    for (int i = 0; i < 10; i++)
        CU_ASSERT_PTR_NOT_NULL(fx_take(a->base, s));
    shm_span_reset_holder(s);
    uint64_t bad = 0, base_off = (uint64_t)(obj_addr(a, s, 0) - a->base);

    /* not at an object boundary */
    shm_remote_push(a->base, s, obj_addr(a, s, 1));
    shm_remote_push(a->base, s, obj_addr(a, s, 2) + 8);
    CU_ASSERT_EQUAL(shm_span_drain_remote(a->base, s, &bad), -1);
    CU_ASSERT_EQUAL(bad, base_off + 2 * 64 + 8);
    CU_ASSERT_EQUAL(shm_load_relaxed(&s->xremote), 0);   /* the rest is dropped */
    CU_ASSERT(shm_bit_test(shm_span_bitmap(a->base, s), 1)); /* not reached */

    /* an object that is not allocated (a double free) */
    shm_remote_push(a->base, s, obj_addr(a, s, 3));
    shm_remote_push(a->base, s, obj_addr(a, s, 3));
    CU_ASSERT_EQUAL(shm_span_drain_remote(a->base, s, &bad), -1);
    CU_ASSERT_EQUAL(bad, base_off + 3 * 64);
    CU_ASSERT_FALSE(shm_bit_test(shm_span_bitmap(a->base, s), 3)); /* the first one counted */
    shm_remote_push(a->base, s, obj_addr(a, s, 50));      /* never allocated */
    CU_ASSERT_EQUAL(shm_span_drain_remote(a->base, s, &bad), -1);
    CU_ASSERT_EQUAL(bad, base_off + 50 * 64);

    /* an object of another span */
    shm_remote_push(a->base, s, obj_addr(a, fx_span(a, other), 0));
    CU_ASSERT_EQUAL(shm_span_drain_remote(a->base, s, &bad), -1);
    CU_ASSERT_EQUAL(bad, (uint64_t)(obj_addr(a, fx_span(a, other), 0) - a->base));

    /* good ones still work */
    shm_remote_push(a->base, s, obj_addr(a, s, 4));
    shm_remote_push(a->base, s, obj_addr(a, s, 5));
    CU_ASSERT_EQUAL(shm_span_drain_remote(a->base, s, &bad), 2);
    CU_ASSERT_EQUAL(shm_span_count(a->base, s), 10 - 3);   /* 3, 4, 5 came back */
}

/* A fresh arena (*ap) and a span of 64-byte objects in it with every
 * object taken, as its holder leaves it to the freers. */
static shm_span_t *full_span_64(shm_arena_t **ap)
{
    shm_arena_t *a = *ap = fx_new(64ULL << 20);
    CU_ASSERT_PTR_NOT_NULL_FATAL(a);
    int err;
    shm_spanid_t id = spd_heap_alloc_small(a, 8, &err);   /* 64-byte objects */
    CU_ASSERT_FATAL(id != 0);
    shm_span_t *s = fx_span(a, id);
    for (uint32_t i = 0; i < s->nelems; i++)
        CU_ASSERT_PTR_NOT_NULL(fx_take(a->base, s));
    shm_span_reset_holder(s);
    return s;
}

/* Records: runs of consecutive objects in one entry, and hand-made records
 * a drain must refuse (too many entries, high header bits, an index or a
 * run past the span, an object freed twice inside one record). */
static void test_drain_records(void)
{
    shm_arena_t *a;
    shm_span_t *s = full_span_64(&a);
    uint32_t nel = s->nelems;
    uint64_t *bm = shm_span_bitmap(a->base, s);
    uint64_t bad = 0, base_off = (uint64_t)(obj_addr(a, s, 0) - a->base);
    uint32_t emax = shm_remote_entries(8);
    CU_ASSERT_EQUAL(emax, (64 - 8) / 2);
    uint16_t none[1] = { 0 };
    shm_remote_push_batch(a->base, s, none, 0);          /* pushes nothing */
    CU_ASSERT_EQUAL(shm_load_relaxed(&s->xremote), 0);

    /* 40 objects in address order, then 3 apart, then 2 in order: one
     * record (a run, three indices, a run of 2), whatever its size */
    uint16_t idx[45];
    for (int k = 0; k < 40; k++)
        idx[k] = (uint16_t)(100 + k);
    idx[40] = 300, idx[41] = 200, idx[42] = 250, idx[43] = 251, idx[44] = 252;
    shm_remote_push_batch(a->base, s, idx, 45);
    uint64_t head = shm_load_relaxed(&s->xremote);
    CU_ASSERT_EQUAL(head, base_off + 100 * 64);
    uint64_t hdr = *(uint64_t *)(a->base + head);
    CU_ASSERT_EQUAL(hdr & SHM_REMOTE_OFF_MASK, 0);
    CU_ASSERT_EQUAL(SHM_REMOTE_ENTRIES(hdr), 5);
    const uint16_t *e = (const uint16_t *)(a->base + head + 8);
    CU_ASSERT_EQUAL(e[0], SHM_REMOTE_RUN | 39);
    CU_ASSERT(e[1] == 300 && e[2] == 200 && e[3] == 250 && e[4] == (SHM_REMOTE_RUN | 2));
    CU_ASSERT_EQUAL(shm_remote_record_count(a->base + head), 45);
    CU_ASSERT_EQUAL(shm_span_drain_remote(a->base, s, &bad), 45);
    CU_ASSERT_EQUAL(shm_span_count(a->base, s), nel - 45);
    for (uint32_t i = 0; i < nel; i++)      /* exactly those 45 are free */
        CU_ASSERT_EQUAL(shm_bit_test(bm, i), !(i >= 100 && i < 140) && i != 200 &&
                                                 !(i >= 250 && i <= 252) && i != 300);
    shm_remote_push_batch(a->base, s, idx, 45);
    CU_ASSERT_EQUAL(shm_span_drain_remote(a->base, s, &bad), -1);   /* freed already */
    CU_ASSERT_EQUAL(bad, base_off + 100 * 64);
    /* one object of the run freed already, in the run's second bitmap word:
     * that object is named, the objects before it are cleared */
    for (int k = 0; k < 45; k++)
        shm_bit_set(bm, idx[k]);
    shm_bit_clear(bm, 130);
    shm_remote_push_batch(a->base, s, idx, 45);
    CU_ASSERT_EQUAL(shm_span_drain_remote(a->base, s, &bad), -1);
    CU_ASSERT_EQUAL(bad, base_off + 130 * 64);
    CU_ASSERT(!shm_bit_test(bm, 100) && !shm_bit_test(bm, 129) && shm_bit_test(bm, 131));
    for (int k = 0; k < 45; k++)
        shm_bit_set(bm, idx[k]);
    shm_remote_push_batch(a->base, s, idx, 45);
    CU_ASSERT_EQUAL(shm_span_drain_remote(a->base, s, &bad), 45);
    /* taken again lowest first: the run, 200, 250..252, 300 */
    static const uint16_t order[] = { 200, 250, 251, 252, 300 };
    for (int k = 0; k < 40; k++)
        CU_ASSERT_PTR_EQUAL(fx_take(a->base, s), obj_addr(a, s, 100 + (uint32_t)k));
    for (int k = 0; k < 5; k++)
        CU_ASSERT_PTR_EQUAL(fx_take(a->base, s), obj_addr(a, s, order[k]));
    CU_ASSERT_PTR_NULL(fx_take(a->base, s));
    for (int k = 0; k < 45; k++)
        shm_remote_push(a->base, s, obj_addr(a, s, idx[k]));
    CU_ASSERT_EQUAL(shm_span_drain_remote(a->base, s, &bad), 45);
    CU_ASSERT(!shm_bit_test(bm, 139) && shm_bit_test(bm, 140) && !shm_bit_test(bm, 252));

    /* scattered indices fill records of emax entries: 2 records for 40 */
    uint16_t sc[40];
    for (int k = 0; k < 40; k++)
        sc[k] = (uint16_t)(400 + 2 * k);
    shm_remote_push_batch(a->base, s, sc, 40);
    head = shm_load_relaxed(&s->xremote);
    CU_ASSERT_EQUAL(shm_remote_record_count(a->base + head), 40 - (1 + emax));
    CU_ASSERT_EQUAL(shm_span_drain_remote(a->base, s, &bad), 40);

    /* more entries than the class holds */
    uint8_t *r = obj_addr(a, s, 0);
    shm_remote_push(a->base, s, r);
    *(uint64_t *)r |= (uint64_t)(emax + 1) << 48;
    CU_ASSERT_EQUAL(shm_span_drain_remote(a->base, s, &bad), -1);
    CU_ASSERT_EQUAL(bad, base_off);
    CU_ASSERT(shm_bit_test(bm, 0));                      /* nothing freed */

    /* high header bits */
    shm_remote_push(a->base, s, r);
    *(uint64_t *)r |= 1ull << 60;
    CU_ASSERT_EQUAL(shm_span_drain_remote(a->base, s, &bad), -1);
    CU_ASSERT_EQUAL(bad, base_off);
    CU_ASSERT(shm_bit_test(bm, 0));

    /* an index past the span's objects: the record is named, and nothing
     * of it is freed */
    uint16_t far[2] = { 1, (uint16_t)nel };
    shm_remote_push_batch(a->base, s, far, 2);
    CU_ASSERT_EQUAL(shm_span_drain_remote(a->base, s, &bad), -1);
    CU_ASSERT_EQUAL(bad, base_off + 1 * 64);
    CU_ASSERT(shm_bit_test(bm, 1));

    /* a run past the span's end: the same */
    uint16_t tail[2] = { (uint16_t)(nel - 3), (uint16_t)(SHM_REMOTE_RUN | 5) };
    r = obj_addr(a, s, nel - 3);
    shm_remote_push(a->base, s, r);
    *(uint64_t *)r |= 1ull << 48;
    memcpy(r + 8, &tail[1], 2);
    CU_ASSERT_EQUAL(shm_span_drain_remote(a->base, s, &bad), -1);
    CU_ASSERT_EQUAL(bad, base_off + (uint64_t)(nel - 3) * 64);
    CU_ASSERT(shm_bit_test(bm, nel - 1) && shm_bit_test(bm, nel - 3));

    /* one object twice in a record: the second is named */
    uint16_t twice[3] = { 2, 3, 3 };
    shm_remote_push_batch(a->base, s, twice, 3);
    CU_ASSERT_EQUAL(shm_span_drain_remote(a->base, s, &bad), -1);
    CU_ASSERT_EQUAL(bad, base_off + 3 * 64);

    /* a run over an object freed already: that object is named */
    uint16_t over[2] = { 4, 5 };
    shm_remote_push_batch(a->base, s, &over[1], 1);
    CU_ASSERT_EQUAL(shm_span_drain_remote(a->base, s, &bad), 1);
    uint16_t run3[3] = { 4, 5, 6 };
    shm_remote_push_batch(a->base, s, run3, 3);
    CU_ASSERT_EQUAL(shm_span_drain_remote(a->base, s, &bad), -1);
    CU_ASSERT_EQUAL(bad, base_off + 5 * 64);
}

/* A batch checked and pushed (shm_remote_push_checked): consecutive
 * objects as one record with one run entry, any other batch as
 * shm_remote_push_batch's records, and a batch with an object free already
 * refused whole, that object's position returned; and the test of a run's
 * bits a word at a time (shm_bits_all_set), across words and at their
 * edges. */
static void test_push_checked(void)
{
    shm_arena_t *a;
    shm_span_t *s = full_span_64(&a);
    uint32_t nel = s->nelems;
    CU_ASSERT_FATAL(nel >= 200);
    uint64_t *bm = shm_span_bitmap(a->base, s);
    uint64_t bad = 0, base_off = (uint64_t)(obj_addr(a, s, 0) - a->base);

    CU_ASSERT(shm_bits_all_set(bm, 0, nel));
    CU_ASSERT(shm_bits_all_set(bm, 60, 32));             /* across a word */
    CU_ASSERT(shm_bits_all_set(bm, 64, 64));             /* one whole word */
    shm_bit_clear(bm, 63);
    CU_ASSERT(!shm_bits_all_set(bm, 60, 32));
    CU_ASSERT(!shm_bits_all_set(bm, 63, 1));
    CU_ASSERT(shm_bits_all_set(bm, 64, 32) && shm_bits_all_set(bm, 31, 32));
    shm_bit_set(bm, 63);
    shm_bit_clear(bm, 127);
    CU_ASSERT(!shm_bits_all_set(bm, 64, 64) && !shm_bits_all_set(bm, 100, 40));
    CU_ASSERT(shm_bits_all_set(bm, 64, 63) && shm_bits_all_set(bm, 128, 40));
    shm_bit_set(bm, 127);
    shm_bit_clear(bm, 70);                               /* in the second word only */
    CU_ASSERT(!shm_bits_all_set(bm, 60, 32) && !shm_bits_all_set(bm, 0, 100));
    CU_ASSERT(shm_bits_all_set(bm, 60, 10) && shm_bits_all_set(bm, 71, 57));
    shm_bit_set(bm, 70);

    /* 33 objects from 100 (two bitmap words; 33, not a multiple of the
     * four indices compared at once): one record, one run entry */
    uint16_t run[33];
    for (int k = 0; k < 33; k++)
        run[k] = (uint16_t)(100 + k);
    CU_ASSERT_EQUAL(shm_remote_push_checked(a->base, s, run, 33), 33);
    uint64_t head = shm_load_relaxed(&s->xremote);
    CU_ASSERT_EQUAL(head, base_off + 100 * 64);
    uint64_t hdr = *(uint64_t *)(a->base + head);
    CU_ASSERT_EQUAL(hdr & SHM_REMOTE_OFF_MASK, 0);
    CU_ASSERT_EQUAL(SHM_REMOTE_ENTRIES(hdr), 1);
    CU_ASSERT_EQUAL(shm_remote_record_count(a->base + head), 33);
    /* one alone on top: no entry, linked to the run's record */
    uint16_t one = 7;
    CU_ASSERT_EQUAL(shm_remote_push_checked(a->base, s, &one, 1), 1);
    head = shm_load_relaxed(&s->xremote);
    hdr = *(uint64_t *)(a->base + head);
    CU_ASSERT_EQUAL(head, base_off + 7 * 64);
    CU_ASSERT_EQUAL(hdr, base_off + 100 * 64);
    /* out of order, or with a gap: not a run, shm_remote_push_batch's
     * records (the gap's two runs in one record of two entries) */
    uint16_t swapped[3] = { 151, 150, 152 }, gap[6] = { 160, 161, 162, 170, 171, 172 };
    CU_ASSERT_EQUAL(shm_remote_push_checked(a->base, s, swapped, 3), 3);
    CU_ASSERT_EQUAL(SHM_REMOTE_ENTRIES(*(uint64_t *)(a->base + shm_load_relaxed(&s->xremote))), 2);
    CU_ASSERT_EQUAL(shm_remote_push_checked(a->base, s, gap, 6), 6);
    head = shm_load_relaxed(&s->xremote);
    CU_ASSERT_EQUAL(head, base_off + 160 * 64);
    CU_ASSERT_EQUAL(SHM_REMOTE_ENTRIES(*(uint64_t *)(a->base + head)), 3);
    CU_ASSERT_EQUAL(shm_remote_record_count(a->base + head), 6);
    CU_ASSERT_EQUAL(shm_span_drain_remote(a->base, s, &bad), 43);
    for (uint32_t i = 0; i < nel; i++)      /* exactly those 43 are free */
        CU_ASSERT_EQUAL(shm_bit_test(bm, i), !(i >= 100 && i < 133) && i != 7 &&
                                                 !(i >= 150 && i <= 152) &&
                                                 !(i >= 160 && i <= 162) &&
                                                 !(i >= 170 && i <= 172));
    /* the run again, one of its objects (in its second word) taken again:
     * the first free one is named, and nothing is pushed */
    shm_bit_set(bm, 100);
    for (int k = 2; k < 33; k++)
        shm_bit_set(bm, run[k]);
    CU_ASSERT_EQUAL(shm_remote_push_checked(a->base, s, run, 33), 1);
    shm_bit_set(bm, 101);
    shm_bit_clear(bm, 130);
    CU_ASSERT_EQUAL(shm_remote_push_checked(a->base, s, run, 33), 30);
    CU_ASSERT_EQUAL(shm_remote_push_checked(a->base, s, gap, 6), 0);
    CU_ASSERT_EQUAL(shm_load_relaxed(&s->xremote), 0);
}

/* Random batches, some of them with random bytes written over a record
 * or the stack's head: a drain always ends, frees each object at most
 * once, never touches the bit of an object nobody pushed unless a corrupt
 * record names it, and with nothing corrupt frees exactly what was
 * pushed. */
static void test_drain_random(void)
{
    shm_arena_t *a = fx_new(64ULL << 20);
    CU_ASSERT_PTR_NOT_NULL_FATAL(a);
    fx_seed(0x5eed0005);
    static const unsigned classes[] = { 1, 2, 3, 8, 16, 41, 53, 59, SHM_CLASS_TINY };
    uint8_t *pushed = calloc(1024, 1);
    uint16_t *idx = calloc(1024, sizeof *idx);
    CU_ASSERT_FATAL(pushed && idx);
    unsigned corrupted = 0, refused = 0;
    for (unsigned round = 0; round < 2000; round++) {
        unsigned cls = classes[fx_rand() % (sizeof classes / sizeof classes[0])];
        int err;
        shm_spanid_t id = spd_heap_alloc_small(a, cls, &err);
        CU_ASSERT_FATAL(id != 0);
        shm_span_t *s = fx_span(a, id);
        uint32_t nel = s->nelems, res = shm_classes[cls].nreserved, size = shm_classes[cls].size;
        while (fx_take(a->base, s) != NULL)
            ;
        /* a random set of objects, in random order or in runs */
        memset(pushed, 0, nel);
        uint32_t n = 0, want = 1 + (uint32_t)(fx_rand() % (nel - res));
        if (fx_rand() & 1) {
            uint32_t i = res + (uint32_t)(fx_rand() % (nel - res));
            for (; n < want && i < nel; i++)
                pushed[i] = 1, idx[n++] = (uint16_t)i;
        } else {
            for (uint32_t t = 0; t < 4 * want && n < want; t++) {
                uint32_t i = res + (uint32_t)(fx_rand() % (nel - res));
                if (!pushed[i])
                    pushed[i] = 1, idx[n++] = (uint16_t)i;
            }
        }
        for (uint32_t k = 0; k < n;) {
            uint32_t m = 1 + (uint32_t)(fx_rand() % 40);
            if (m > n - k)
                m = n - k;
            if (m == 1 && (fx_rand() & 1))
                shm_remote_push(a->base, s, obj_addr(a, s, idx[k]));
            else
                shm_remote_push_batch(a->base, s, &idx[k], m);
            k += m;
        }
        bool corrupt = fx_rand() % 3 == 0;
        if (corrupt) {
            corrupted++;
            uint64_t off = shm_load_relaxed(&s->xremote);
            for (uint32_t hop = (uint32_t)(fx_rand() % 4); hop > 0; hop--) {
                uint64_t next = *(uint64_t *)(a->base + off) & SHM_REMOTE_OFF_MASK;
                if (next == 0)
                    break;
                off = next;
            }
            if (fx_rand() % 4 == 0) {
                shm_store_relaxed(&s->xremote, fx_rand() % 3 == 0 ? fx_rand() :
                                  (uint64_t)(obj_addr(a, s, 0) - a->base) +
                                      fx_rand() % ((uint64_t)s->npages << SHM_PAGE_SHIFT));
            } else {
                uint32_t span = size < 72 ? size : 72;
                uint8_t *r = a->base + off;
                for (int b = 0; b < 3; b++)
                    r[fx_rand() % span] = (uint8_t)fx_rand();
            }
        }
        uint32_t before = shm_span_count(a->base, s);
        uint64_t bad = 0;
        int got = shm_span_drain_remote(a->base, s, &bad);
        uint32_t after = shm_span_count(a->base, s);
        CU_ASSERT(after <= before);
        CU_ASSERT_EQUAL(shm_load_relaxed(&s->xremote), 0);
        if (got < 0) {
            refused++;
            CU_ASSERT(corrupt);
        } else {
            CU_ASSERT_EQUAL((uint32_t)got, before - after);
        }
        const uint64_t *bm = shm_span_bitmap(a->base, s);
        for (uint32_t i = 0; i < res; i++)
            CU_ASSERT(shm_bit_test(bm, i));             /* reserved: never freed */
        if (!corrupt) {
            CU_ASSERT_EQUAL(got, (int)n);
            for (uint32_t i = 0; i < nel; i++)
                CU_ASSERT_EQUAL(shm_bit_test(bm, i), !pushed[i]);
        }
        /* every object free again: the span goes back to the heap */
        shm_span_reset_holder(s);
        uint64_t *w = shm_span_bitmap(a->base, s);
        memset(w, 0, ((nel + 63) / 64) * sizeof *w);
        for (uint32_t i = 0; i < res; i++)
            shm_bit_set(w, i);
        CU_ASSERT_EQUAL(spd_central_put(a, id), SPD_PUT_HEAP);
    }
    VERIFY_OK(a);
    CU_ASSERT(corrupted > 400 && refused > 100);   /* the corrupt cases did happen */
    free(pushed);
    free(idx);
}

/* ---- a second process ---- */

typedef struct seen_s {
    shm_spanid_t id;
    uint32_t start, npages;
    uint8_t state, sizeclass;
} seen_t;

/* Walk the heap's pages through the span map: what this process sees. */
static unsigned walk_spans(shm_arena_t *a, seen_t *out, unsigned max)
{
    unsigned n = 0;
    const shm_heap_t *h = &a->hdr->heap;
    for (uint32_t p = h->first_page; p < h->end_page && n < max;) {
        shm_spanid_t id = shm_load_acquire(&shm_spanmap(a->base)[p]);
        if (id == 0)
            break;
        shm_span_t *s = shm_span(a->base, id);
        out[n++] = (seen_t){ id, s->start, s->npages, shm_load_acquire(&s->xstate),
                             s->sizeclass };
        p += s->npages ? s->npages : 1;
    }
    return n;
}

#define MAXSEEN 256

typedef struct report_s {
    int open_rc;
    int verify_rc;
    uint64_t base;
    unsigned nseen;
    unsigned map_mismatch;   /* pages whose shm_span_of is not their span */
    uint64_t pattern_sum;    /* of the parent's large object */
    seen_t seen[MAXSEEN];
} report_t;

static __attribute__((noreturn)) void child(const char *name, shm_arena_t *parent, shm_spanid_t big, shm_spanid_t msg,
                  int fd)
{
    report_t *r = calloc(1, sizeof *r);
    if (r == NULL)
        _exit(3);
    uint64_t want_base = parent->hdr->base;
    uint64_t big_start = fx_span(parent, big)->start, msg_start = fx_span(parent, msg)->start;
    uint32_t big_pages = fx_span(parent, big)->npages;
    shm_arena_close(parent);          /* the parent's mapping goes away here */
    shm_arena_t a;
    char err[SHM_ERRLEN];
    r->open_rc = shm_arena_open(&a, name, err);
    if (r->open_rc == 0) {
        r->base = (uint64_t)(uintptr_t)a.base;
        char vmsg[256];
        r->verify_rc = spd_heap_verify(&a, vmsg, sizeof vmsg);
        r->nseen = walk_spans(&a, r->seen, MAXSEEN);
        for (unsigned i = 0; i < r->nseen; i++) {
            shm_span_t *s = shm_span(a.base, r->seen[i].id);
            uint8_t st = r->seen[i].state;
            if (st == SHM_SPAN_FREE)
                continue;
            for (uint32_t p = 0; p < r->seen[i].npages; p++)
                if (shm_span_of(a.base, shm_page_addr(a.base, r->seen[i].start + p)) != s)
                    r->map_mismatch++;
        }
        const uint8_t *b = shm_page_addr(a.base, (uint32_t)big_start);
        for (uint64_t i = 0; i < (uint64_t)big_pages * SHM_PAGE_SIZE; i++)
            r->pattern_sum += b[i];
        strcpy((char *)shm_page_addr(a.base, (uint32_t)msg_start), "hello from the child");
        shm_arena_close(&a);
    }
    (void)want_base;
    const uint8_t *p = (const uint8_t *)r;
    size_t left = sizeof *r;
    while (left > 0) {
        ssize_t w = write(fd, p, left);
        if (w <= 0)
            _exit(4);
        p += w;
        left -= (size_t)w;
    }
    _exit(0);
}

static void test_second_process(void)
{
    shm_arena_t *a = fx_new(64ULL << 20);
    CU_ASSERT_PTR_NOT_NULL_FATAL(a);
    int err;
    /* spans of every kind: FREE, CENTRAL (partial), HELD, LARGE */
    shm_spanid_t big = spd_heap_alloc_large(a, 5 * SHM_PAGE_SIZE, 0, &err);
    shm_spanid_t msg = spd_heap_alloc_large(a, SHM_PAGE_SIZE, 0, &err);
    shm_spanid_t gone = spd_heap_alloc_large(a, 9 * SHM_PAGE_SIZE, 0, &err);
    shm_spanid_t held = spd_central_take(a, 40, &err);
    shm_spanid_t part = spd_central_take(a, 5, &err);
    CU_ASSERT_FATAL(big && msg && gone && held && part);
    fx_hold(a, held, 3);
    for (int i = 0; i < 3; i++)
        CU_ASSERT_PTR_NOT_NULL(fx_take(a->base, fx_span(a, part)));
    CU_ASSERT_EQUAL(spd_central_put(a, part), SPD_PUT_PARTIAL);
    CU_ASSERT_EQUAL(spd_heap_free_large(a, (uint64_t)fx_span(a, gone)->start << 13), 0);
    uint8_t *b = fx_addr(a, big);
    uint64_t sum = 0;
    for (uint64_t i = 0; i < 5ULL * SHM_PAGE_SIZE; i++) {
        b[i] = (uint8_t)(i * 7 + 3);
        sum += b[i];
    }
    memset(fx_addr(a, msg), 0, 64);
    VERIFY_OK(a);
    seen_t *mine = calloc(MAXSEEN, sizeof *mine);
    report_t *r = calloc(1, sizeof *r);
    CU_ASSERT_PTR_NOT_NULL_FATAL(mine);
    CU_ASSERT_PTR_NOT_NULL_FATAL(r);
    unsigned nmine = walk_spans(a, mine, MAXSEEN);
    CU_ASSERT(nmine >= 6);

    int pfd[2];
    CU_ASSERT_EQUAL_FATAL(pipe(pfd), 0);
    fflush(NULL);
    pid_t pid = fork();
    CU_ASSERT_FATAL(pid >= 0);
    if (pid == 0) {
        close(pfd[0]);
        child(fx_name(a), a, big, msg, pfd[1]);
    }
    close(pfd[1]);
    size_t got = 0;
    while (got < sizeof *r) {
        ssize_t n = read(pfd[0], (uint8_t *)r + got, sizeof *r - got);
        if (n <= 0)
            break;
        got += (size_t)n;
    }
    close(pfd[0]);
    int status = 0;
    CU_ASSERT_EQUAL(waitpid(pid, &status, 0), pid);
    CU_ASSERT(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    CU_ASSERT_EQUAL_FATAL(got, sizeof *r);
    CU_ASSERT_EQUAL(r->open_rc, 0);
    CU_ASSERT_EQUAL(r->base, (uint64_t)(uintptr_t)a->base);  /* same address */
    CU_ASSERT_EQUAL(r->verify_rc, 0);
    CU_ASSERT_EQUAL(r->map_mismatch, 0);
    CU_ASSERT_EQUAL(r->pattern_sum, sum);
    CU_ASSERT_EQUAL(r->nseen, nmine);
    for (unsigned i = 0; i < nmine && i < r->nseen; i++) {
        CU_ASSERT_EQUAL(r->seen[i].id, mine[i].id);
        CU_ASSERT_EQUAL(r->seen[i].start, mine[i].start);
        CU_ASSERT_EQUAL(r->seen[i].npages, mine[i].npages);
        CU_ASSERT_EQUAL(r->seen[i].state, mine[i].state);
        CU_ASSERT_EQUAL(r->seen[i].sizeclass, mine[i].sizeclass);
    }
    /* the child's write is visible here */
    CU_ASSERT_STRING_EQUAL((char *)fx_addr(a, msg), "hello from the child");
    VERIFY_OK(a);
    free(mine);
    free(r);
}

CU_TestInfo span_tests[] = {
    { "take hands out the lowest free object; the bitmap follows", test_bitmap_take },
    { "remote frees from several threads, one by one and in records, each once", test_remote_threads },
    { "drains stop at bogus nodes", test_drain_bogus },
    { "records: runs, and bogus ones refused", test_drain_records },
    { "a batch checked and pushed: a run as one record, a double refused", test_push_checked },
    { "random batches and corrupt records, drained", test_drain_random },
    { "a second process sees the same spans", test_second_process },
    CU_TEST_INFO_NULL,
};

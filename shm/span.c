/* See shm/layout.h for the overview.  Span operations shared by the daemon
 * and the clients; the rules of who may call what are in shm/span.h. */
#include "config.h"

#include <string.h>

#include "shm/span.h"

const char *shm_bad_str(shm_bad_t why)
{
    switch (why) {
    case SHM_PTR_OK:            return "ok";
    case SHM_PTR_OUTSIDE:       return "not a pointer into the arena";
    case SHM_PTR_NO_SPAN:       return "not in an allocated span";
    case SHM_PTR_NOT_START:     return "not the start of an object";
    case SHM_PTR_NOT_ALLOCATED: return "double free or object never allocated";
    }
    return "unknown";
}

shm_span_t *shm_span_of(uint8_t *base, const void *p)
{
    const shm_header_t *h = (const shm_header_t *)base;
    uint64_t off = (uint64_t)((const uint8_t *)p - base);
    if ((uintptr_t)p < (uintptr_t)base || off < h->data_off || off >= h->arena_size)
        return NULL;
    shm_spanid_t id = shm_load_acquire(&shm_spanmap(base)[off >> SHM_PAGE_SHIFT]);
    if (id == 0)
        return NULL;
    return shm_span(base, id);
}

shm_bad_t shm_ptr_locate(uint8_t *base, const void *p, shm_span_t **span, uint32_t *index)
{
    const shm_header_t *h = (const shm_header_t *)base;
    uint64_t off = (uint64_t)((const uint8_t *)p - base);
    if ((uintptr_t)p < (uintptr_t)base || off < h->data_off || off >= h->arena_size)
        return SHM_PTR_OUTSIDE;
    shm_span_t *s = shm_span_of(base, p);
    if (s == NULL)
        return SHM_PTR_NO_SPAN;
    uint8_t state = shm_load_acquire(&s->xstate);
    uint32_t page = (uint32_t)(off >> SHM_PAGE_SHIFT);
    if (page < s->start || page - s->start >= s->npages)
        return SHM_PTR_NO_SPAN;
    uint64_t rel = off - ((uint64_t)s->start << SHM_PAGE_SHIFT);
    *span = s;
    if (state == SHM_SPAN_LARGE) {
        *index = 0;
        return rel == 0 ? SHM_PTR_OK : SHM_PTR_NOT_START;
    }
    if (state != SHM_SPAN_CENTRAL && state != SHM_SPAN_HELD)
        return SHM_PTR_NO_SPAN;
    unsigned cls = s->sizeclass;
    uint64_t prod = shm_obj_prod(cls, rel);
    uint32_t i = (uint32_t)(prod >> 32);
    if (i >= s->nelems)
        return SHM_PTR_NOT_START;
    if (cls == SHM_CLASS_TINY) {
        /* a tiny allocation may start anywhere inside its block */
        if (i < shm_classes[cls].nreserved)
            return SHM_PTR_NOT_START;
    } else if (!shm_obj_starts(prod, shm_classes[cls].divmul)) {
        return SHM_PTR_NOT_START;
    }
    *index = i;
    return SHM_PTR_OK;
}

shm_bad_t shm_ptr_check(uint8_t *base, const void *p, shm_span_t **span, uint32_t *index)
{
    shm_bad_t why = shm_ptr_locate(base, p, span, index);
    if (why == SHM_PTR_OK && shm_load_acquire(&(*span)->xstate) != SHM_SPAN_LARGE &&
        !shm_bit_test(shm_span_bitmap(base, *span), *index))
        return SHM_PTR_NOT_ALLOCATED;
    return why;
}

void shm_span_cut(uint8_t *base, shm_span_t *s, unsigned cls)
{
    const shm_class_t *c = &shm_classes[cls];
    uint64_t *bm = shm_span_bitmap(base, s);
    s->sizeclass = (uint8_t)cls;
    s->nelems = c->nelems;
    _Atomic uint8_t *cm = shm_classmap(base) + s->start;
    for (uint32_t p = 0; p < s->npages; p++)
        shm_store_relaxed(&cm[p], (uint8_t)cls);
    shm_store_relaxed(&s->xcut, shm_load_relaxed(&s->xcut) + 1);
    memset(bm, 0, ((c->nelems + 63) / 64) * sizeof(uint64_t));
    for (uint32_t i = 0; i < c->nreserved; i++)
        shm_bit_set(bm, i);
    if (c->nreserved)   /* the tiny live counts */
        memset(shm_span_addr(base, s), 0, (size_t)c->nreserved * c->size);
    shm_store_relaxed(&s->xremote, 0);
    shm_store_relaxed(&s->xowner, 0);
    shm_span_reset_holder(s);
}

uint32_t shm_span_count(uint8_t *base, const shm_span_t *s)
{
    const uint64_t *bm = shm_span_bitmap(base, s);
    uint32_t n = 0, words = (s->nelems + 63) / 64;
    for (uint32_t w = 0; w < words; w++)
        n += (uint32_t)__builtin_popcountll(shm_word_load(&bm[w]));
    return n;
}

void shm_span_reset_holder(shm_span_t *s)
{
    s->hstate = 0;
    s->hnext = s->hprev = 0;
}

bool shm_span_free_word(uint8_t *base, const shm_span_t *s, uint32_t from, uint32_t *wi,
                        uint64_t *mask)
{
    const uint64_t *bm = shm_span_bitmap(base, s);
    uint32_t words = (s->nelems + 63) / 64;
    if (from >= words)
        from = 0;
    for (uint32_t k = 0; k < words; k++) {
        uint32_t w = from + k < words ? from + k : from + k - words;
        uint32_t left = s->nelems - w * 64;
        uint64_t m = ~shm_word_load(&bm[w]) & (left >= 64 ? ~0ull : (1ull << left) - 1);
        if (m != 0) {
            *wi = w;
            *mask = m;
            return true;
        }
    }
    return false;
}

void shm_remote_push_batch(uint8_t *base, shm_span_t *s, const uint16_t *idx, uint32_t n)
{
    if (n == 0)
        return;
    unsigned cls = s->sizeclass;
    uint32_t size = shm_classes[cls].size, emax = shm_remote_entries(cls);
    uint8_t *start = shm_span_addr(base, s);
    uint64_t head = 0, tail_bits = 0, *tail = NULL;
    uint32_t k = 0;
    while (k < n) {
        uint8_t *r = start + (uint64_t)idx[k] * size;
        uint16_t *ent = (uint16_t *)(r + 8);
        uint32_t prev = idx[k++], e = 0;
        while (k < n && e < emax) {
            uint32_t run = 0;
            while (k + run < n && idx[k + run] == prev + run + 1 && run < 0x7fff)
                run++;
            if (run > 1) {              /* a run entry, 2 objects or more */
                ent[e++] = (uint16_t)(SHM_REMOTE_RUN | run);
                prev += run;
                k += run;
            } else {
                prev = idx[k++];
                ent[e++] = (uint16_t)prev;
            }
        }
        uint64_t bits = (uint64_t)e << 48;
        if (tail == NULL) {             /* the first built is the last on the stack */
            tail = (uint64_t *)r;
            tail_bits = bits;
        } else {
            *(uint64_t *)r = head | bits;
        }
        head = (uint64_t)(r - base);
    }
    shm_remote_link(s, head, tail, tail_bits);
}

/* Are idx[0..n) (n >= 1) consecutive, each right after the one before?
 * Four 16-bit lanes at a time: an index is below 2^15 (a record's entry;
 * tools/mksizeclasses.py checks every class), so no lane carries. */
static bool idx_run(const uint16_t *idx, uint32_t n)
{
    uint32_t lo = idx[0], k = 0;
    uint64_t want = lo * 0x0001000100010001ull + 0x0003000200010000ull, got;
    for (; k + 4 <= n; k += 4, want += 0x0004000400040004ull) {
        memcpy(&got, &idx[k], sizeof got);
        if (got != want)
            return false;
    }
    for (; k < n; k++)
        if (idx[k] != lo + k)
            return false;
    return true;
}
_Static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "idx[k] is the low lane of its four");

uint32_t shm_remote_push_checked(uint8_t *base, shm_span_t *s, const uint16_t *idx, uint32_t n)
{
    const uint64_t *bm = shm_span_bitmap(base, s);
    uint32_t lo = idx[0];
    if (idx_run(idx, n) && (n == 1 || shm_remote_entries(s->sizeclass) > 0) &&
        shm_bits_all_set(bm, lo, n)) {
        /* one record, object lo's, with one run entry for the rest */
        uint8_t *r = shm_span_addr(base, s) + (uint64_t)lo * shm_classes[s->sizeclass].size;
        uint64_t bits = 0;
        if (n > 1) {
            *(uint16_t *)(r + 8) = (uint16_t)(SHM_REMOTE_RUN | (n - 1));
            bits = 1ull << 48;
        }
        shm_remote_link(s, (uint64_t)(r - base), (uint64_t *)r, bits);
        return n;
    }
    for (uint32_t k = 0; k < n; k++)
        if (!shm_bit_test(bm, idx[k]))
            return k;
    shm_remote_push_batch(base, s, idx, n);
    return n;
}

/* Nothing is written into the descriptor but the exchange, and nothing
 * into the objects: only bits, on the holder's bitmap lines. */
int shm_span_drain_remote(uint8_t *base, shm_span_t *s, uint64_t *bad_off)
{
    uint64_t off = shm_exchange_acquire(&s->xremote, 0);
    uint64_t first = (uint64_t)s->start << SHM_PAGE_SHIFT;
    uint64_t end = first + ((uint64_t)s->npages << SHM_PAGE_SHIFT);
    uint32_t nelems = s->nelems;
    unsigned cls = s->sizeclass;
    uint32_t size = shm_classes[cls].size, nreserved = shm_classes[cls].nreserved;
    uint32_t emax = shm_remote_entries(cls);
    uint64_t *bm = shm_span_bitmap(base, s);
    int n = 0, rc = 0;
    while (off != 0) {
        uint64_t prod = shm_obj_prod(cls, off - first);
        uint32_t i = (uint32_t)(prod >> 32);
        if (off < first || off >= end || i >= nelems ||
            !shm_obj_starts(prod, shm_classes[cls].divmul)) {
            *bad_off = off;
            rc = -1;
            break;
        }
        uint64_t hdr = *(uint64_t *)(base + off);
        uint32_t ne = SHM_REMOTE_ENTRIES(hdr);
        if (ne > emax || (hdr >> 56) != 0) {
            *bad_off = off;
            rc = -1;
            break;
        }
        uint16_t ent[SHM_REMOTE_ENTRIES_MAX];
        memcpy(ent, base + off + 8, (size_t)ne * sizeof ent[0]);
        uint64_t rec = off;
        off = hdr & SHM_REMOTE_OFF_MASK;
        /* the record's objects as runs [from, from + len): itself, then one
         * per entry (one index, or the run after the previous object); a
         * run past the span makes the whole record bogus */
        uint32_t from[SHM_REMOTE_ENTRIES_MAX + 1], len[SHM_REMOTE_ENTRIES_MAX + 1];
        uint32_t nr = 0, next = i;
        for (uint32_t k = 0; k <= ne; k++) {
            uint32_t e = k == 0 ? i : ent[k - 1];
            from[nr] = e & SHM_REMOTE_RUN && k > 0 ? next : e;
            len[nr] = e & SHM_REMOTE_RUN && k > 0 ? e & ~SHM_REMOTE_RUN : 1;
            next = from[nr] + len[nr];
            if (next > nelems) {
                *bad_off = rec;
                rc = -1;
                goto out;
            }
            nr++;
        }
        /* each run a bitmap word at a time: its bits in the word all set,
         * then cleared with one store; a clear one among them (a double
         * free) is named, and the run's objects before it are freed */
        for (uint32_t r = 0; r < nr; r++) {
            uint32_t j = from[r], stop = j + len[r];
            if (j < nreserved) {        /* runs ascend: the first is the lowest */
                *bad_off = first + (uint64_t)j * size;
                rc = -1;
                goto out;
            }
            for (uint32_t k; j < stop; j += k) {
                uint64_t m = shm_run_word(j, stop, &k);
                uint64_t *w = &bm[j >> 6], v = shm_word_load(w);
                if ((v & m) != m) {
                    uint32_t at = (uint32_t)__builtin_ctzll(m & ~v);
                    uint64_t before = m & ((1ull << at) - 1);
                    shm_word_store(w, v & ~before);
                    n += __builtin_popcountll(before);
                    *bad_off = first + (uint64_t)((j & ~63u) + at) * size;
                    rc = -1;
                    goto out;
                }
                shm_word_store(w, v & ~m);
                n += (int)k;
            }
        }
    }
out:
    return rc < 0 ? rc : n;
}

/* See shm/layout.h for the overview.
 *
 * The heap verifier.  It checks every invariant that shm/layout.h lists, in
 * this order, and reports the first one found broken:
 *
 *   1. header: first_page, end_page, limit_page and the span allocator's
 *      counters agree with the layout and with each other;
 *   2. lists: the span allocator's free list, the heap's exact lists and
 *      treap, central's lists and the sessions' lists are well linked (prev
 *      matches next, no cycle), no span is on two of them, each holds only
 *      spans of its kind (DEAD; FREE of n pages; FREE of >= 128 pages in
 *      (npages, start) order and heap order by spd_treap_priority; CENTRAL of
 *      the class; HELD by the session), and their counts match;
 *   3. pages: walking [first_page, end_page) span by span through the span
 *      map, every page belongs to exactly one span, an in-use span maps every
 *      page and a FREE one its first and last page with a zero interior, no
 *      two FREE spans are adjacent, every span is on the list its state asks
 *      for (LARGE on none), small spans have their class's shape, and their
 *      class-map bytes and bitmaps say so: the class on every page, and
 *      nreserved <= popcount <= nelems with the reserved objects
 *      marked and no bit at or above nelems; the backed span-map slots
 *      outside the heap are 0;
 *   4. totals: heap.free_pages and heap.unbacked_pages are the sums over
 *      FREE spans, and every descriptor that is not DEAD was reached by the
 *      page walk;
 *   5. the large pool: a LARGE span's tag (xowner) is 0, POOLED,
 *      RETURNING or CACHED, and a CACHED one names an open session
 *      (checked in the page walk); when no session is open
 *      (nothing can race), each bucket holds only POOLED LARGE spans of its
 *      page count, with no cycle and no span twice, the buckets hold every
 *      POOLED span, and their pages add up to lpool.xpages (<= cap_pages).
 *
 * It reads only memory the daemon has backed (reading a hole of a tmpfs
 * object would allocate it), and uses private memory for its bookkeeping.
 * The daemon's thread runs it; HELD spans' bitmaps may change under it, which
 * keeps every invariant it checks of them.
 */
#include "config.h"

#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "daemon/heap.h"
#include "daemon/verify.h"
#include "shm/atomic.h"
#include "shm/lpool.h"
#include "shm/span.h"

/* Where the lists walk found a descriptor. */
enum {
    W_NONE = 0,
    W_FIXFREE,       /* the span allocator's free list */
    W_HEAP,          /* heap exact list free_head[idx] */
    W_TREAP,         /* the heap's treap */
    W_PARTIAL,       /* central[idx].partial */
    W_FULL,          /* central[idx].full */
    W_SESSION,       /* sessions[idx].spans */
};
#define W_WALKED 0x80u   /* reached by the page walk */
#define W_POOL   0x40u   /* reached by a large-pool bucket's walk */

typedef struct vctx_s {
    shm_arena_t *a;
    shm_header_t *h;
    char *msg;
    size_t len;
    uint32_t hwm;
    uint8_t *where;  /* per descriptor id: W_* | W_WALKED */
    uint32_t *idx;   /* per descriptor id: the list's index */
    uint64_t free_pages, unbacked_pages;
    uint32_t pooled;  /* LARGE spans tagged POOLED met by the page walk */
} vctx_t;

static int bad(vctx_t *v, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int bad(vctx_t *v, const char *fmt, ...)
{
    if (v->msg != NULL && v->len > 0) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(v->msg, v->len, fmt, ap);
        va_end(ap);
    }
    return -1;
}

static const char *where_name(unsigned w, uint32_t idx, char *buf, size_t len)
{
    switch (w & ~W_WALKED) {
    case W_FIXFREE: snprintf(buf, len, "the descriptor free list"); break;
    case W_HEAP:    snprintf(buf, len, "heap free list %u", idx); break;
    case W_TREAP:   snprintf(buf, len, "the heap treap"); break;
    case W_PARTIAL: snprintf(buf, len, "central partial list of class %u", idx); break;
    case W_FULL:    snprintf(buf, len, "central full list of class %u", idx); break;
    case W_SESSION: snprintf(buf, len, "the span list of session %u", idx + 1); break;
    default:        snprintf(buf, len, "no list"); break;
    }
    return buf;
}

static const char *state_name(uint8_t st)
{
    static const char *const names[] = { "DEAD", "FREE", "CENTRAL", "HELD", "LARGE" };
    return st < sizeof names / sizeof names[0] ? names[st] : "INVALID";
}

static inline shm_span_t *span_at(vctx_t *v, shm_spanid_t id)
{
    return shm_span(v->a->base, id);
}

static inline uint8_t state_of(const shm_span_t *s)
{
    return shm_load_acquire(&s->xstate);
}

static inline shm_spanid_t map_at(vctx_t *v, uint32_t page)
{
    return shm_load_acquire(&shm_spanmap(v->a->base)[page]);
}

/* ---- 1. the header ---- */

static int check_header(vctx_t *v)
{
    const shm_header_t *h = v->h;
    const shm_heap_t *hp = &h->heap;
    const shm_fixalloc_t *f = &h->spanalloc;
    if (hp->first_page != h->data_off >> SHM_PAGE_SHIFT)
        return bad(v, "header: heap.first_page %u, but the data region starts at page %llu",
                   hp->first_page, (unsigned long long)(h->data_off >> SHM_PAGE_SHIFT));
    if (hp->limit_page != h->npages)
        return bad(v, "header: heap.limit_page %u, but the arena has %u pages",
                   hp->limit_page, h->npages);
    if (hp->end_page < hp->first_page || hp->end_page > hp->limit_page)
        return bad(v, "header: heap.end_page %u outside [%u, %u]", hp->end_page,
                   hp->first_page, hp->limit_page);
    uint64_t cap = (h->data_off - h->spans_off) / sizeof(shm_span_t);
    if (f->max == 0 || f->max > cap)
        return bad(v, "span allocator: max %u, but the region holds %llu descriptors",
                   f->max, (unsigned long long)cap);
    if (f->hwm < 1 || f->hwm > f->max || f->hwm > f->backed || f->backed > f->max)
        return bad(v, "span allocator: need 1 <= hwm (%u) <= backed (%u) <= max (%u)",
                   f->hwm, f->backed, f->max);
    if (f->inuse > f->hwm - 1)
        return bad(v, "span allocator: inuse %u exceeds the %u descriptors handed out",
                   f->inuse, f->hwm - 1);
    return 0;
}

/* ---- 2. the lists ---- */

/* What a span on list `w` (index idx) must look like. */
static int check_member(vctx_t *v, shm_spanid_t id, unsigned w, uint32_t idx)
{
    const shm_span_t *s = span_at(v, id);
    uint8_t st = state_of(s);
    char buf[64];
    const char *name = where_name(w, idx, buf, sizeof buf);
    switch (w) {
    case W_FIXFREE:
        if (st != SHM_SPAN_DEAD)
            return bad(v, "list: span %u on %s is %s, not DEAD", id, name, state_name(st));
        break;
    case W_HEAP:
        if (st != SHM_SPAN_FREE || s->npages != idx)
            return bad(v, "list: span %u (%s, %u pages) is on %s", id, state_name(st),
                       s->npages, name);
        break;
    case W_TREAP:
        if (st != SHM_SPAN_FREE || s->npages < SHM_HEAP_NLISTS)
            return bad(v, "treap: span %u (%s, %u pages) is in the treap", id,
                       state_name(st), s->npages);
        break;
    case W_PARTIAL:
    case W_FULL:
        if (st != SHM_SPAN_CENTRAL || s->sizeclass != idx)
            return bad(v, "central: span %u (%s, class %u) is on %s", id, state_name(st),
                       s->sizeclass, name);
        break;
    case W_SESSION:
        if (st != SHM_SPAN_HELD || s->session != idx + 1)
            return bad(v, "session: span %u (%s, session %u) is on %s", id, state_name(st),
                       s->session, name);
        break;
    }
    return 0;
}

/* Mark `id` as found on list `w`; it must be a valid id on no other list. */
static int mark(vctx_t *v, shm_spanid_t id, unsigned w, uint32_t idx)
{
    char b1[64], b2[64];
    if (id == 0 || id >= v->hwm)
        return bad(v, "list: %s holds span id %u, outside [1, %u)",
                   where_name(w, idx, b1, sizeof b1), id, v->hwm);
    if (v->where[id] != W_NONE)
        return bad(v, "list: span %u is on two lists: %s and %s", id,
                   where_name(v->where[id], v->idx[id], b1, sizeof b1),
                   where_name(w, idx, b2, sizeof b2));
    v->where[id] = (uint8_t)w;
    v->idx[id] = idx;
    return check_member(v, id, w, idx);
}

/* Walk a next/prev list, marking its spans; *count gets its length. */
static int walk_list(vctx_t *v, shm_spanid_t head, unsigned w, uint32_t idx, uint32_t *count)
{
    shm_spanid_t prev = 0;
    char buf[64];
    *count = 0;
    for (shm_spanid_t id = head; id != 0; id = span_at(v, id)->next) {
        if (mark(v, id, w, idx) != 0)
            return -1;
        if (w != W_FIXFREE && span_at(v, id)->prev != prev)
            return bad(v, "list: span %u on %s has prev %u, expected %u", id,
                       where_name(w, idx, buf, sizeof buf), span_at(v, id)->prev, prev);
        prev = id;
        (*count)++;
    }
    return 0;
}

static bool key_less(const shm_span_t *x, const shm_span_t *y)
{
    return x->npages < y->npages || (x->npages == y->npages && x->start < y->start);
}

static bool treap_above(shm_spanid_t x, shm_spanid_t y)
{
    uint32_t px = spd_treap_priority(x), py = spd_treap_priority(y);
    return px > py || (px == py && x < y);
}

/* In-order walk with an explicit stack: every node is pushed once (mark
 * refuses a second visit), so hwm entries are enough. */
static int walk_treap(vctx_t *v)
{
    shm_spanid_t *stack = malloc((size_t)v->hwm * sizeof *stack);
    shm_spanid_t cur = v->h->heap.treap_root, last = 0;
    size_t sp = 0;
    int rc = 0;
    if (stack == NULL)
        return bad(v, "verify: out of memory");
    while (rc == 0 && (cur != 0 || sp > 0)) {
        while (rc == 0 && cur != 0) {
            if ((rc = mark(v, cur, W_TREAP, 0)) != 0)
                break;
            stack[sp++] = cur;
            shm_spanid_t l = span_at(v, cur)->left;
            if (l != 0 && l < v->hwm && !treap_above(cur, l))
                rc = bad(v, "treap: span %u is below its left child %u in priority", cur, l);
            cur = l;
        }
        if (rc != 0 || sp == 0)
            break;
        cur = stack[--sp];
        if (last != 0 && !key_less(span_at(v, last), span_at(v, cur)))
            rc = bad(v, "treap: out of order: span %u (%u pages at %u) before span %u "
                     "(%u pages at %u)", last, span_at(v, last)->npages,
                     span_at(v, last)->start, cur, span_at(v, cur)->npages,
                     span_at(v, cur)->start);
        last = cur;
        shm_spanid_t r = span_at(v, cur)->right;
        if (rc == 0 && r != 0 && r < v->hwm && !treap_above(cur, r))
            rc = bad(v, "treap: span %u is below its right child %u in priority", cur, r);
        cur = r;
    }
    free(stack);
    return rc;
}

static int check_lists(vctx_t *v)
{
    const shm_header_t *h = v->h;
    const shm_fixalloc_t *f = &h->spanalloc;
    uint32_t n;
    if (walk_list(v, f->free_head, W_FIXFREE, 0, &n) != 0)
        return -1;
    if (n != f->hwm - 1 - f->inuse)
        return bad(v, "span allocator: %u descriptors on its free list, expected %u "
                   "(hwm %u, inuse %u)", n, f->hwm - 1 - f->inuse, f->hwm, f->inuse);
    if (h->heap.free_head[0] != 0)
        return bad(v, "list: heap free list 0 is not empty");
    for (uint32_t k = 1; k < SHM_HEAP_NLISTS; k++)
        if (walk_list(v, h->heap.free_head[k], W_HEAP, k, &n) != 0)
            return -1;
    if (walk_treap(v) != 0)
        return -1;
    if (h->central[0].partial != 0 || h->central[0].full != 0)
        return bad(v, "central: the lists of class 0 are not empty");
    for (uint32_t c = 1; c < SHM_NCLASSES; c++) {
        const shm_central_t *ce = &h->central[c];
        if (walk_list(v, ce->partial, W_PARTIAL, c, &n) != 0)
            return -1;
        if (n != ce->npartial)
            return bad(v, "central: class %u has %u partial spans, npartial says %u", c, n,
                       ce->npartial);
        if (walk_list(v, ce->full, W_FULL, c, &n) != 0)
            return -1;
        if (n != ce->nfull)
            return bad(v, "central: class %u has %u full spans, nfull says %u", c, n,
                       ce->nfull);
        bool corrupt = false;    /* quarantined spans are the list's tail */
        for (shm_spanid_t id = ce->full; id != 0; id = span_at(v, id)->next) {
            bool q = span_at(v, id)->flags & SHM_SPAN_CORRUPT;
            if (corrupt && !q)
                return bad(v, "central: span %u follows a quarantined span on the full "
                           "list of class %u", id, c);
            corrupt = q;
        }
    }
    for (uint32_t i = 0; i < SHM_MAX_SESSIONS; i++) {
        const shm_session_t *ss = &h->sessions[i];
        if (ss->pid == 0 && ss->spans != 0)
            return bad(v, "session: free slot %u holds spans", i);
        if (walk_list(v, ss->spans, W_SESSION, i, &n) != 0)
            return -1;
        if (n != ss->nspans)
            return bad(v, "session: session %u holds %u spans, nspans says %u", i + 1, n,
                       ss->nspans);
    }
    return 0;
}

/* ---- 3. the pages ---- */

static int check_bitmap(vctx_t *v, shm_spanid_t id, const shm_span_t *s)
{
    const shm_class_t *c = &shm_classes[s->sizeclass];
    const uint64_t *bm = shm_bitmap(v->a->base, s->start);
    if (s->nelems % 64 != 0) {
        uint64_t word = shm_word_load(&bm[s->nelems / 64]);
        uint64_t high = word >> (s->nelems % 64);
        if (high != 0)
            return bad(v, "bitmap: span %u has bit %u set, at or above nelems %u", id,
                       s->nelems + (uint32_t)__builtin_ctzll(high), s->nelems);
    }
    for (uint32_t i = 0; i < c->nreserved; i++)
        if (!shm_bit_test(bm, i))
            return bad(v, "bitmap: reserved object %u of span %u is not marked allocated",
                       i, id);
    uint32_t live = shm_span_count(v->a->base, s);
    if (live < c->nreserved || live > s->nelems)
        return bad(v, "bitmap: span %u counts %u objects, outside [%u, %u]", id, live,
                   c->nreserved, s->nelems);
    if ((v->where[id] & ~W_WALKED) == W_PARTIAL && live == s->nelems)
        return bad(v, "central: span %u is on the partial list of class %u but has no "
                   "free object", id, s->sizeclass);
    return 0;
}

static int check_small(vctx_t *v, shm_spanid_t id, const shm_span_t *s)
{
    unsigned cls = s->sizeclass;
    if (cls == 0 || cls >= SHM_NCLASSES)
        return bad(v, "span %u is a small span of class %u, outside [1, %u)", id, cls,
                   SHM_NCLASSES);
    if (s->npages != shm_classes[cls].npages || s->nelems != shm_classes[cls].nelems)
        return bad(v, "span %u of class %u has %u pages and %u objects, expected %u and %u",
                   id, cls, s->npages, s->nelems, shm_classes[cls].npages,
                   shm_classes[cls].nelems);
    const _Atomic uint8_t *cm = shm_classmap(v->a->base);
    for (uint32_t q = s->start; q < s->start + s->npages; q++)
        if (shm_load_relaxed(&cm[q]) != cls)
            return bad(v, "classmap: page %u of span %u (class %u) says class %u", q, id,
                       cls, shm_load_relaxed(&cm[q]));
    return check_bitmap(v, id, s);
}

/* Which list a span of state `st` must be on. */
static int check_home(vctx_t *v, shm_spanid_t id, const shm_span_t *s, uint8_t st)
{
    unsigned w = v->where[id];
    bool ok;
    const char *want;
    switch (st) {
    case SHM_SPAN_FREE:
        ok = s->npages < SHM_HEAP_NLISTS ? w == W_HEAP : w == W_TREAP;
        want = s->npages < SHM_HEAP_NLISTS ? "its heap free list" : "the heap treap";
        break;
    case SHM_SPAN_CENTRAL:
        ok = w == W_PARTIAL || w == W_FULL;
        want = "a central list";
        break;
    case SHM_SPAN_HELD:
        ok = w == W_SESSION;
        want = "a session list";
        break;
    default:                 /* LARGE */
        ok = w == W_NONE;
        want = "no list";
        break;
    }
    if (!ok) {
        char buf[64];
        return bad(v, "list: span %u (%s, %u pages) is on %s, expected %s", id,
                   state_name(st), s->npages, where_name(w, v->idx[id], buf, sizeof buf),
                   want);
    }
    return 0;
}

/* Span `id` covers [p, e): its span-map entries must say so. */
static int check_map(vctx_t *v, shm_spanid_t id, uint32_t p, uint32_t e, bool free_span)
{
    for (uint32_t q = p; q < e; q++) {
        bool edge = q == p || q == e - 1;
        shm_spanid_t want = (!free_span || edge) ? id : 0;
        shm_spanid_t got = map_at(v, q);
        if (got == want)
            continue;
        if (got != 0 && got < v->hwm && span_at(v, got)->start == q &&
            state_of(span_at(v, got)) != SHM_SPAN_DEAD)
            return bad(v, "overlap: span %u (pages %u..%u) and span %u starting at page %u",
                       id, p, e - 1, got, q);
        return bad(v, "spanmap: page %u maps to %u, expected %u (%s span %u, pages %u..%u)",
                   q, got, want, free_span ? "free" : "in-use", id, p, e - 1);
    }
    return 0;
}

static int check_span(vctx_t *v, shm_spanid_t id, uint32_t p, bool *was_free)
{
    const shm_heap_t *hp = &v->h->heap;
    const shm_span_t *s = span_at(v, id);
    uint8_t st = state_of(s);
    if (st < SHM_SPAN_FREE || st > SHM_SPAN_LARGE)
        return bad(v, "spanmap: page %u maps to span %u, which is %s", p, id, state_name(st));
    if (v->where[id] & W_WALKED)
        return bad(v, "overlap: span %u (pages %u..%u) is reached again at page %u", id,
                   s->start, s->start + s->npages - 1, p);
    if (s->start != p)
        return bad(v, "%s: page %u maps to span %u, which starts at page %u",
                   s->start < p ? "overlap" : "spanmap", p, id, s->start);
    if (s->npages == 0 || s->npages > hp->end_page - p)
        return bad(v, "span %u at page %u has %u pages, past the heap's end %u", id, p,
                   s->npages, hp->end_page);
    uint32_t e = p + s->npages;
    bool is_free = st == SHM_SPAN_FREE;
    if (check_home(v, id, s, st) != 0 || check_map(v, id, p, e, is_free) != 0)
        return -1;
    v->where[id] |= W_WALKED;
    if (is_free && *was_free)
        return bad(v, "adjacent free spans: span %u (pages %u..%u) follows a free span",
                   id, p, e - 1);
    *was_free = is_free;
    if (is_free) {
        uint8_t fl = s->flags;
        if ((fl & ~(SHM_SPAN_UNBACKED_ALL | SHM_SPAN_UNBACKED_SOME)) != 0 ||
            fl == (SHM_SPAN_UNBACKED_ALL | SHM_SPAN_UNBACKED_SOME))
            return bad(v, "flags: free span %u has flags %#x", id, fl);
        v->free_pages += s->npages;
        if (fl & SHM_SPAN_UNBACKED_ALL)
            v->unbacked_pages += s->npages;
        return 0;
    }
    if (s->flags & ~(st == SHM_SPAN_CENTRAL ? SHM_SPAN_CORRUPT : 0))
        return bad(v, "flags: %s span %u has flags %#x", state_name(st), id, s->flags);
    if ((s->flags & SHM_SPAN_CORRUPT) && (v->where[id] & ~W_WALKED) != W_FULL)
        return bad(v, "central: quarantined span %u is not on a full list", id);
    if (st == SHM_SPAN_LARGE) {
        uint32_t tag = shm_load_relaxed(&s->xowner);
        if (tag != 0 && tag != SHM_LARGE_POOLED && tag != SHM_LARGE_RETURNING &&
            tag != SHM_LARGE_CACHED)
            return bad(v, "large span %u has tag (xowner) %#x, not 0, POOLED, "
                       "RETURNING or CACHED", id, tag);
        if (tag == SHM_LARGE_POOLED)
            v->pooled++;
        if (tag == SHM_LARGE_CACHED) {
            /* 0: the caching thread is between its CAS and naming its
             * session, possible only while some session is open */
            uint64_t sess = shm_load_relaxed(&s->xlarge);
            bool open = sess == 0 ? v->a->hdr->nsessions > 0
                        : sess <= SHM_MAX_SESSIONS && v->a->hdr->sessions[sess - 1].pid != 0;
            if (!open)
                return bad(v, "large span %u is cached by session %llu, which is not open",
                           id, (unsigned long long)sess);
        }
        return s->sizeclass == 0 ? 0
               : bad(v, "large span %u has size class %u", id, s->sizeclass);
    }
    return check_small(v, id, s);
}

/* Backed span-map slots outside [first_page, end_page) must be 0. */
static int check_outside(vctx_t *v)
{
    const shm_heap_t *hp = &v->h->heap;
    if (hp->end_page == hp->first_page)
        return 0;            /* nothing of the span map is backed yet */
    uint64_t os = (uint64_t)sysconf(_SC_PAGESIZE) / sizeof(uint32_t);
    uint32_t lo = (uint32_t)(hp->first_page / os * os);
    uint64_t hi = ((uint64_t)hp->end_page + os - 1) / os * os;
    if (hi > hp->limit_page)
        hi = hp->limit_page;
    for (uint32_t q = lo; q < hp->first_page; q++)
        if (map_at(v, q) != 0)
            return bad(v, "spanmap: page %u, below the heap, maps to %u", q, map_at(v, q));
    for (uint32_t q = hp->end_page; q < hi; q++)
        if (map_at(v, q) != 0)
            return bad(v, "spanmap: page %u, past the heap's end, maps to %u", q,
                       map_at(v, q));
    return 0;
}

static int check_pages(vctx_t *v)
{
    const shm_heap_t *hp = &v->h->heap;
    bool was_free = false;
    for (uint32_t p = hp->first_page; p < hp->end_page;) {
        shm_spanid_t id = map_at(v, p);
        if (id == 0)
            return bad(v, "spanmap: page %u belongs to no span (maps to 0)", p);
        if (id >= v->hwm)
            return bad(v, "spanmap: page %u maps to %u, outside [1, %u)", p, id, v->hwm);
        if (check_span(v, id, p, &was_free) != 0)
            return -1;
        p += span_at(v, id)->npages;
    }
    return check_outside(v);
}

/* ---- 4. the totals ---- */

static int check_totals(vctx_t *v)
{
    const shm_heap_t *hp = &v->h->heap;
    if (hp->free_pages != v->free_pages)
        return bad(v, "free_pages: heap.free_pages is %llu, but free spans hold %llu pages",
                   (unsigned long long)hp->free_pages, (unsigned long long)v->free_pages);
    if (hp->unbacked_pages != v->unbacked_pages)
        return bad(v, "unbacked_pages: heap.unbacked_pages is %llu, but punched free spans "
                   "hold %llu pages", (unsigned long long)hp->unbacked_pages,
                   (unsigned long long)v->unbacked_pages);
    uint32_t live = 0;
    for (shm_spanid_t id = 1; id < v->hwm; id++) {
        uint8_t st = state_of(span_at(v, id));
        if (st == SHM_SPAN_DEAD) {
            if (v->where[id] != W_FIXFREE)
                return bad(v, "span allocator: dead descriptor %u is not on its free list",
                           id);
            continue;
        }
        live++;
        if (!(v->where[id] & W_WALKED))
            return bad(v, "leak: span %u (%s, pages %u..%u) is not in the heap's pages", id,
                       state_name(st), span_at(v, id)->start,
                       span_at(v, id)->start + span_at(v, id)->npages - 1);
    }
    if (live != v->h->spanalloc.inuse)
        return bad(v, "span allocator: %u descriptors in use, inuse says %u", live,
                   v->h->spanalloc.inuse);
    return 0;
}

/* ---- 5. the large pool ---- */

/* Only when no session is open: clients push and pop without telling us,
 * so a bucket walked under them could be half updated. */
static int check_lpool(vctx_t *v)
{
    const shm_lpool_t *lp = &v->h->lpool;
    if (v->h->nsessions != 0)
        return 0;
    uint64_t pages = 0;
    uint32_t spans = 0;
    for (unsigned b = 0; b < SHM_LPOOL_NBUCKETS; b++) {
        uint32_t npages = SHM_LPOOL_MIN_PAGES + b, n = 0;
        shm_spanid_t batch = SHM_LPOOL_ID(shm_load_acquire(&lp->bucket[b].xhead));
        while (batch != 0) {
            shm_spanid_t id = batch;
            batch = 0;
            for (uint32_t k = 0; id != 0; k++, n++) {
                if (id >= v->hwm)
                    return bad(v, "large pool: bucket of %u pages links to span %u, "
                               "outside [1, %u)", npages, id, v->hwm);
                if (k == SHM_LPOOL_BATCH_MAX)
                    return bad(v, "large pool: bucket of %u pages has a batch of more "
                               "than %u spans", npages, SHM_LPOOL_BATCH_MAX);
                const shm_span_t *s = span_at(v, id);
                uint8_t st = state_of(s);
                if (v->where[id] & W_POOL)
                    return bad(v, "large pool: bucket of %u pages reaches span %u twice "
                               "(a cycle, or on two buckets)", npages, id);
                v->where[id] |= W_POOL;
                if (st != SHM_SPAN_LARGE || shm_load_relaxed(&s->xowner) != SHM_LARGE_POOLED)
                    return bad(v, "large pool: bucket of %u pages holds span %u, which is "
                               "%s with tag %#x, not a POOLED large span", npages, id,
                               state_name(st), shm_load_relaxed(&s->xowner));
                if (s->npages != npages)
                    return bad(v, "large pool: bucket of %u pages holds span %u of %u "
                               "pages", npages, id, s->npages);
                uint64_t x = shm_load_relaxed(&s->xlarge);
                if (k == 0)
                    batch = SHM_LPOOL_NEXT_BATCH(x);
                else if (SHM_LPOOL_NEXT_BATCH(x) != 0)
                    return bad(v, "large pool: span %u inside a batch links to another "
                               "batch", id);
                pages += npages;
                id = SHM_LPOOL_IN_BATCH(x);
            }
        }
        spans += n;
    }
    uint64_t xpages = shm_load_relaxed(&lp->xpages);
    if (pages != xpages)
        return bad(v, "large pool: xpages is %llu, but the buckets hold %llu pages",
                   (unsigned long long)xpages, (unsigned long long)pages);
    if (spans != v->pooled)
        return bad(v, "large pool: %u spans are tagged POOLED, but the buckets hold %u",
                   v->pooled, spans);
    if (lp->cap_pages != 0 && pages > lp->cap_pages)
        return bad(v, "large pool: holds %llu pages, over its cap of %llu",
                   (unsigned long long)pages, (unsigned long long)lp->cap_pages);
    return 0;
}

int spd_heap_verify(shm_arena_t *a, char *msg, size_t len)
{
    vctx_t v = { .a = a, .h = a->hdr, .msg = msg, .len = len };
    if (msg != NULL && len > 0)
        msg[0] = '\0';
    if (a->hdr->magic != SHM_MAGIC)
        return bad(&v, "header: bad magic");
    if (check_header(&v) != 0)
        return -1;
    v.hwm = a->hdr->spanalloc.hwm;
    v.where = calloc(v.hwm, 1);
    v.idx = calloc(v.hwm, sizeof *v.idx);
    int rc;
    if (v.where == NULL || v.idx == NULL)
        rc = bad(&v, "verify: out of memory");
    else
        rc = check_lists(&v) || check_pages(&v) || check_totals(&v) || check_lpool(&v)
             ? -1 : 0;
    free(v.where);
    free(v.idx);
    return rc;
}

/* See shm/layout.h for the overview.
 *
 * The page heap (Go's mheap) and the span-descriptor allocator (Go's
 * FixAlloc), both kept in the arena's header so that a restarted daemon
 * finds them.  Daemon only, one thread: no locks.
 *
 * Free spans.  A FREE span of n < 128 pages is on the exact list
 * free_head[n] (next/prev); a larger one is in a treap ordered by
 * (npages, start) whose priorities are a hash of the span id, so the treap
 * needs no private memory and is the same after a restart.  A FREE span maps
 * only its first and last page in the span map; its interior maps to 0.
 *
 * Taking n pages: the exact list, then the smallest larger list, then the
 * treap's best fit (fewest pages, then lowest address), then grow.  The pages
 * taken are cut from the front of the free run; what is left goes back as
 * one free span (two when an alignment leaves a head).  Every descriptor a
 * cut needs and every page it must back again are secured before anything
 * changes, so a failure (-ENOMEM) leaves the heap as it was.
 *
 * Freeing merges with both free neighbours, found through the span map's
 * entries for the pages just before and just after the span.
 *
 * Scavenged pages.  A FREE span whose pages were all punched out carries
 * SHM_SPAN_UNBACKED_ALL (its pages count in heap.unbacked_pages); a merge of
 * such a span with backed pages carries SHM_SPAN_UNBACKED_SOME.  Taking pages
 * out of a span with either flag backs them again first.
 *
 * Publication (the Go rule): a span handed out gets every field written,
 * then its state stored with release, then its span-map entries stored with
 * release; a reader loads the span-map entry, then the state, with acquire.
 */
#include "config.h"

#include <errno.h>
#include <stdbool.h>
#include <time.h>

#include "daemon/heap.h"
#include "daemon/list.h"
#include "shm/atomic.h"
#include "shm/span.h"

/* Descriptors backed at a time: 1 MiB of them. */
#define FIX_STEP ((uint32_t)((1u << 20) / sizeof(shm_span_t)))
/* Treap walks recurse; a treap with hashed priorities is ~2 ln n deep, so a
 * walk deeper than this means a corrupt treap (a cycle), not a big one. */
#define TREAP_MAX_DEPTH 512

uint32_t spd_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint32_t)((uint64_t)ts.tv_sec * SPD_TICKS_PER_SEC +
                      (uint64_t)ts.tv_nsec * SPD_TICKS_PER_SEC / 1000000000u);
}

static inline shm_span_t *span_at(shm_arena_t *a, shm_spanid_t id)
{
    return shm_span(a->base, id);
}

static inline uint8_t span_state(const shm_span_t *s)
{
    return shm_load_relaxed(&s->xstate);   /* the daemon is the only writer */
}

/* ---- the span map: daemon stores with release, clients load acquire ---- */

static inline shm_spanid_t map_get(shm_arena_t *a, uint32_t page)
{
    return shm_load_relaxed(&shm_spanmap(a->base)[page]);
}

static inline void map_set(shm_arena_t *a, uint32_t page, shm_spanid_t id)
{
    shm_store_release(&shm_spanmap(a->base)[page], id);
}

static void map_range(shm_arena_t *a, uint32_t start, uint32_t n, shm_spanid_t id)
{
    _Atomic uint32_t *map = shm_spanmap(a->base);
    for (uint32_t p = start; p < start + n; p++)
        shm_store_release(&map[p], id);
}

/* A FREE span maps its first and last page only. */
static void map_edges(shm_arena_t *a, const shm_span_t *s, shm_spanid_t id)
{
    map_set(a, s->start, id);
    map_set(a, s->start + s->npages - 1, id);
}

/* Every field but the identity (start, npages) and the state to zero; and
 * a new xcut: whatever the descriptor describes next is another span. */
static void span_clear(shm_span_t *s)
{
    shm_store_relaxed(&s->xcut, shm_load_relaxed(&s->xcut) + 1);
    s->sizeclass = 0;
    s->flags = 0;
    s->hstate = 0;
    s->nelems = 0;
    s->next = s->prev = 0;
    s->session = 0;
    s->left = s->right = 0;
    shm_store_relaxed(&s->xowner, 0);
    shm_store_relaxed(&s->xremote, 0);
    shm_store_relaxed(&s->xlarge, 0);
}

/* ---- the fixed allocator of span descriptors ---- */

/* Descriptors that fix_alloc can hand out without backing more. */
static uint32_t fix_available(const shm_fixalloc_t *f)
{
    uint32_t recycled = f->hwm - 1 - f->inuse;
    return recycled + (f->backed > f->hwm ? f->backed - f->hwm : 0);
}

/* Make sure the next `n` fix_alloc calls succeed: back more of the
 * descriptor region, in steps of 1 MiB, when needed.  0 or -errno. */
static int fix_reserve(shm_arena_t *a, uint32_t n)
{
    shm_fixalloc_t *f = &a->hdr->spanalloc;
    while (fix_available(f) < n) {
        if (f->backed >= f->max)
            return -ENOMEM;
        uint32_t step = f->max - f->backed < FIX_STEP ? f->max - f->backed : FIX_STEP;
        int rc = shm_arena_back(a, a->hdr->spans_off + (uint64_t)f->backed * sizeof(shm_span_t),
                                (uint64_t)step * sizeof(shm_span_t));
        if (rc != 0)
            return rc;
        f->backed += step;
    }
    return 0;
}

/* A descriptor with every field zero and state DEAD; fix_reserve first. */
static shm_spanid_t fix_alloc(shm_arena_t *a)
{
    shm_fixalloc_t *f = &a->hdr->spanalloc;
    shm_spanid_t id;
    if (f->free_head != 0) {
        id = f->free_head;
        f->free_head = span_at(a, id)->next;
    } else {
        id = f->hwm++;
    }
    f->inuse++;
    shm_span_t *s = span_at(a, id);
    span_clear(s);
    s->start = s->npages = 0;
    return id;
}

static void fix_free(shm_arena_t *a, shm_spanid_t id)
{
    shm_fixalloc_t *f = &a->hdr->spanalloc;
    shm_span_t *s = span_at(a, id);
    span_clear(s);
    s->start = s->npages = 0;
    shm_store_release(&s->xstate, SHM_SPAN_DEAD);
    s->next = f->free_head;
    f->free_head = id;
    f->inuse--;
}

/* ---- the treap of free spans of >= SHM_HEAP_NLISTS pages ---- */

uint32_t spd_treap_priority(shm_spanid_t id)
{
    uint32_t x = id;                /* a 32-bit integer hash (bijective) */
    x ^= x >> 16;
    x *= 0x7feb352dU;
    x ^= x >> 15;
    x *= 0x846ca68bU;
    x ^= x >> 16;
    return x;
}

/* Does `x` sit above `y`?  Higher priority wins, the lower id on a tie. */
static bool treap_above(shm_spanid_t x, shm_spanid_t y)
{
    uint32_t px = spd_treap_priority(x), py = spd_treap_priority(y);
    return px > py || (px == py && x < y);
}

static bool key_less(const shm_span_t *x, const shm_span_t *y)
{
    return x->npages < y->npages || (x->npages == y->npages && x->start < y->start);
}

/* Split the subtree `t` into the nodes below `x`'s key (*lp) and the rest (*rp). */
static void treap_split(shm_arena_t *a, shm_spanid_t t, const shm_span_t *x,
                        shm_spanid_t *lp, shm_spanid_t *rp)
{
    while (t != 0) {
        shm_span_t *n = span_at(a, t);
        if (key_less(n, x)) {
            *lp = t;
            lp = &n->right;
            t = n->right;
        } else {
            *rp = t;
            rp = &n->left;
            t = n->left;
        }
    }
    *lp = *rp = 0;
}

static void treap_insert(shm_arena_t *a, shm_spanid_t id)
{
    shm_span_t *x = span_at(a, id);
    shm_spanid_t *link = &a->hdr->heap.treap_root;
    while (*link != 0 && treap_above(*link, id)) {
        shm_span_t *n = span_at(a, *link);
        link = key_less(x, n) ? &n->left : &n->right;
    }
    treap_split(a, *link, x, &x->left, &x->right);
    *link = id;
}

/* Join two treaps, every key of `l` below every key of `r`, into *link. */
static void treap_join(shm_arena_t *a, shm_spanid_t *link, shm_spanid_t l, shm_spanid_t r)
{
    while (l != 0 && r != 0) {
        if (treap_above(l, r)) {
            *link = l;
            link = &span_at(a, l)->right;
            l = *link;
        } else {
            *link = r;
            link = &span_at(a, r)->left;
            r = *link;
        }
    }
    *link = l != 0 ? l : r;
}

static void treap_remove(shm_arena_t *a, shm_spanid_t id)
{
    shm_span_t *x = span_at(a, id);
    shm_spanid_t *link = &a->hdr->heap.treap_root;
    while (*link != id && *link != 0) {
        shm_span_t *n = span_at(a, *link);
        link = key_less(x, n) ? &n->left : &n->right;
    }
    if (*link == 0)          /* not in the treap: spd_heap_verify reports it */
        return;
    treap_join(a, link, x->left, x->right);
    x->left = x->right = 0;
}

/* The free span with the fewest pages >= need, the lowest address on a tie. */
static shm_spanid_t treap_best(shm_arena_t *a, uint64_t need)
{
    shm_spanid_t t = a->hdr->heap.treap_root, best = 0;
    while (t != 0) {
        shm_span_t *n = span_at(a, t);
        if (n->npages >= need) {
            best = t;
            t = n->left;
        } else {
            t = n->right;
        }
    }
    return best;
}

/* ---- the free-span index and its page counts ---- */

static void free_insert(shm_arena_t *a, shm_spanid_t id)
{
    shm_heap_t *h = &a->hdr->heap;
    shm_span_t *s = span_at(a, id);
    if (s->npages < SHM_HEAP_NLISTS)
        spd_list_push(a->base, &h->free_head[s->npages], id);
    else
        treap_insert(a, id);
    h->free_pages += s->npages;
    if (s->flags & SHM_SPAN_UNBACKED_ALL)
        h->unbacked_pages += s->npages;
}

static void free_remove(shm_arena_t *a, shm_spanid_t id)
{
    shm_heap_t *h = &a->hdr->heap;
    shm_span_t *s = span_at(a, id);
    if (s->npages < SHM_HEAP_NLISTS)
        spd_list_remove(a->base, &h->free_head[s->npages], id);
    else
        treap_remove(a, id);
    h->free_pages -= s->npages;
    if (s->flags & SHM_SPAN_UNBACKED_ALL)
        h->unbacked_pages -= s->npages;
}

/* Flags of a free run made of pages with `flags` and backed pages. */
static uint8_t flags_with_backed(uint8_t flags)
{
    return flags ? SHM_SPAN_UNBACKED_SOME : 0;
}

/* A new FREE span [start, start+n) on the index; fix_reserve first. */
static void free_piece(shm_arena_t *a, uint32_t start, uint32_t n, uint8_t flags,
                       uint32_t since)
{
    shm_spanid_t id = fix_alloc(a);
    shm_span_t *s = span_at(a, id);
    s->start = start;
    s->npages = n;
    s->flags = flags;
    s->free_since = since;
    shm_store_release(&s->xstate, SHM_SPAN_FREE);
    map_edges(a, s, id);
    free_insert(a, id);
}

/* The FREE span that ends just before `page`, or 0. */
static shm_spanid_t free_left_of(shm_arena_t *a, uint32_t page)
{
    if (page <= a->hdr->heap.first_page)
        return 0;
    shm_spanid_t id = map_get(a, page - 1);
    if (id == 0 || id >= a->hdr->spanalloc.hwm)
        return 0;
    shm_span_t *s = span_at(a, id);
    return span_state(s) == SHM_SPAN_FREE && s->start + s->npages == page ? id : 0;
}

/* The FREE span that starts at `page`, or 0. */
static shm_spanid_t free_at(shm_arena_t *a, uint32_t page)
{
    if (page >= a->hdr->heap.end_page)
        return 0;
    shm_spanid_t id = map_get(a, page);
    if (id == 0 || id >= a->hdr->spanalloc.hwm)
        return 0;
    shm_span_t *s = span_at(a, id);
    return span_state(s) == SHM_SPAN_FREE && s->start == page ? id : 0;
}

/* ---- growing ---- */

/* Make room for a free run of `need` pages at the end of the heap: extend
 * end_page by at least SHM_GROW_MIN_PAGES (less only at the end of the
 * reservation), backing the span-map and bitmap slots that describe the new
 * pages and the data pages the take that asked for them will use (the
 * first need - have, after a free span ending at the old end, which the
 * new pages merge with).  The rest of the step stays unbacked (the run is
 * SHM_SPAN_UNBACKED_SOME) until a later take backs exactly what it cuts:
 * backing the whole step at once left up to a step of backed pages that
 * nobody had asked for (4 % of 24 MB of 24-byte objects from a cold arena).
 * 0, or -ENOMEM with the heap unchanged. */
static int heap_grow(shm_arena_t *a, uint64_t need)
{
    shm_header_t *hdr = a->hdr;
    shm_heap_t *h = &hdr->heap;
    uint32_t end = h->end_page;
    shm_spanid_t tail = free_left_of(a, end);
    uint64_t have = tail ? span_at(a, tail)->npages : 0;
    uint64_t want = need > have ? need - have : 1;
    uint64_t room = h->limit_page - end;
    uint64_t n = want > SHM_GROW_MIN_PAGES ? want : SHM_GROW_MIN_PAGES;
    if (n > room)
        n = room;
    if (n < want)
        return -ENOMEM;
    int rc = tail ? 0 : fix_reserve(a, 1);
    if (rc != 0)
        return rc;
    uint64_t data = (uint64_t)end << SHM_PAGE_SHIFT, bytes = n << SHM_PAGE_SHIFT;
    uint64_t used = want << SHM_PAGE_SHIFT;
    uint8_t fresh = n > want ? SHM_SPAN_UNBACKED_SOME : 0;   /* flags of the new pages */
    if ((rc = shm_arena_back(a, data, used)) != 0)
        return rc;
    if ((rc = shm_arena_back(a, hdr->spanmap_off + (uint64_t)end * sizeof(uint32_t),
                             n * sizeof(uint32_t))) != 0 ||
        (rc = shm_arena_back(a, hdr->classmap_off + end, n)) != 0 ||
        (rc = shm_arena_back(a, hdr->bitmap_off + (uint64_t)end * SHM_BITMAP_PAGE_BYTES,
                             n * SHM_BITMAP_PAGE_BYTES)) != 0) {
        shm_arena_punch(a, data, used);     /* give the data pages back */
        return rc;
    }
    h->end_page = end + (uint32_t)n;
    hdr->stats.grows++;
    hdr->stats.grown_bytes += bytes;
    if (tail) {
        shm_span_t *s = span_at(a, tail);
        free_remove(a, tail);
        map_edges(a, s, 0);
        s->npages += (uint32_t)n;
        s->flags = flags_with_backed(s->flags) | fresh;
        map_edges(a, s, tail);
        free_insert(a, tail);
    } else {
        free_piece(a, end, (uint32_t)n, fresh, spd_now());
    }
    return 0;
}

/* ---- taking pages ---- */

static shm_spanid_t heap_find(shm_arena_t *a, uint64_t need)
{
    shm_heap_t *h = &a->hdr->heap;
    for (uint64_t n = need; n < SHM_HEAP_NLISTS; n++)
        if (h->free_head[n] != 0)
            return h->free_head[n];
    return treap_best(a, need);
}

/* Cut [ts, ts+n) out of FREE span `id`; the pages before and after it go
 * back as free spans.  Afterwards `id` describes [ts, ts+n), is on no list,
 * maps no page, has flags 0 and its pages backed; its state is still FREE
 * for the caller to publish.  0, or -errno with nothing changed. */
static int heap_cut(shm_arena_t *a, shm_spanid_t id, uint32_t ts, uint32_t n)
{
    shm_span_t *s = span_at(a, id);
    uint32_t fs = s->start, fe = s->start + s->npages, te = ts + n;
    int rc = fix_reserve(a, (ts > fs) + (te < fe));
    if (rc != 0)
        return rc;
    if (s->flags != 0 &&
        (rc = shm_arena_back(a, (uint64_t)ts << SHM_PAGE_SHIFT,
                             (uint64_t)n << SHM_PAGE_SHIFT)) != 0)
        return rc;
    uint8_t flags = s->flags;
    uint32_t since = s->free_since;
    free_remove(a, id);
    map_edges(a, s, 0);
    if (ts > fs)
        free_piece(a, fs, ts - fs, flags, since);
    if (te < fe)
        free_piece(a, te, fe - te, flags, since);
    s->start = ts;
    s->npages = n;
    span_clear(s);
    return 0;
}

/* `need` pages whose first page's address is a multiple of `align` (a power
 * of two; <= page size: any page).  The span is cut and cleared, state still
 * FREE, no page mapped: the caller fills it and publishes it. */
static shm_spanid_t heap_take(shm_arena_t *a, uint64_t need, uint64_t align, int *err)
{
    shm_heap_t *h = &a->hdr->heap;
    uint64_t alpages = align > SHM_PAGE_SIZE ? align >> SHM_PAGE_SHIFT : 1;
    uint64_t total = need + alpages - 1;
    int rc = -ENOMEM;
    if (need == 0 || total > (uint64_t)(h->limit_page - h->first_page))
        goto fail;
    shm_spanid_t id = heap_find(a, total);
    if (id == 0) {
        if ((rc = heap_grow(a, total)) != 0)
            goto fail;
        if ((id = heap_find(a, total)) == 0) {
            rc = -ENOMEM;
            goto fail;
        }
    }
    uint64_t start = (uint64_t)span_at(a, id)->start;
    if (alpages > 1) {
        uint64_t addr = a->hdr->base + (start << SHM_PAGE_SHIFT);
        addr = (addr + align - 1) & ~(align - 1);
        start = (addr - a->hdr->base) >> SHM_PAGE_SHIFT;
    }
    if ((rc = heap_cut(a, id, (uint32_t)start, (uint32_t)need)) != 0)
        goto fail;
    a->hdr->stats.spans_allocated++;
    return id;
fail:
    if (err)
        *err = rc == -ENOSPC ? -ENOMEM : rc;
    return 0;
}

/* ---- the interface ---- */

int spd_heap_init(shm_arena_t *a)
{
    shm_header_t *hdr = a->hdr;
    shm_heap_t *h = &hdr->heap;
    shm_fixalloc_t *f = &hdr->spanalloc;
    *h = (shm_heap_t){0};
    h->first_page = (uint32_t)(hdr->data_off >> SHM_PAGE_SHIFT);
    h->end_page = h->first_page;
    h->limit_page = hdr->npages;
    *f = (shm_fixalloc_t){0};
    f->hwm = 1;              /* id 0 means "none" */
    f->max = (uint32_t)((hdr->data_off - hdr->spans_off) / sizeof(shm_span_t));
    for (unsigned c = 0; c < SHM_NCLASSES; c++)
        hdr->central[c] = (shm_central_t){0};
    hdr->stats = (shm_stats_t){0};
    return fix_reserve(a, 1);   /* the first 1 MiB of descriptors */
}

shm_spanid_t spd_heap_alloc_small(shm_arena_t *a, unsigned cls, int *err)
{
    if (cls == 0 || cls >= SHM_NCLASSES) {
        if (err)
            *err = -EINVAL;
        return 0;
    }
    shm_spanid_t id = heap_take(a, shm_classes[cls].npages, 0, err);
    if (id == 0)
        return 0;
    shm_span_t *s = span_at(a, id);
    shm_span_cut(a->base, s, cls);
    shm_store_release(&s->xstate, SHM_SPAN_CENTRAL);
    map_range(a, s->start, s->npages, id);
    if (err)
        *err = 0;
    return id;
}

shm_spanid_t spd_heap_alloc_large(shm_arena_t *a, uint64_t bytes, uint64_t align, int *err)
{
    shm_heap_t *h = &a->hdr->heap;
    uint64_t room = (uint64_t)(h->limit_page - h->first_page) << SHM_PAGE_SHIFT;
    if (bytes == 0 || (align & (align - 1)) != 0 || align > a->hdr->arena_size) {
        if (err)
            *err = -EINVAL;
        return 0;
    }
    if (bytes > room) {
        if (err)
            *err = -ENOMEM;
        return 0;
    }
    uint64_t need = (bytes + SHM_PAGE_SIZE - 1) >> SHM_PAGE_SHIFT;
    shm_spanid_t id = heap_take(a, need, align, err);
    if (id == 0)
        return 0;
    shm_span_t *s = span_at(a, id);
    shm_store_release(&s->xstate, SHM_SPAN_LARGE);
    map_range(a, s->start, s->npages, id);
    a->hdr->stats.large_allocs++;
    if (err)
        *err = 0;
    return id;
}

void spd_heap_free(shm_arena_t *a, shm_spanid_t id)
{
    shm_header_t *hdr = a->hdr;
    if (id == 0 || id >= hdr->spanalloc.hwm)
        return;
    shm_span_t *s = span_at(a, id);
    uint8_t state = span_state(s);
    if (state == SHM_SPAN_FREE || state == SHM_SPAN_DEAD)
        return;              /* nothing to give back: never corrupt the heap */
    uint32_t ms = s->start, me = s->start + s->npages;
    map_range(a, s->start, s->npages, 0);
    shm_spanid_t left = free_left_of(a, ms), right = free_at(a, me);
    uint8_t flags = 0;
    if (left) {
        shm_span_t *l = span_at(a, left);
        free_remove(a, left);
        map_edges(a, l, 0);
        flags |= flags_with_backed(l->flags);
        ms = l->start;
    }
    if (right) {
        shm_span_t *r = span_at(a, right);
        free_remove(a, right);
        map_edges(a, r, 0);
        flags |= flags_with_backed(r->flags);
        me = r->start + r->npages;
    }
    shm_spanid_t keep = left ? left : id;
    shm_span_t *k = span_at(a, keep);
    span_clear(k);
    k->start = ms;
    k->npages = me - ms;
    k->flags = flags;
    k->free_since = spd_now();
    shm_store_release(&k->xstate, SHM_SPAN_FREE);
    map_edges(a, k, keep);
    free_insert(a, keep);
    if (left)
        fix_free(a, id);
    if (right)
        fix_free(a, right);
    hdr->stats.spans_freed++;
}

int spd_heap_free_large(shm_arena_t *a, uint64_t off)
{
    shm_heap_t *h = &a->hdr->heap;
    if (off & (SHM_PAGE_SIZE - 1))
        return -EINVAL;
    uint64_t page = off >> SHM_PAGE_SHIFT;
    if (page < h->first_page || page >= h->end_page)
        return -EINVAL;
    shm_spanid_t id = map_get(a, (uint32_t)page);
    if (id == 0 || id >= a->hdr->spanalloc.hwm)
        return -EINVAL;
    shm_span_t *s = span_at(a, id);
    if (span_state(s) != SHM_SPAN_LARGE || s->start != page)
        return -EINVAL;
    /* claim it against a client pushing it on the large pool meanwhile: a
     * POOLED span is free already (shm/layout.h, the large-object tag) */
    uint32_t tag = shm_load_acquire(&s->xowner);
    do {
        if (tag != 0 && tag != SHM_LARGE_RETURNING)
            return -EALREADY;
    } while (!shm_cas_strong_acq_rel(&s->xowner, &tag, SHM_LARGE_RETURNING));
    spd_heap_free(a, id);
    a->hdr->stats.large_frees++;
    return 0;
}

uint32_t spd_heap_cached_large(shm_arena_t *a, uint32_t id, bool free_them)
{
    uint32_t n = 0, hwm = a->hdr->spanalloc.hwm;
    for (shm_spanid_t sid = 1; sid < hwm; sid++) {
        shm_span_t *s = span_at(a, sid);
        if (span_state(s) != SHM_SPAN_LARGE || shm_load_relaxed(&s->xlarge) != id)
            continue;
        uint32_t tag = SHM_LARGE_CACHED;
        if (!free_them) {
            n += shm_load_relaxed(&s->xowner) == tag;
            continue;
        }
        if (!shm_cas_strong_acq_rel(&s->xowner, &tag, SHM_LARGE_RETURNING))
            continue;
        shm_store_relaxed(&s->xlarge, 0);
        if (spd_heap_free_large(a, (uint64_t)s->start << SHM_PAGE_SHIFT) == 0)
            n++;
    }
    return n;
}

/* ---- the scavenger ---- */

typedef struct scav_s {
    shm_arena_t *a;
    uint32_t now, idle;
    uint64_t budget;         /* pages */
    uint64_t done;           /* pages punched so far */
} scav_t;

static void scav_span(scav_t *c, shm_span_t *s)
{
    if (s->flags & SHM_SPAN_UNBACKED_ALL)
        return;
    if (c->now < s->free_since || c->now - s->free_since < c->idle)
        return;
    /* the budget bounds a call, but one span is always allowed so that a
     * span larger than the budget is not left out for ever */
    if (c->done != 0 && c->done + s->npages > c->budget)
        return;
    if (shm_arena_punch(c->a, (uint64_t)s->start << SHM_PAGE_SHIFT,
                        (uint64_t)s->npages << SHM_PAGE_SHIFT) != 0)
        return;
    s->flags = SHM_SPAN_UNBACKED_ALL;
    c->a->hdr->heap.unbacked_pages += s->npages;
    c->done += s->npages;
}

static void scav_treap(scav_t *c, shm_spanid_t t, unsigned depth)
{
    while (t != 0 && depth < TREAP_MAX_DEPTH && c->done < c->budget) {
        shm_span_t *s = span_at(c->a, t);
        scav_treap(c, s->right, depth + 1);   /* larger spans first */
        if (c->done < c->budget)
            scav_span(c, s);
        t = s->left;
        depth++;
    }
}

uint64_t spd_heap_scavenge(shm_arena_t *a, uint32_t now, uint32_t idle, uint64_t budget_pages)
{
    shm_heap_t *h = &a->hdr->heap;
    scav_t c = { a, now, idle, budget_pages, 0 };
    if (budget_pages == 0 || h->free_pages == h->unbacked_pages)
        return 0;
    uint64_t before = shm_arena_resident(a);
    scav_treap(&c, h->treap_root, 0);
    for (uint32_t n = SHM_HEAP_NLISTS - 1; n >= 1 && c.done < c.budget; n--) {
        shm_span_t *s;
        spd_list_foreach(a->base, h->free_head[n], id, s) {
            if (c.done >= c.budget)
                break;
            scav_span(&c, s);
        }
    }
    if (c.done == 0)
        return 0;
    uint64_t after = shm_arena_resident(a);
    uint64_t bytes = before > after ? before - after : 0;
    a->hdr->stats.scavenged_bytes += bytes;
    if (bytes != 0)
        a->hdr->stats.scavenges++;
    return bytes;
}

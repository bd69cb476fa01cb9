/* See shm/layout.h for the overview; doc/design.md section 3 for the client.
 *
 * The thread cache's slow paths: what happens when a bin or a tiny block
 * runs dry (client/cache.h has the fast paths).  In order, a dry bin
 *   1. takes the next word of its current span's alloc bitmap with a free
 *      object (find_word, wrapping around once),
 *   2. takes the current span's remote-free stack (one exchange) and looks
 *      again,
 *   3. switches to another span this thread holds with free objects (the
 *      avail list: spares of the last Refill, full spans that got a local
 *      free), then to a full span whose remote stack is not empty,
 *   4. and only then asks the daemon for a batch (Refill), the batch
 *      growing 4x per refill of the class up to SPCI_BATCH_MAX_BYTES, with
 *      the spans it gives back piggybacked.
 * Retention: a class may always keep SPCI_AVAIL_CAP_BYTES of spans with
 * free room (the floor); beyond it, a span that a free makes usable is kept
 * only while the class's peak demand (the most pages it ever held at once)
 * is at most SPCI_RETAIN_BYTES and the avail lists of every cache of the
 * process together stay within SPCI_RETAIN_BYTES (spci_avail_pages).  A
 * batch that fits the budget is thus kept whole and reused without a
 * Refill; a demand larger than the budget would need most of its spans
 * refilled anyway, so it keeps only the floor and the rest goes back to the
 * daemon (where the scavenger can return it to the kernel).  At most
 * SPCI_FULL_CAP_BYTES of full spans are tracked per class; the excess goes
 * back in one Release (or with the next Refill).
 *
 * Every span here is held by the cache's thread: only that thread (or
 * spc_detach / the thread-exit flush, while the thread is quiescent) runs
 * this code on it, so holder fields need no synchronisation.
 */
#include "config.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "client/cache.h"

#define SPCI_BATCH_MIN_BYTES (256u << 10)  /* first Refill of a class */
#define SPCI_BATCH_MAX_BYTES (16u << 20)   /* batches grow 4x up to this, */
#define SPCI_BATCH_OBJECTS 4096u           /* but at most this many objects' */
#define SPCI_BATCH_FLOOR_BYTES (512u << 10) /* worth (at least this much): the */
#define SPCI_BATCH_GROWTH 4u               /* arena pages of a batch are backed */
#define SPCI_AVAIL_CAP_BYTES (32u << 20)   /* free room a class may always hold */
#define SPCI_RETAIN_BYTES (384u << 20)     /* process-wide budget beyond that */
#define SPCI_FULL_CAP_BYTES (512u << 20)  /* full spans tracked per class */
#define SPCI_FULL_SCAN 8u                  /* full spans looked at per miss */
#define SPCI_REFILL_MAX 256u               /* spans accepted from one Refill */
#define SPCI_RELEASE_CHUNK 1024u           /* spans per Release message */

spci_cache_t spci_empty_cache = { .tid = UINT32_MAX };
/* Pages on the avail lists of every cache of the process (relaxed: a budget,
 * not a synchronising value; slow paths only). */
static _Atomic uint64_t spci_avail_pages;
__thread spci_tls_t spci_tls __attribute__((tls_model("initial-exec"))) = {
    .tc = &spci_empty_cache,
};

void spci_cache_init_bins(spci_cache_t *c)
{
    /* bins[0]'s line holds tid: not a bin's to clear */
    memset(&c->bins[1], 0, sizeof c->bins - sizeof c->bins[0]);
    for (unsigned cls = 1; cls < SHM_NCLASSES; cls++) {
        c->bins[cls].divmul = shm_classes[cls].divmul;
        c->bins[cls].size = shm_classes[cls].size;
    }
}

/* ---- private span lists (hnext/hprev) ---- */

static void slist_push_tail(spci_slist_t *l, shm_span_t *s)
{
    shm_spanid_t id = shm_span_id(spci_map.base, s);
    s->hnext = 0;
    s->hprev = l->tail;
    if (l->tail)
        spci_map.spans[l->tail].hnext = id;
    else
        l->head = id;
    l->tail = id;
    l->n++;
    l->pages += s->npages;
}

static void slist_remove(spci_slist_t *l, shm_span_t *s)
{
    if (s->hprev)
        spci_map.spans[s->hprev].hnext = s->hnext;
    else
        l->head = s->hnext;
    if (s->hnext)
        spci_map.spans[s->hnext].hprev = s->hprev;
    else
        l->tail = s->hprev;
    s->hnext = s->hprev = 0;
    l->n--;
    l->pages -= s->npages;
}

static shm_span_t *slist_head(const spci_slist_t *l)
{
    return l->head ? &spci_map.spans[l->head] : NULL;
}

/* The avail list, with the process-wide count of its pages. */
static void avail_push(spci_class_t *k, shm_span_t *s)
{
    slist_push_tail(&k->avail, s);
    shm_fetch_add_relaxed(&spci_avail_pages, s->npages);
}

static void avail_remove(spci_class_t *k, shm_span_t *s)
{
    slist_remove(&k->avail, s);
    shm_fetch_add_relaxed(&spci_avail_pages, -(uint64_t)s->npages);
}

/* May class k keep one more span of npages with free room? */
static bool avail_keep(const spci_class_t *k, uint32_t npages)
{
    uint64_t pages = (uint64_t)k->avail.pages + npages;
    if (pages << SHM_PAGE_SHIFT <= SPCI_AVAIL_CAP_BYTES)
        return true;                                    /* the floor */
    return ((uint64_t)k->peak_pages << SHM_PAGE_SHIFT) <= SPCI_RETAIN_BYTES &&
           pages <= k->peak_pages &&
           (shm_load_relaxed(&spci_avail_pages) + npages) << SHM_PAGE_SHIFT <=
               SPCI_RETAIN_BYTES;
}

/* ---- giving spans back ---- */

/* Send the pending releases now (the pending array is full, or flushing). */
static void pending_send(spci_cache_t *c)
{
    if (c->npending == 0)
        return;
    pthread_mutex_lock(&spci_proc.lock);
    int rc = spci_rpc_release_locked(c->pending, c->npending);
    pthread_mutex_unlock(&spci_proc.lock);
    if (rc != 0)
        spci_log("release of %u spans failed: %s (the daemon takes them back when "
                 "this process detaches or exits)", c->npending, strerror(-rc));
    c->npending = 0;
}

/* Stop holding s (on no private list): from now on every free into it,
 * ours included, is a remote push; the daemon rebuilds the rest from the
 * bitmap.  It goes back with the next Refill or Release. */
static void give_back(spci_cache_t *c, shm_span_t *s)
{
    s->hstate = SPCI_H_NONE;
    shm_store_relaxed(&s->xowner, 0);
    if (c->npending == SPCI_PENDING_MAX)
        pending_send(c);
    c->pending[c->npending++] = shm_span_id(spci_map.base, s);
}

/* ---- the current span ---- */

static void make_current(spci_cache_t *c, unsigned cls, shm_span_t *s)
{
    spci_bin_t *b = &c->bins[cls];
    c->cls[cls].cur = s;
    b->start = shm_page_addr(spci_map.base, s->start);
    b->limit = cls == SHM_CLASS_TINY ? 0 : s->nelems * b->size;
    b->bitmap = (uint64_t *)(spci_map.bitmaps + (uint64_t)s->start * SHM_BITMAP_PAGE_BYTES);
    b->head = NULL;                     /* the last span's list and mask: empty */
    b->mask = 0;                        /* (it ran dry, or the bin is new) or */
    b->word = NULL;                     /* dropped (a full span replaces it at a
                                           free: their objects are free in its
                                           bitmap, spci_free_owned) */
    s->hstate = SPCI_H_CURRENT;
}

/* Take the first bitmap word of current span s with a free object, looking
 * from word `from` on and wrapping around.  Only with the list empty. */
static bool find_word(spci_bin_t *b, const shm_span_t *s, uint32_t from)
{
    uint32_t wi;
    if (!shm_span_free_word(spci_map.base, s, from, &wi, &b->mask))
        return false;
    b->word = &b->bitmap[wi];
    b->wbase = b->start + (uint64_t)wi * 64 * b->size;
    return true;
}

/* The current span's list and mask are empty: take the next bitmap word
 * with a free object, draining the remote-free stack first when there is
 * none.  True when the bin has objects again. */
static bool refresh_current(spci_cache_t *c, unsigned cls)
{
    spci_bin_t *b = &c->bins[cls];
    shm_span_t *s = c->cls[cls].cur;
    uint32_t cur = b->word ? (uint32_t)(b->word - b->bitmap) + 1 : 0;
    if (find_word(b, s, cur))
        return true;
    if (shm_load_relaxed(&s->xremote) == 0)
        return false;
    uint64_t bad = 0;
    if (shm_span_drain_remote(spci_map.base, s, &bad) < 0)
        spci_bogus_free("spc_free", spci_map.base + bad,
                        "double free detected (found on the remote-free stack "
                        "of a span being reused)");
    return find_word(b, s, cur);
}

/* The current span has nothing left: keep it on the full list, where a
 * local free (free.c) or a remote push makes it usable again. */
static void retire_current(spci_cache_t *c, unsigned cls)
{
    spci_bin_t *b = &c->bins[cls];
    shm_span_t *s = c->cls[cls].cur;
    c->cls[cls].cur = NULL;             /* its list and mask are empty: refresh found nothing */
    b->limit = 0;                       /* frees into it: the held-span path */
    s->hstate = SPCI_H_FULL;
    spci_slist_t *full = &c->cls[cls].full;
    slist_push_tail(full, s);
    if ((uint64_t)full->pages << SHM_PAGE_SHIFT > SPCI_FULL_CAP_BYTES) {
        /* the oldest goes back: frees into it become remote pushes */
        shm_span_t *old = slist_head(full);
        slist_remove(full, old);
        give_back(c, old);
    }
}

/* A span from the avail list, or a full one whose remote stack has objects
 * (a relaxed peek; at most SPCI_FULL_SCAN looked at, rotating). */
static bool take_held(spci_cache_t *c, unsigned cls)
{
    spci_class_t *k = &c->cls[cls];
    shm_span_t *s = slist_head(&k->avail);
    if (s != NULL) {
        avail_remove(k, s);
        make_current(c, cls, s);
        return true;
    }
    for (uint32_t n = 0; n < SPCI_FULL_SCAN && (s = slist_head(&k->full)) != NULL; n++) {
        slist_remove(&k->full, s);
        if (shm_load_relaxed(&s->xremote) != 0) {
            make_current(c, cls, s);
            return true;
        }
        slist_push_tail(&k->full, s);
    }
    return false;
}

/* Ask the daemon for a batch of spans of class cls.  0, or -1 and errno. */
static int refill(spci_cache_t *c, unsigned cls)
{
    spci_class_t *k = &c->cls[cls];
    const shm_class_t *sc = &shm_classes[cls];
    uint32_t span_bytes = sc->npages << SHM_PAGE_SHIFT;
    /* the daemon backs every page it hands out, so the unused rest of the
     * last batch is footprint: small objects get smaller batches */
    uint64_t max_bytes = (uint64_t)SPCI_BATCH_OBJECTS * sc->size;
    if (max_bytes < SPCI_BATCH_FLOOR_BYTES)
        max_bytes = SPCI_BATCH_FLOOR_BYTES;
    if (max_bytes > SPCI_BATCH_MAX_BYTES)
        max_bytes = SPCI_BATCH_MAX_BYTES;
    uint32_t max = (uint32_t)(max_bytes / span_bytes);
    if (max < 1)
        max = 1;
    if (max > SPCI_REFILL_MAX)
        max = SPCI_REFILL_MAX;
    if (k->batch == 0)
        k->batch = SPCI_BATCH_MIN_BYTES / span_bytes ? SPCI_BATCH_MIN_BYTES / span_bytes : 1;
    if (k->batch > max)
        k->batch = max;

    shm_spanid_t got[SPCI_REFILL_MAX];
    uint32_t n = 0;
    pthread_mutex_lock(&spci_proc.lock);
    int rc = spci_rpc_refill_locked(cls, k->batch, c->pending, c->npending, got,
                                    SPCI_REFILL_MAX, &n);
    pthread_mutex_unlock(&spci_proc.lock);
    /* the daemon takes the piggybacked spans back before it looks for new
     * ones, so they are gone even when no span came back; if the session
     * broke instead, the daemon takes them back with everything else */
    c->npending = 0;
    if (rc != 0) {
        errno = rc == -ENOMEM ? ENOMEM : (rc == -ENOTCONN || rc == -EPIPE ||
                                          rc == -ECONNRESET) ? ENOTCONN : -rc;
        return -1;
    }
    const shm_header_t *h = (const shm_header_t *)spci_map.base;
    uint32_t added = 0;
    for (uint32_t j = 0; j < n; j++) {
        shm_span_t *s = &spci_map.spans[got[j]];
        if (got[j] == 0 || got[j] > h->npages ||
            shm_load_acquire(&s->xstate) != SHM_SPAN_HELD || s->sizeclass != cls ||
            s->nelems != sc->nelems) {
            spci_log("Refill of class %u returned span %u, which is not a held span of "
                     "that class; ignored", cls, got[j]);
            continue;
        }
        shm_span_reset_holder(s);
        s->hstate = SPCI_H_AVAIL;
        shm_store_relaxed(&s->xowner, c->tid);
        avail_push(k, s);
        added++;
    }
    k->refills++;
    uint32_t held = k->avail.pages + k->full.pages +
                    (k->cur ? k->cur->npages : 0);
    if (held > k->peak_pages)
        k->peak_pages = held;
    if (k->batch < max)
        k->batch = k->batch * SPCI_BATCH_GROWTH < max ? k->batch * SPCI_BATCH_GROWTH : max;
    if (added == 0) {
        errno = EPROTO;
        return -1;
    }
    return 0;
}

void *spci_alloc_slow(spci_cache_t *c, unsigned cls)
{
    if (SPCI_UNLIKELY(c == &spci_empty_cache)) {
        c = spci_cache_create();
        return c ? spci_alloc_cls(c, cls) : NULL;
    }
    if (SPCI_UNLIKELY(!shm_load_acquire(&spci_attached)) && spci_ensure_attached() != 0) {
        errno = ENOTCONN;
        return NULL;
    }
    /* the bin's list and mask are empty here: the fast path came for that,
     * and a span made current here (take_held) starts with both empty */
    for (int refills = 0;;) {
        if (c->cls[cls].cur != NULL) {
            if (refresh_current(c, cls))
                return spci_alloc_cls(c, cls);
            retire_current(c, cls);
        }
        if (take_held(c, cls))
            continue;
        if (refills++ == 4) {       /* spans that the daemon said had room did not */
            spci_log("Refill of class %u brought no free object", cls);
            errno = ENOMEM;
            return NULL;
        }
        if (refill(c, cls) != 0)
            return NULL;
    }
}

/* ---- tiny blocks ----
 *
 * Count byte of a block (shm_tiny_count): top 2 bits the granule code, low
 * 6 bits the live count.  Bias scheme: the thread that starts a block stores
 * SPCI_TINY_BIAS | code << 6 before any allocation of it is visible; its own
 * allocations from the block are counted privately (pos); every free of a
 * piece, by anyone, is one fetch_sub(1) (acq_rel).  When the thread leaves
 * the block it does one fetch_sub(BIAS - k) for its k pieces.  While held the
 * count is >= BIAS - 16 > 0 (at most 16 pieces), so only the last party to
 * act, the one that sees the low bits reach 0, frees the 16-byte block. */

static void tiny_abandon(spci_cache_t *c, spci_tiny_t *t, unsigned code)
{
    uint8_t *blk = t->end - 16;
    uint32_t k = (uint32_t)(t->pos - blk) >> code;
    t->pos = t->end = NULL;
    shm_span_t *s = &spci_map.spans[shm_load_acquire(
        &spci_map.spanmap[(uint64_t)(blk - spci_map.base) >> SHM_PAGE_SHIFT])];
    uint32_t i = (uint32_t)((uint64_t)(blk - shm_page_addr(spci_map.base, s->start)) >> 4);
    uint8_t sub = (uint8_t)(SPCI_TINY_BIAS - k);
    uint8_t old = shm_fetch_sub_acq_rel(shm_tiny_count(spci_map.base, s, i), sub);
    if (((uint8_t)(old - sub) & SPCI_TINY_COUNT_MASK) == 0)
        spci_tiny_block_free(c, s, i);
}

void *spci_tiny_slow(spci_cache_t *c, unsigned code)
{
    if (SPCI_UNLIKELY(c == &spci_empty_cache)) {
        c = spci_cache_create();
        return c ? spci_alloc_tiny(c, 1u << code) : NULL;
    }
    if (SPCI_UNLIKELY(!shm_load_acquire(&spci_attached)) && spci_ensure_attached() != 0) {
        errno = ENOTCONN;
        return NULL;
    }
    spci_tiny_t *t = &c->tiny[code];
    if (t->end != NULL)
        tiny_abandon(c, t, code);
    uint8_t *blk = spci_alloc_cls(c, SHM_CLASS_TINY);
    if (blk == NULL)
        return NULL;
    shm_span_t *s = c->cls[SHM_CLASS_TINY].cur;     /* the block came from it */
    uint32_t i = (uint32_t)((uint64_t)(blk - c->bins[SHM_CLASS_TINY].start) >> 4);
    if (SPCI_UNLIKELY(shm_load_relaxed(&spci_exiting))) {
        /* one piece, the block not kept: nothing would abandon it later */
        shm_store_relaxed(shm_tiny_count(spci_map.base, s, i), (uint8_t)(1u | code << 6));
        return blk;
    }
    shm_store_relaxed(shm_tiny_count(spci_map.base, s, i),
                      (uint8_t)(SPCI_TINY_BIAS | code << 6));
    t->pos = blk + (1u << code);
    t->end = blk + 16;
    return blk;
}

/* ---- local frees into held spans ---- */

void spci_free_held(shm_span_t *s, uint32_t i)
{
    spci_free_owned(spci_tls.tc, s, i);
}

/* Span s, on no list now, goes on the avail list of its class (k) while
 * retention allows (avail_keep), else back to the daemon. */
static void keep_avail(spci_cache_t *c, spci_class_t *k, shm_span_t *s)
{
    if (!avail_keep(k, s->npages)) {
        give_back(c, s);
        return;
    }
    s->hstate = SPCI_H_AVAIL;
    avail_push(k, s);
}

void spci_free_owned(spci_cache_t *c, shm_span_t *s, uint32_t i)
{
    unsigned cls = s->sizeclass;
    spci_class_t *k = &c->cls[cls];
    shm_bit_clear(shm_span_bitmap(spci_map.base, s), i);
    if (k->cur != s) {
        if (s->hstate != SPCI_H_FULL)
            return;                     /* avail: the bit alone */
        slist_remove(&k->full, s);      /* a full span became usable */
        if (shm_classes[cls].size > SPCI_PROMOTE_MAX) {
            keep_avail(c, k, s);
            return;
        }
        /* of a small class, it becomes the current span, so that the frees
         * that follow into it (objects allocated together are often freed
         * together) take the list path, and the next allocations reuse its
         * lines while they are warm; the current span goes to the avail
         * list with the objects on its list and mask free in its bitmap */
        if (k->cur != NULL)
            keep_avail(c, k, k->cur);
        make_current(c, cls, s);
    }
    spci_bin_t *b = &c->bins[cls];      /* the current span: onto its list */
    void *obj = b->start + (uint64_t)i * b->size;
    *(void **)obj = b->head;
    b->head = obj;
}

/* ---- flushing a whole cache ---- */

void spci_cache_hand_on(spci_cache_t *c)
{
    for (unsigned code = 0; code < 4; code++)
        if (c->tiny[code].end != NULL)
            tiny_abandon(c, &c->tiny[code], code);
    spci_rfree_flush(c);
}

static void release_add(shm_spanid_t *ids, uint32_t *n, shm_span_t *s)
{
    s->hstate = SPCI_H_NONE;
    s->hnext = s->hprev = 0;
    shm_store_relaxed(&s->xowner, 0);
    ids[(*n)++] = shm_span_id(spci_map.base, s);
    if (*n == SPCI_RELEASE_CHUNK) {
        int rc = spci_rpc_release_locked(ids, *n);
        if (rc != 0)
            spci_log("release of %u spans failed: %s", *n, strerror(-rc));
        *n = 0;
    }
}

void spci_cache_flush_locked(spci_cache_t *c, bool session)
{
    /* with a session the tiny blocks are given up too; waiting remote frees
     * are pushes into the arena, no daemon needed: they go out whenever it
     * is mapped (the holder may be another process) */
    if (session && spci_map.base != NULL)
        spci_cache_hand_on(c);
    else if (spci_map.base != NULL)
        spci_rfree_flush(c);
    memset(c->rfree, 0, sizeof c->rfree);
    spci_lcache_flush(c);
    if (session && spci_map.base != NULL) {
        static shm_spanid_t ids[SPCI_RELEASE_CHUNK];   /* under spci_proc.lock */
        uint32_t n = 0;
        for (unsigned cls = 1; cls < SHM_NCLASSES; cls++) {
            spci_class_t *k = &c->cls[cls];
            if (k->cur != NULL)
                release_add(ids, &n, k->cur);
            shm_span_t *s;
            while ((s = slist_head(&k->avail)) != NULL) {
                avail_remove(k, s);
                release_add(ids, &n, s);
            }
            while ((s = slist_head(&k->full)) != NULL) {
                slist_remove(&k->full, s);
                release_add(ids, &n, s);
            }
        }
        for (uint32_t j = 0; j < c->npending; j++) {
            ids[n++] = c->pending[j];
            if (n == SPCI_RELEASE_CHUNK) {
                spci_rpc_release_locked(ids, n);
                n = 0;
            }
        }
        if (n > 0) {
            int rc = spci_rpc_release_locked(ids, n);
            if (rc != 0)
                spci_log("release of %u spans failed: %s", n, strerror(-rc));
        }
    }
    for (unsigned cls = 1; cls < SHM_NCLASSES; cls++)   /* forgotten (fork child) */
        shm_fetch_add_relaxed(&spci_avail_pages, -(uint64_t)c->cls[cls].avail.pages);
    memset(c->tiny, 0, sizeof c->tiny);
    spci_cache_init_bins(c);
    memset(c->cls, 0, sizeof c->cls);
    c->npending = 0;
}

/* See shm/layout.h for the overview.
 *
 * Operations on one span that the daemon and the clients share: cutting a
 * span into objects, the alloc bitmap, the remote-free stack and the tiny
 * blocks' live counts.  Who may call what is the rule of layout.h: the
 * bitmap and the h* fields belong to the holder; remote pushes and
 * tiny-count decrements to anyone.
 */
#ifndef SHM_SPAN_H
#define SHM_SPAN_H

#include <stdbool.h>
#include <stdint.h>

#include "shm/atomic.h"
#include "shm/layout.h"

/* Why a pointer is not a live object, for the messages of a bogus free. */
typedef enum shm_bad_e {
    SHM_PTR_OK = 0,
    SHM_PTR_OUTSIDE,       /* not inside the arena's object pages */
    SHM_PTR_NO_SPAN,       /* inside, but on a page no allocated span covers */
    SHM_PTR_NOT_START,     /* not at the start of an object */
    SHM_PTR_NOT_ALLOCATED, /* the object is free already (double free) */
} shm_bad_t;

const char *shm_bad_str(shm_bad_t why);

/* First byte of a span's pages. */
static inline uint8_t *shm_span_addr(uint8_t *base, const shm_span_t *s)
{
    return shm_page_addr(base, s->start);
}

static inline uint64_t *shm_span_bitmap(uint8_t *base, const shm_span_t *s)
{
    return shm_bitmap(base, s->start);
}

/* off * divmul for byte offset `off` inside a small span of class `cls`:
 * its high half is the object's index (shm_obj_index), its low half says
 * whether off starts that object (shm_obj_starts). */
static inline uint64_t shm_obj_prod(unsigned cls, uint64_t off)
{
    return off * shm_classes[cls].divmul;
}

/* Object index of byte offset `off` inside a small span of class `cls`. */
static inline uint32_t shm_obj_index(unsigned cls, uint64_t off)
{
    return (uint32_t)(shm_obj_prod(cls, off) >> 32);
}

/* Whether byte offset `off` (inside an object of the span: off < nelems *
 * size) starts an object, given prod = off * divmul, whose high half is the
 * object's index (shm_obj_index).  With off = q * size + r and e = size *
 * divmul - 2^32 (0 <= e < size), prod = (q << 32) + q * e + r * divmul: its
 * low half is q * e when r == 0, below divmul for every object q of a span
 * (tools/mksizeclasses.py checks it for every class), and at least divmul
 * when r > 0.  One compare where i * size == off would take a load of the
 * size and a multiply. */
static inline bool shm_obj_starts(uint64_t prod, uint32_t divmul)
{
    return (uint32_t)prod < divmul;
}

/* ---- the alloc bitmap: the holder writes, anyone may peek ---- */

static inline bool shm_bit_test(const uint64_t *bm, uint32_t i)
{
    return (shm_word_load(&bm[i >> 6]) >> (i & 63)) & 1;
}

static inline void shm_bit_set(uint64_t *bm, uint32_t i)   /* holder only */
{
    shm_word_store(&bm[i >> 6], bm[i >> 6] | (1ULL << (i & 63)));
}

static inline void shm_bit_clear(uint64_t *bm, uint32_t i) /* holder only */
{
    shm_word_store(&bm[i >> 6], bm[i >> 6] & ~(1ULL << (i & 63)));
}

/* The bits of objects j .. stop - 1 that lie in bitmap word j >> 6: its
 * mask in that word, and in *k how many (up to the word's end).  Runs of
 * consecutive objects are tested and cleared a word at a time with it. */
static inline uint64_t shm_run_word(uint32_t j, uint32_t stop, uint32_t *k)
{
    uint32_t b = j & 63;
    *k = stop - j < 64 - b ? stop - j : 64 - b;
    return (*k == 64 ? ~0ull : (1ull << *k) - 1) << b;
}

/* Are the bits of objects lo .. lo + n - 1 all set?  One load a word. */
static inline bool shm_bits_all_set(const uint64_t *bm, uint32_t lo, uint32_t n)
{
    for (uint32_t j = lo, k, end = lo + n; j < end; j += k) {
        uint64_t m = shm_run_word(j, end, &k);
        if ((shm_word_load(&bm[j >> 6]) & m) != m)
            return false;
    }
    return true;
}

/* ---- lookups: any process ---- */

/* The span whose pages hold `p`, or NULL.  Lock-free: the span map entry is
 * loaded with acquire and the state checked before anything else is read. */
shm_span_t *shm_span_of(uint8_t *base, const void *p);

/* Check that `p` is a live small object or the start of a large one.  On
 * success returns SHM_PTR_OK with *span set and, for a small span, *index
 * the object's index.  The checks of a free, done before any write. */
shm_bad_t shm_ptr_check(uint8_t *base, const void *p, shm_span_t **span, uint32_t *index);

/* shm_ptr_check without the alloc bit: p is the start of an object of a
 * small span (or of a large one), live or not.  For a free that tests the
 * bit later (a remote free tests it when its batch is pushed). */
shm_bad_t shm_ptr_locate(uint8_t *base, const void *p, shm_span_t **span, uint32_t *index);

/* ---- whole-span operations: the holder ---- */

/* Turn a span fresh from the heap into a small span of class `cls`: mark its
 * pages in the class map, clear its bitmap, mark the reserved objects
 * allocated, zero the tiny counts, empty the remote-free stack and forget
 * the holder's fields.  The daemon calls it before the span is published. */
void shm_span_cut(uint8_t *base, shm_span_t *s, unsigned cls);

/* Objects allocated according to the bitmap (reserved ones included). */
uint32_t shm_span_count(uint8_t *base, const shm_span_t *s);

/* Forget the holder's fields (hstate, hnext, hprev), so the next holder
 * starts from the bitmap alone.  Called when a span changes hands. */
void shm_span_reset_holder(shm_span_t *s);

/* The holder: the first word of the span's bitmap with a free object,
 * looking from word `from` on and wrapping around once: its index in *wi
 * and its free objects in *mask (set bits; none past the span's last
 * object).  False when every object is allocated.  A thread cache takes
 * its objects this way, a word at a time (client/cache.h). */
bool shm_span_free_word(uint8_t *base, const shm_span_t *s, uint32_t from, uint32_t *wi,
                        uint64_t *mask);

/* ---- the remote-free stack ---- */

/* The stack holds records.  A record is a freed object of the span whose
 * first 8 bytes are its header:
 *     bits 0..47   offset of the next record, 0 for the last
 *     bits 48..55  e: how many uint16_t entries follow the header
 *     bits 56..63  0
 * The record frees itself, then what its entries say, in order: an entry
 * with bit 15 clear is the index of one more object; an entry with bit 15
 * set is a run, the (entry & 0x7fff) objects right after the previous one
 * (the record itself before the first entry).  A record of class cls holds
 * up to shm_remote_entries(cls) entries, so an object pushed alone (e = 0)
 * is a record too.  Objects freed in address order (a queue's consumer
 * frees in the order the producer allocated) make one run: one record for
 * a whole batch.  The holder reads one header and one entry run per record
 * instead of chasing one link per object, and the freer writes nothing
 * into the objects but the first of each record (the other objects' lines
 * stay in the cache of the core that will reuse them). */
#define SHM_REMOTE_ENTRIES_MAX 31u                 /* entries a record holds, at most */
#define SHM_REMOTE_RUN         0x8000u             /* entry: a run of (e & 0x7fff) */
#define SHM_REMOTE_OFF_MASK    ((1ull << 48) - 1)  /* arena offsets are < 2^40 */
#define SHM_REMOTE_ENTRIES(hdr) ((uint32_t)((hdr) >> 48) & 0xffu)

static inline uint32_t shm_remote_entries(unsigned cls)
{
    uint32_t e = (shm_classes[cls].size - 8) / 2;
    return e < SHM_REMOTE_ENTRIES_MAX ? e : SHM_REMOTE_ENTRIES_MAX;
}

/* Objects the record at `rec` frees (read-only, for walks that only
 * count: tests, diagnostics). */
static inline uint32_t shm_remote_record_count(const uint8_t *rec)
{
    uint64_t hdr = *(const uint64_t *)rec;
    const uint16_t *e = (const uint16_t *)(rec + 8);
    uint32_t n = 1;
    for (uint32_t k = 0; k < SHM_REMOTE_ENTRIES(hdr); k++)
        n += e[k] & SHM_REMOTE_RUN ? e[k] & ~SHM_REMOTE_RUN : 1;
    return n;
}

/* Anyone: link a chain of records, built privately, onto span `s`'s
 * stack: its first record at arena offset `head`, its last one's header
 * at `tail` (its entry count in `tail_bits`), which gets the old head.
 * One CAS (release), retried only when another push won the race.
 * Push-only with take-all is ABA-free: a push needs nothing of the old
 * head but its value at the moment of the CAS.  Every push goes through
 * here. */
static inline void shm_remote_link(shm_span_t *s, uint64_t head, uint64_t *tail,
                                   uint64_t tail_bits)
{
    uint64_t old = shm_load_relaxed(&s->xremote);
    do {
        *tail = old | tail_bits;
    } while (!shm_cas_weak_release(&s->xremote, &old, head));
}

/* Anyone: push object `p` of span `s` alone (a record with no entries). */
static inline void shm_remote_push(uint8_t *base, shm_span_t *s, void *p)
{
    shm_remote_link(s, (uint64_t)((uint8_t *)p - base), (uint64_t *)p, 0);
}

/* Anyone: push objects idx[0..n) of span `s` (checked allocated by the
 * caller; n = 0 pushes nothing), as records chained privately (runs of consecutive
 * indices as run entries), with one CAS (release) for them all. */
void shm_remote_push_batch(uint8_t *base, shm_span_t *s, const uint16_t *idx, uint32_t n);

/* Anyone: test that objects idx[0..n) (n >= 1) of span `s` are allocated,
 * then push them as shm_remote_push_batch does.  Returns n when they were
 * pushed, else the position k of the first idx[k] whose bit is clear (a
 * double free), and nothing is pushed.  A batch of consecutive objects,
 * each right after the one before (what a queue's consumer frees), is
 * tested a bitmap word at a time and pushed as one record with one run
 * entry, with no walk over its indices. */
uint32_t shm_remote_push_checked(uint8_t *base, shm_span_t *s, const uint16_t *idx, uint32_t n);

/* The holder: take every record on the remote stack (one exchange,
 * acquire) and clear the bits of the objects they free.  Returns the number freed, or -1 when a
 * record is not an allocated object of this span, has a bad header (more
 * entries than its class holds, high bits set), or names an object that is
 * not allocated or past the span (a double or bogus free); then *bad_off is
 * that object's offset (the record's, when the index is past the span) and
 * the rest of the stack is dropped.  Each object freed clears a bit, and
 * one seen again fails the test, so the walk ends even on a corrupt
 * stack. */
int shm_span_drain_remote(uint8_t *base, shm_span_t *s, uint64_t *bad_off);

/* ---- tiny blocks ---- */

/* Live-count byte of tiny block `i` of a tiny-class span (client/cache.c).
 * Top 2 bits: the granule code of the block's pieces (1 << code bytes),
 * written once, relaxed, by the thread that starts the block, before any
 * piece is handed out.  Low 6 bits: the live count, biased by 32 while that
 * thread carves the block.  Anyone freeing a piece: fetch_sub(1), acq_rel;
 * the carving thread leaving the block: one fetch_sub(32 - pieces), acq_rel.
 * Whoever takes the low bits to 0 frees the 16-byte block as an object. */
static inline _Atomic uint8_t *shm_tiny_count(uint8_t *base, const shm_span_t *s, uint32_t i)
{
    return (_Atomic uint8_t *)shm_span_addr(base, s) + i;
}

#endif /* SHM_SPAN_H */

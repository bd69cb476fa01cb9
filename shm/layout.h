/* spand: the shared arena and everything in it.
 *
 * Overview
 * ========
 * spand is a memory-pool server for one host.  The daemon owns one POSIX
 * shared-memory object, the arena, and every attached process maps all of it
 * at the same virtual address (hdr->base), so a pointer into the arena means
 * the same object in every process.  The allocator inside is the Go runtime's
 * (itself from TCMalloc), split across processes:
 *
 *   page heap (daemon)  free spans of 8 KiB pages; exact lists for 1..127
 *                       pages, a treap ordered by (npages, start) above;
 *                       take = exact, then best fit, then grow; free merges
 *                       with both free neighbours.        daemon/heap.c
 *   central (daemon)    per size class, spans with free objects that no
 *                       client holds (partial) and spans that were full when
 *                       last seen (full).                   daemon/central.c
 *   thread cache        per thread of a client, a current span per class;
 *   (client)            allocation pops its free list and sets a bit: no
 *                       lock, no atomic, no system call.   client/cache.h
 *   span map            one entry per page: the span descriptor of that page;
 *                       any process finds the span of a pointer with a shift
 *                       and a load.
 *   alloc bitmap        one bit per object of every small span, in the
 *                       arena: the truth about which objects are live.  Free
 *                       lists are only a private index into it, so the daemon
 *                       can take back a span from a dead client by reading
 *                       the bitmap alone.
 *   remote-free stack   per span: any process pushes objects it frees into
 *                       a span that it does not hold (one CAS per batch of
 *                       up to 64, fewer where 64 objects would be over 512
 *                       KiB, as records: a freed object holding the
 *                       indices of others, shm/span.h); the holder takes
 *                       the whole stack with one exchange.
 *   fixed allocator     span descriptors come from a fixed-size pool in the
 *                       metadata region, never from object pages.
 *   large pool          freed large spans of 5..128 pages, one lock-free
 *   (any process)       stack per page count in the header: a client frees
 *                       and allocates them without a round trip; the daemon
 *                       drains idle buckets back to the heap.  shm/lpool.h
 *   scavenger (daemon)  free spans idle for a while give their pages back
 *                       with fallocate(PUNCH_HOLE).
 *
 * Everything the daemon needs to go on after a restart (heap, central,
 * sessions, every span's state) lives here in the arena, never only in the
 * daemon's private memory.
 *
 * Who writes what (DESIGN.md section 2)
 * -------------------------------------
 * The daemon alone changes the heap, central, the span map and the sessions;
 * the holder of a span (one thread of one client, or the daemon while the span
 * is in central or free) alone changes its bitmap and its holder fields;
 * anyone may push onto any span's remote-free stack and decrement a tiny
 * block's live count; anyone may push a large span it frees onto the large
 * pool and pop one from it (the tag in xowner says who has it).  A span changes hands only through the socket (a Refill
 * answer, a Release request), which orders everything written before it.
 * Each field below says who writes it and with which memory order.
 *
 * Layout of the arena (offsets from the base; each region page aligned)
 * ---------------------------------------------------------------------
 *   [0, spanmap_off)          shm_header_t: identity, class table, heap,
 *                             span allocator, central, stats, sessions,
 *                             the large pool
 *   [spanmap_off, classmap_off) span map: one uint32 span id per page of
 *                             the whole arena (metadata pages map to 0)
 *   [classmap_off, bitmap_off) class map: one byte per page, the size class
 *                             of the small span the page was last cut into
 *                             (0 never), for the fast free (client/cache.h)
 *   [bitmap_off, spans_off)   alloc bitmaps: 128 bytes (1024 bits) per page;
 *                             a span's bitmap starts at its first page's slot,
 *                             so it never needs allocating
 *   [spans_off, data_off)     span descriptors, 128 bytes each, id 0 unused
 *   [data_off, arena_size)    object pages, handed out by the page heap
 *
 * The whole range is reserved by ftruncate (tmpfs keeps it sparse) and mapped
 * once; the daemon backs pages with fallocate before it hands them out (the
 * heap grows in steps of at least SHM_GROW_MIN_PAGES, backing the span-map,
 * class-map and bitmap slots that describe them; data pages are backed as
 * they are taken), so a full /dev/shm shows up as ENOMEM at the caller,
 * never as SIGBUS.
 *
 * Invariants (checked by spd_heap_verify, daemon/verify.c)
 * -------------------------------------------------------
 *   - every page of [first_page, end_page) belongs to exactly one span;
 *   - classmap[p] == sizeclass for every page p of a CENTRAL or HELD span
 *     (other pages keep what the last cut wrote: the map is a hint to its
 *     readers, who never trust it, see client/cache.h);
 *   - spanmap[p] == id for every page p of an in-use span (CENTRAL, HELD,
 *     LARGE); for a FREE span only its first and last page map to it and its
 *     interior maps to 0; pages outside the heap map to 0;
 *   - no two FREE spans are adjacent;
 *   - heap.free_pages == sum of npages over FREE spans, and
 *     free + in-use pages == end_page - first_page;
 *   - a FREE span of n < 128 pages is on free_head[n], of n >= 128 in the
 *     treap; nothing else is on those;
 *   - for a small span: nreserved <= popcount(bitmap) <= nelems, and no bit
 *     at or above nelems is set;
 *   - a span is on exactly one daemon list: its heap list (FREE), its class's
 *     central list (CENTRAL) or its session's list (HELD); LARGE spans are on
 *     none;
 *   - a LARGE span's xowner is 0, SHM_LARGE_POOLED, SHM_LARGE_RETURNING or
 *     SHM_LARGE_CACHED;
 *     with no session open, every POOLED span is on its page count's
 *     large-pool bucket once, and lpool.xpages is their pages.
 */
#ifndef SHM_LAYOUT_H
#define SHM_LAYOUT_H

#include <stddef.h>
#include <stdint.h>

#include "shm/sizeclasses.h"

#define SHM_MAGIC           0x314e4144444e5053ULL  /* "SPNDDAN1" little-endian */
#define SHM_LAYOUT_VERSION  9u   /* 2: the large pool in the header; 3: remote-free
                                    records, large-pool batches; 4: 128-byte
                                    span descriptors; 5: xcut; 6: xlarge;
                                    7: the pool's hint in the descriptor;
                                    8: no holder free list (hscan, hcount,
                                    hfree): the bitmap alone says what is free;
                                    9: the class map */

#define SHM_PAGE_SHIFT      13
#define SHM_PAGE_SIZE       (1u << SHM_PAGE_SHIFT)          /* 8 KiB */
#define SHM_BITMAP_PAGE_BYTES 128u                          /* 1024 bits a page */
#define SHM_HEAP_NLISTS     128u     /* exact free lists for 1..127 pages */
#define SHM_GROW_MIN_PAGES  128u     /* grow the heap by >= 1 MiB at a time */
#define SHM_MAX_SESSIONS    4096u    /* clients attached at once */

#define SHM_DEFAULT_BASE        0x200000000000ULL
#define SHM_DEFAULT_ARENA_SIZE  (4ULL << 30)
#define SHM_MIN_ARENA_SIZE      (16ULL << 20)
#define SHM_MAX_ARENA_SIZE      (1ULL << 40)   /* 2^27 pages: ids fit in 32 bits */

typedef uint64_t shm_off_t;     /* byte offset from the arena base; 0 = none */
typedef uint32_t shm_spanid_t;  /* index of a span descriptor; 0 = none */

/* Span states.  Written by the daemon with store_release after every other
 * descriptor field is valid; read with load_acquire before trusting them. */
enum {
    SHM_SPAN_DEAD    = 0,  /* descriptor unused (on the fixed allocator's list) */
    SHM_SPAN_FREE    = 1,  /* pages in the heap */
    SHM_SPAN_CENTRAL = 2,  /* small span in central; the daemon holds it */
    SHM_SPAN_HELD    = 3,  /* small span held by a client session */
    SHM_SPAN_LARGE   = 4,  /* one large object: allocated, or in the large
                              pool, as its xowner tag says (below) */
};

/* The large-object tag of a LARGE span, kept in xowner (unused as a holder
 * field: nobody holds a large span).  Values no thread id can take.
 *   0                    allocated: in a user's hands
 *   SHM_LARGE_POOLED     on a large-pool bucket, or being pushed or popped
 *   SHM_LARGE_RETURNING  a client claimed it to send FreeLarge
 *   SHM_LARGE_CACHED     freed into a client thread's cache of large spans
 *                        (client/cache.h), kept for that thread's next
 *                        allocation of its size; xlarge holds the caching
 *                        session's id (stored relaxed by that thread after
 *                        its CAS), so that the daemon frees the span when the
 *                        session ends with it still cached (a process killed)
 * Transitions, each by whoever does it, all on xowner:
 *   0 -> POOLED          a freeing client: CAS acq_rel, after reserving
 *                        capacity in lpool.xpages; then it pushes the span
 *   0 -> RETURNING       a freeing client that takes the RPC path: CAS acq_rel
 *   0 -> CACHED          a freeing client thread with room in its cache: CAS
 *                        acq_rel
 *   (new) -> CACHED      the daemon, for each extra span an AllocLarge asks
 *                        for (the caller's session in xlarge, then the tag
 *                        with store_release), before it answers: the caller
 *                        puts them in its thread's cache
 *   CACHED -> 0          that thread, allocating it again, or before it frees
 *                        it on to the pool or the daemon (thread exit,
 *                        detach): store_release
 *   CACHED -> POOLED     that thread, pushing its cached spans of one size
 *                        as a batch: store_release, after reserving their
 *                        capacity, before its push
 *   CACHED -> RETURNING  the daemon closing the session named in xlarge
 *                        (CAS), then FreeLarge's path
 *   POOLED -> 0          the client that popped it (store_release, after the
 *                        pop's CAS)
 *   POOLED -> CACHED     the client that popped its batch, for the spans it
 *                        keeps in its thread's cache: xlarge (its session)
 *                        stored relaxed, then the tag with store_release
 *   POOLED -> RETURNING  the daemon draining a bucket (store_release: the
 *                        chain is its own), then FreeLarge's path
 *   0, RETURNING -> RETURNING  the daemon's FreeLarge claims it (CAS), then
 *                        gives the pages back to the heap (xowner 0, FREE)
 * A failed 0 -> x CAS is a double free: the object is not in a user's hands. */
#define SHM_LARGE_POOLED     0xfffffff1u
#define SHM_LARGE_RETURNING  0xfffffff2u
#define SHM_LARGE_CACHED     0xfffffff3u

/* The large pool: freed LARGE spans of SHM_LPOOL_MIN_PAGES (just over
 * SHM_MAX_SMALL) to SHM_LPOOL_MAX_PAGES (1 MiB) pages, kept for reuse by
 * any process without a round trip.  See shm/lpool.h. */
#define SHM_LPOOL_MIN_PAGES  5u
#define SHM_LPOOL_MAX_PAGES  128u
#define SHM_LPOOL_NBUCKETS   (SHM_LPOOL_MAX_PAGES - SHM_LPOOL_MIN_PAGES + 1)

/* Span flags: the first two of a FREE span, for the scavenger; the last of a
 * CENTRAL span that central quarantined. */
enum {
    SHM_SPAN_UNBACKED_ALL  = 1u << 0,  /* FREE: every page was punched out */
    SHM_SPAN_UNBACKED_SOME = 1u << 1,  /* FREE: some pages may be punched out */
    SHM_SPAN_CORRUPT       = 1u << 2,  /* CENTRAL: its remote stack held a bogus
                                          node; kept on the full list for good */
};

/* A run of pages.  128 bytes, two cache lines:
 *   line 0  identity, daemon lists, xowner and xlarge: written when the
 *           span changes hands (xowner by the holder as the span reaches
 *           it and as it gives it back; for a LARGE span, the tag and
 *           xlarge as the object moves between users, caches and the pool)
 *           and by the daemon's list operations; read by every free into
 *           the span but the fast free into the freeing thread's current
 *           span (client/cache.h), so it stays in every freer's cache while
 *           a client holds the span;
 *   line 1  the holder's fields and the remote-free stack: written by the
 *           holder as it drains (the exchange of xremote) and as it moves
 *           the span between its private lists, and by freers once a batch
 *           (until layout 8 also by the holder as it allocated).
 * With both on one line every drain of the holder took the line away from
 * the freers, and their next free into the span missed on it.
 *
 * Publication: the daemon fills every field, THEN stores xstate with
 * release; a reader loads xstate with acquire before trusting the rest.
 * Identity fields are immutable while the span is HELD or LARGE.
 *
 * Holder fields are written only by whoever holds the span now: a client
 * thread while HELD, the daemon while CENTRAL.  They mean nothing to anyone
 * else, and the daemon never trusts them: when it takes a span back it
 * rebuilds what it needs from the alloc bitmap.
 *
 * For a small span, object i lives at page_addr(start) + i * size(class);
 * objects [0, nreserved) are never handed out (in the tiny class they hold
 * one live-count byte per block).
 *
 * A clear bit is a free object, whoever holds the span.  The holder keeps
 * no list of them in the span: a thread cache hands them out straight from
 * the bitmap, and only the span it allocates from now keeps a private list
 * of the objects the thread itself freed into it (client/cache.h).
 */
typedef struct shm_span_s {
    /* ---- line 0 ---- */
    /* identity: daemon, while no client holds the span; plain stores, seen
     * by others through the release store of xstate (Publication, above) */
    uint32_t start;          /* daemon, plain: first page, counted from the
                                arena base */
    uint32_t npages;         /* daemon, plain: pages in the span, >= 1 */
    uint8_t  sizeclass;      /* daemon, plain (shm_span_cut, span_clear):
                                1..SHM_NCLASSES-1 for small spans, else 0 */
    _Atomic uint8_t xstate;  /* SHM_SPAN_*; daemon store_release, anyone load_acquire */
    uint8_t  flags;          /* daemon, plain: SHM_SPAN_UNBACKED_* while FREE,
                                SHM_SPAN_CORRUPT while CENTRAL */
    uint8_t  pad0;
    uint32_t nelems;         /* daemon, plain (shm_span_cut): objects in a
                                small span */

    /* daemon lists: one at a time, by state (see the invariants above) */
    shm_spanid_t next;       /* daemon, plain: heap exact list, central list,
                                session list, the span allocator's DEAD list */
    shm_spanid_t prev;       /* daemon, plain: same list, backwards */
    union {
        uint32_t session;    /* daemon, plain; HELD: holding session slot + 1 */
        uint32_t free_since; /* daemon, plain; FREE: when it went free, in
                                spd_now() ticks (monotonic, 1/16 s) */
    };
    shm_spanid_t left, right; /* daemon, plain; FREE with npages >= 128: treap
                                 children */

    _Atomic uint32_t xowner; /* small span: tid of the holding thread, 0 if
                                none; every store relaxed.  The holder stores
                                its tid when a Refill hands it the span and 0
                                when it gives the span back (client/cache.c);
                                the daemon stores 0 when it cuts a span,
                                clears a descriptor or takes a span back
                                (shm_span_cut, span_clear, central's
                                span_unhold).  A freer loads it relaxed and
                                compares it with its own tid only (only the
                                holder can see its own tid there).
                                LARGE: the large-object tag, SHM_LARGE_*
                                above, whose transitions name each writer
                                and order: CAS acq_rel by a freer (from 0)
                                and by the daemon (FreeLarge; CACHED ->
                                RETURNING at a session's end); store_release
                                by a popper, by the thread whose cache keeps
                                the span, and by the daemon (CACHED for
                                AllocLarge's extra spans, RETURNING in a
                                bucket's drain) */
    _Atomic uint32_t xcut;   /* daemon: bumped (store relaxed) whenever the
                                span's shape may change: at each cut into a
                                class (shm_span_cut) and each time the
                                descriptor is cleared (taken from or given
                                back to the heap); never reset.  A freer
                                that keeps a span's shape between frees
                                (client/free.c, its batch slots) loads it
                                relaxed to tell the span it opened the batch
                                for from a later one on the same descriptor */
    uint8_t  pad1[4];
    _Atomic uint64_t xlarge; /* LARGE only, on the line of the tag, so that a
                                large object's trip through a thread cache
                                and the pool moves one line, not two.
                                CACHED: the caching session, stored relaxed:
                                by the freer after its tag CAS, by a popper
                                and by the daemon before the tag's
                                store_release (shm_lpool_mark_cached).
                                POOLED: the large-pool links, the next span
                                of its batch (low 32 bits) and, on a batch's
                                first span, the first span of the next batch
                                (high 32 bits), 0 last.  The pusher stores
                                it relaxed before its CAS release of the
                                head; a popper loads it relaxed after its
                                acquire load of the head (a stale value
                                fails the CAS: the head's generation moved).
                                0 otherwise, stored relaxed: by a popper for
                                the span it hands out, by the thread that
                                takes a span out of its cache
                                (spci_uncache_large), by the daemon
                                (span_clear, a bucket's drain,
                                spd_heap_cached_large) */
    uint8_t  pad1b[8];

    /* ---- line 1 ---- */
    union {
        struct {
            /* holder: the client's own span lists; plain stores by the
             * holding thread (client/cache.c), reset (plain) by the daemon
             * when it cuts, clears or takes back the span */
            shm_spanid_t hnext, hprev; /* holder, plain; HELD: the client's own span lists */
            uint8_t  hstate;         /* holder, plain: which private list the span is on */
            uint8_t  pad2[15];
            _Atomic uint64_t xremote; /* remote-free stack: offset of the first
                                         record, 0 empty; a record's first 8 bytes
                                         hold the next record's offset and its
                                         entries (shm/span.h).  Anyone pushes: CAS
                                         release (the records written before it).
                                         The holder takes all: exchange acquire.
                                         The daemon resets it to 0 (store relaxed)
                                         when it cuts a span or clears a
                                         descriptor (shm_span_cut, span_clear).
                                         Small spans only (LARGE: xlarge). */
            uint8_t  pad3[24];
        };
        /* LARGE and POOLED, on the first span of a batch of more than one:
         * the batch's span ids in order, 0 after the last (shm/lpool.h,
         * the hint).  The pusher stores them relaxed before its CAS release
         * of the head; a popper loads them relaxed after its CAS, and only
         * to prefetch: the links in xlarge are the truth.  Left as it
         * is otherwise: whoever uses the line next sets what it reads
         * (the daemon's span_clear when the span enters or leaves the
         * heap, shm_span_cut when it becomes a small span). */
        _Atomic uint32_t xhint[16];
    };
} __attribute__((aligned(64))) shm_span_t;
_Static_assert(sizeof(shm_span_t) == 128, "shm ABI: bump SHM_LAYOUT_VERSION");
_Static_assert(offsetof(shm_span_t, hnext) == 64, "holder fields start line 1");

/* The page heap.  Daemon only (its one thread, plain stores); clients never
 * read it. */
typedef struct shm_heap_s {
    shm_spanid_t free_head[SHM_HEAP_NLISTS]; /* daemon, plain: [n]: FREE spans of n
                                                pages; [0] unused */
    shm_spanid_t treap_root;   /* daemon, plain: FREE spans of >= 128 pages, by
                                  (npages, start) */
    uint32_t first_page;       /* daemon, plain, at init: first page the heap may
                                  use (data_off / page) */
    uint32_t end_page;         /* daemon, plain: the heap has grown up to here
                                  (exclusive) */
    uint32_t limit_page;       /* daemon, plain, at init: end of the reservation
                                  (arena_size / page) */
    uint64_t free_pages;       /* daemon, plain: pages in FREE spans */
    uint64_t unbacked_pages;   /* daemon, plain: pages in FREE spans with
                                  SHM_SPAN_UNBACKED_ALL */
} shm_heap_t;

/* Fixed-size allocator of span descriptors (the Go runtime's FixAlloc).
 * Daemon only (plain stores). */
typedef struct shm_fixalloc_s {
    shm_spanid_t free_head;  /* daemon, plain: recycled DEAD descriptors, linked
                                through next */
    uint32_t hwm;            /* daemon, plain: ids [1, hwm) have been handed out
                                at least once */
    uint32_t max;            /* daemon, plain, at init: capacity: ids [1, max) */
    uint32_t backed;         /* daemon, plain: descriptors [0, backed) are backed */
    uint32_t inuse;          /* daemon, plain: descriptors not DEAD */
    uint32_t pad;
} shm_fixalloc_t;

/* Central list of one size class.  Daemon only (plain stores). */
typedef struct shm_central_s {
    shm_spanid_t partial;    /* daemon, plain: CENTRAL spans with free objects
                                (next/prev) */
    shm_spanid_t full;       /* daemon, plain: CENTRAL spans full when last
                                looked at */
    uint32_t npartial;       /* daemon, plain: spans on partial */
    uint32_t nfull;          /* daemon, plain: spans on full */
} shm_central_t;

/* One attached client.  Daemon only (plain stores); slot i is session id
 * i + 1. */
typedef struct shm_session_s {
    uint32_t pid;            /* daemon, plain: the client's pid; 0: slot free */
    uint32_t uid;            /* daemon, plain: the client's uid (SO_PEERCRED) */
    uint64_t started;        /* daemon, plain: wall-clock seconds */
    shm_spanid_t spans;      /* daemon, plain: HELD spans of this session
                                (next/prev) */
    uint32_t nspans;         /* daemon, plain: spans on that list */
    uint32_t gen;            /* daemon, plain: bumped each time the slot is
                                reused */
    uint32_t pad;
} shm_session_t;

/* Counters the daemon keeps in the arena (daemon writes, plain stores;
 * Stats reads them in the daemon).  One X-macro list drives the struct, the
 * Stats message and spanctl's output.  Each group below names its writer;
 * every one is the daemon's one thread, with plain stores. */
#define SHM_STAT_FIELDS(X)                                                      \
    /* the heap (daemon/heap.c), plain: */                                      \
    X(grows,            "times the heap grew")                                   \
    X(grown_bytes,      "bytes the heap grew by")                                \
    X(spans_allocated,  "spans taken from the heap")                             \
    X(spans_freed,      "spans given back to the heap")                          \
    X(large_allocs,     "large objects allocated")                               \
    X(large_frees,      "large objects freed")                                   \
    /* the request handlers (daemon/handlers.c), plain: */                      \
    X(large_alloc_calls, "AllocLarge requests served")                           \
    X(refills,          "Refill requests served")                                \
    X(refill_spans,     "spans handed out by Refill")                            \
    X(releases,         "spans released by clients")                             \
    /* session ends (daemon/session.c), plain: */                               \
    X(adopted_spans,    "spans taken back from clients that went away")          \
    /* the heap's scavenger (daemon/heap.c), plain: */                          \
    X(scavenged_bytes,  "bytes given back to the kernel")                        \
    X(scavenges,        "scavenger passes that released memory")                 \
    /* session opens (daemon/session.c), plain: */                              \
    X(clients_total,    "client sessions opened")                                \
    /* the server (daemon/rpc.c), plain: */                                     \
    X(bad_requests,     "requests refused as malformed or invalid")

typedef struct shm_stats_s {
#define SHM_STAT_MEMBER(name, help) uint64_t name;
    SHM_STAT_FIELDS(SHM_STAT_MEMBER)
#undef SHM_STAT_MEMBER
} shm_stats_t;

/* One bucket of the large pool: a Treiber stack of POOLED spans of one page
 * count, on its own cache line with its counters.
 *   xhead    (generation << 32) | first span id of the top batch, id 0 =
 *            empty.  Every push and pop of a batch CASes it with generation
 *            + 1 (ABA: a pop that read the link of a span popped and pushed
 *            again meanwhile fails).  Push:
 *            CAS release; pop: load acquire, CAS acq_rel; the daemon's drain
 *            takes all with one CAS acq_rel to (generation + 1, 0).
 *   xpops, xpushes  spans popped, spans pushed (the rest of a batch a pop
 *            gives back is neither): anyone, fetch_add relaxed; statistics
 *            only (and the scavenger's idle test). */
typedef struct shm_lpool_bucket_s {
    _Atomic uint64_t xhead;
    _Atomic uint64_t xpops;
    _Atomic uint64_t xpushes;
    uint64_t pad[5];
} __attribute__((aligned(64))) shm_lpool_bucket_t;

/* The large pool.  Invariant, while nothing races (no session open):
 *   xpages == sum over the buckets of (spans on it) * (its page count), and
 *   every POOLED span is on the bucket of its page count exactly once. */
typedef struct shm_lpool_s {
    uint64_t cap_pages;      /* daemon, plain, at creation (--large-pool),
                                before it serves any client (the Hello that
                                hands out the arena orders it); 0: no pool */
    uint64_t pad0[7];
    _Atomic uint64_t xpages; /* pages pooled now, plus pages reserved by pushes
                                in flight: a freer fetch_adds (relaxed) before
                                it pushes and takes it back when over
                                cap_pages; a popper or the drain fetch_subs
                                (relaxed) */
    uint64_t pad1[7];
    shm_lpool_bucket_t bucket[SHM_LPOOL_NBUCKETS]; /* [npages - SHM_LPOOL_MIN_PAGES] */
} shm_lpool_t;

/* The arena header, at offset 0.  Identity fields: written by the daemon
 * once at creation (shm_arena_create), with plain stores before magic's
 * store_release, which publishes them; read-only after attach. */
typedef struct shm_header_s {
    uint64_t magic;          /* SHM_MAGIC; daemon stores it last, with release */
    uint32_t version;        /* daemon, plain, at creation: SHM_LAYOUT_VERSION */
    uint32_t page_shift;     /* daemon, plain, at creation: SHM_PAGE_SHIFT */
    uint64_t arena_size;     /* daemon, plain, at creation: bytes reserved, a
                                multiple of the page size */
    uint64_t base;           /* daemon, plain, at creation: address every
                                process maps the arena at */
    uint64_t spanmap_off;    /* daemon, plain, at creation; the regions: see
                                the layout above */
    uint64_t classmap_off;   /* daemon, plain, at creation */
    uint64_t bitmap_off;     /* daemon, plain, at creation */
    uint64_t spans_off;      /* daemon, plain, at creation */
    uint64_t data_off;       /* daemon, plain, at creation */
    uint32_t npages;         /* daemon, plain, at creation: arena_size >>
                                SHM_PAGE_SHIFT */
    uint32_t nclasses;       /* daemon, plain, at creation: SHM_NCLASSES */
    uint64_t created;        /* daemon, plain, at creation: wall-clock seconds */
    shm_class_t classes[SHM_NCLASSES]; /* daemon, plain, at creation: the table
                                          this arena was made with */

    /* daemon state: daemon only, plain stores, except where marked */
    _Atomic uint32_t xdaemon_pid; /* daemon: store_release at start; 0 when stopped */
    uint32_t nsessions;      /* daemon, plain: live sessions */
    shm_heap_t heap;         /* daemon, plain: see shm_heap_t */
    shm_fixalloc_t spanalloc; /* daemon, plain: see shm_fixalloc_t */
    shm_central_t central[SHM_NCLASSES]; /* daemon, plain: see shm_central_t */
    shm_stats_t stats;       /* daemon, plain: see shm_stats_t */
    shm_session_t sessions[SHM_MAX_SESSIONS]; /* daemon, plain: see shm_session_t */
    shm_lpool_t lpool;       /* anyone: see shm_lpool_t and shm/lpool.h */
} shm_header_t;

/* ---- address arithmetic: any process, no locks ---- */

static inline uint8_t *shm_page_addr(uint8_t *base, uint32_t page)
{
    return base + ((uint64_t)page << SHM_PAGE_SHIFT);
}

/* The span map (layout above): written by the daemon alone, every entry
 * with store_release (heap.c, map_set and map_range; a span handed out
 * gets its entries after its state, Publication above); read with
 * load_acquire by anyone (shm_span_of, the client's free), then the span's
 * state with acquire.  The daemon reads its own entries relaxed. */
static inline _Atomic uint32_t *shm_spanmap(uint8_t *base)
{
    return (_Atomic uint32_t *)(base + ((shm_header_t *)base)->spanmap_off);
}

/* The class map (layout above): written by the daemon with relaxed stores
 * when it cuts a span into a class (shm_span_cut), before the span is
 * published; read relaxed by a client's free as a hint only. */
static inline _Atomic uint8_t *shm_classmap(uint8_t *base)
{
    return (_Atomic uint8_t *)(base + ((shm_header_t *)base)->classmap_off);
}

static inline shm_span_t *shm_span(uint8_t *base, shm_spanid_t id)
{
    return (shm_span_t *)(base + ((shm_header_t *)base)->spans_off) + id;
}

static inline shm_spanid_t shm_span_id(uint8_t *base, const shm_span_t *s)
{
    return (shm_spanid_t)(s - (shm_span_t *)(base + ((shm_header_t *)base)->spans_off));
}

/* The alloc bitmap of the span starting at `page`: bit i is object i.
 * Written only by the span's holder (a client thread while HELD, the
 * daemon while CENTRAL, and shm_span_cut's memset before the span is
 * published), one word at a time with shm_word_store (relaxed, no
 * read-modify-write: shm/atomic.h); read relaxed (shm_word_load) by the
 * holder, by a freer checking that an object is allocated, and by the
 * daemon's Stats and verifier. */
static inline uint64_t *shm_bitmap(uint8_t *base, uint32_t page)
{
    return (uint64_t *)(base + ((shm_header_t *)base)->bitmap_off +
                        (uint64_t)page * SHM_BITMAP_PAGE_BYTES);
}

#endif /* SHM_LAYOUT_H */

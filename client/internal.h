/* See shm/layout.h for the overview; doc/design.md section 3 for the client.
 *
 * libspanclient's internals shared between its files (spci_ names, hidden
 * from the shared library's symbol table: the library is compiled with
 * -fvisibility=hidden and only the spc_ entry points are marked SPC_PUBLIC).
 *
 * Process state comes in two parts:
 *   spci_map   read-mostly: where the arena is mapped.  Written only by
 *              attach/detach (under spci_proc.lock) while no other thread
 *              uses the arena; read without a lock by the slow paths, and
 *              copied into every thread's spci_tls for the fast free
 *              (client/cache.h).
 *   spci_proc  the slow-path state: the connection to the daemon, the list
 *              of thread caches, the log sink.  Everything in it is touched
 *              with spci_proc.lock held (functions named *_locked assume it).
 */
#ifndef SPCI_INTERNAL_H
#define SPCI_INTERNAL_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "shm/arena.h"
#include "shm/atomic.h"
#include "shm/span.h"
#include "spanclient.h"

#define SPC_PUBLIC __attribute__((visibility("default")))
#define SPCI_LIKELY(x) __builtin_expect(!!(x), 1)
#define SPCI_UNLIKELY(x) __builtin_expect(!!(x), 0)
#define SPCI_COLD __attribute__((noinline, cold))
#define SPCI_NORETURN __attribute__((noreturn, noinline, cold))

typedef struct spci_cache_s spci_cache_t;

/* Where the arena is mapped.  One cache line, read by the slow paths (the
 * fast free reads its thread's copy, spci_fmap_t below); written by attach
 * and detach only.  data_len is 0 while nothing is mapped. */
typedef struct spci_map_s {
    uint8_t *base;              /* arena base (== header's base), NULL unmapped */
    uint64_t data_off;          /* first object page's offset */
    uint64_t data_len;          /* arena_size - data_off; 0 unmapped */
    uint64_t size;              /* arena_size */
    _Atomic uint32_t *spanmap;  /* the span map */
    shm_span_t *spans;          /* span descriptor 0 */
    uint8_t *bitmaps;           /* alloc bitmap slot of page 0 */
} __attribute__((aligned(64))) spci_map_t;

extern spci_map_t spci_map;

/* What the fast free reads of spci_map, copied into every thread's
 * thread-local line (spci_tls_t, client/cache.h) so that the free loads no
 * line but that one, the cache's and the arena's: see client/cache.h on
 * page offsets.  Worked out once in map_publish (attach.c) and copied under
 * spci_proc.lock (attach, detach, cache creation); all zero while nothing
 * is mapped. */
typedef struct spci_fmap_s {
    uint8_t *base;
    uintptr_t data;             /* base + data_off: the first object page */
    uint64_t data_len;
    /* the span map's and the class map's addresses less base's page
     * number's worth of entries: the entries of p at pagemap + (p >>
     * SHM_PAGE_SHIFT) * 4 and classmap + (p >> SHM_PAGE_SHIFT), without
     * waiting for base (0 while nothing is mapped) */
    uintptr_t pagemap;
    uintptr_t classmap;
    shm_span_t *spans;
    uint8_t *bitmaps;
} spci_fmap_t;

/* The slow-path state of the process.  All fields under `lock`. */
typedef struct spci_proc_s {
    pthread_mutex_t lock;       /* recursive: attach, detach, RPCs, the cache list */
    int sock;                   /* connection to spand; -1 when no session */
    pid_t pid;                  /* process that opened sock (fork check) */
    uint32_t session;           /* session id from Hello */
    uint64_t next_id;           /* request ids */
    shm_arena_t arena;          /* the mapping; arena.base NULL when unmapped */
    spci_cache_t *caches;       /* every thread cache of this process */
    spc_log_fn log;             /* diagnostics sink, NULL: none */
    void *log_arg;
} spci_proc_t;

extern spci_proc_t spci_proc;

/* 1 while a session with the daemon is open (set with release after the
 * mapping and spci_map are valid); read with acquire by the slow paths. */
extern _Atomic int spci_attached;

/* 1 once the process exits (attach.c, exit_flush): a free into another
 * thread's span is pushed at once and a tiny request takes a block of its
 * own, since nothing runs later to push or abandon them.  Written once;
 * read relaxed by those slow paths. */
extern _Atomic int spci_exiting;

/* ---- attach.c ---- */

/* Attach to the default socket unless a session is open.  0 or -errno. */
int spci_ensure_attached(void);
/* The calling thread's real cache, created on first use (attaches lazily).
 * NULL and errno (ENOTCONN, ENOMEM) on failure. */
spci_cache_t *spci_cache_create(void);
uint32_t spci_gettid(void);
/* The connection broke while a session was open: refuse lazy re-attaching
 * until spc_detach (the daemon takes back every span we held). */
void spci_session_broken_locked(void);

/* ---- rpc.c: blocking RPC over the session socket (lock held) ---- */

int spci_rpc_hello_locked(const char *path, int *fd_out, uint64_t *base, uint64_t *size);
int spci_rpc_refill_locked(unsigned cls, uint32_t nspans, const shm_spanid_t *release,
                           uint32_t nrelease, shm_spanid_t *spans, uint32_t max,
                           uint32_t *nspans_out);
int spci_rpc_release_locked(const shm_spanid_t *spans, uint32_t n);
/* AllocLarge of one object at *off, and up to `extra` more spans of its size
 * for the thread's cache, whose offsets go to extra_off[0 .. *n_extra),
 * each tagged SHM_LARGE_CACHED for this session (shm/layout.h). */
int spci_rpc_alloc_large_locked(uint64_t size, uint64_t align, uint32_t extra, uint64_t *off,
                                uint64_t *extra_off, uint32_t *n_extra);
int spci_rpc_free_large_locked(uint64_t off);
void spci_rpc_close_locked(void);
/* Close the session in order: shut our side, wait (bounded) until the
 * daemon closes its side, so the session is over when this returns. */
void spci_rpc_goodbye_locked(void);
/* The socket path for `path` (NULL: the default rule).  0 or -ENAMETOOLONG. */
int spci_socket_path(const char *path, char *out, size_t len);

/* ---- cache.c: slow paths of the thread cache ---- */

void *spci_alloc_slow(spci_cache_t *c, unsigned cls);
/* Empty bins that know their class's divmul and size. */
void spci_cache_init_bins(spci_cache_t *c);
void *spci_tiny_slow(spci_cache_t *c, unsigned code);
/* Give back everything the cache holds (tiny blocks, spans) in one Release
 * and leave it empty.  `session` false: the spans belong to another
 * process's session (fork child); forget them without touching them. */
void spci_cache_flush_locked(spci_cache_t *c, bool session);

/* ---- free.c ---- */

/* Any free the fast path does not finish: checks p from scratch. */
void spci_free_slow(void *p);
/* A free whose span (s, found from off, p's offset) this thread does not
 * hold: the remote free, or spci_free_slow for anything unusual. */
void spci_free_other(void *p, shm_span_t *s, uint64_t off, spci_cache_t *c);
/* Free object i (checked allocated) of span s, held by the thread of c. */
void spci_free_owned(spci_cache_t *c, shm_span_t *s, uint32_t i);
/* spci_free_owned with the calling thread's cache, read there: the fast
 * free's call, which then need not keep the cache's address. */
void spci_free_held(shm_span_t *s, uint32_t i);
SPCI_NORETURN void spci_bogus_free(const char *fn, const void *p, const char *why);
/* Classify p: SHM_PTR_OK and *span, *index, or why it is not an object. */
shm_bad_t spci_check(const void *p, shm_span_t **span, uint32_t *index);
/* Push every remote free the thread of c has waiting (spci_rfree_t). */
void spci_rfree_flush(spci_cache_t *c);
/* Free on (to the large pool or the daemon) every large span the thread of
 * c keeps; forget them when the arena is not mapped. */
void spci_lcache_flush(spci_cache_t *c);
/* Tiny block i of span s, whose count dropped to zero, freed as an object
 * by the thread of cache c. */
void spci_tiny_block_free(spci_cache_t *c, shm_span_t *s, uint32_t i);
/* Hand on what waits in c for others: give up its current tiny blocks and
 * push its waiting remote frees; its spans stay as they are (cache.c).  At
 * a flush with a session, and at exit for the exiting thread. */
void spci_cache_hand_on(spci_cache_t *c);

/* ---- api.c ---- */

void *spci_alloc_large(uint64_t size, uint64_t align);
void spci_log(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#endif /* SPCI_INTERNAL_H */

/* See shm/layout.h for the overview; doc/design.md section 3 for the client.
 *
 * Process-wide state: attaching (connect, Hello, map the arena at its
 * recorded base with MAP_FIXED_NOREPLACE, never elsewhere), detaching,
 * thread caches coming and going, and fork.
 *
 * Fork: the child must not use the parent's caches or connection (the spans
 * belong to the parent's session, and the parent goes on using them).  The
 * child handler drops every cache without touching the arena, closes the
 * connection, keeps the mapping (so inherited pointers stay valid and frees
 * of them work as remote pushes) and attaches anew on first use: a new
 * session, reusing the mapping when the daemon's arena is the same object.
 */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "client/cache.h"

spci_map_t spci_map;
spci_proc_t spci_proc = {
    .lock = PTHREAD_RECURSIVE_MUTEX_INITIALIZER_NP,
    .sock = -1,
    .arena = { .fd = -1 },
};
_Atomic int spci_attached;
_Atomic int spci_exiting;

static bool broken;                     /* the session died under us */
static pthread_once_t once = PTHREAD_ONCE_INIT;
static pthread_key_t cache_key;

uint32_t spci_gettid(void)
{
    return (uint32_t)syscall(SYS_gettid);
}

/* ---- thread caches ---- */

static void cache_unlink_locked(spci_cache_t *c)
{
    if (c->prev)
        c->prev->next = c->next;
    else
        spci_proc.caches = c->next;
    if (c->next)
        c->next->prev = c->prev;
    c->next = c->prev = NULL;
}

/* pthread key destructor: the thread exits, its spans go back. */
static void thread_exit(void *arg)
{
    spci_cache_t *c = arg;
    pthread_mutex_lock(&spci_proc.lock);
    spci_cache_flush_locked(c, shm_load_acquire(&spci_attached) && spci_proc.pid == getpid());
    cache_unlink_locked(c);
    pthread_mutex_unlock(&spci_proc.lock);
    spci_tls = (spci_tls_t){ .tc = &spci_empty_cache };
    free(c->mem);
}

/* The process exits (exit(), or a return from main) or the library is
 * unloaded.  No key destructor runs for the thread that calls exit(), so
 * without this its waiting remote frees would never be pushed, and its
 * current tiny blocks never freed once the pieces others hold are: their
 * memory lost to every process until the daemon restarts.  Only the
 * calling thread's cache is touched (other threads may still run, and
 * what theirs hold is lost as for a killed process); its spans stay held
 * until the daemon takes them back with the session.  Destructors that
 * run after this one lose nothing either (spci_exiting).  libspanclient's
 * destructor runs after those of every library that uses it and after the
 * program's atexit handlers and static destructors. */
__attribute__((destructor)) static void exit_flush(void)
{
    spci_cache_t *c = spci_tls.tc;
    if (c == &spci_empty_cache || spci_map.base == NULL || spci_proc.pid != getpid())
        return;
    shm_store_relaxed(&spci_exiting, 1);
    spci_cache_hand_on(c);
}

/* What every thread with a cache gets in its thread-local line (spci_tls_t,
 * client/cache.h): spci_map as the fast free reads it, set with spci_map
 * (map_publish, unmap_locked); all zeros while nothing is mapped. */
static spci_fmap_t fmap;

static void caches_set_map_locked(void)
{
    for (spci_cache_t *c = spci_proc.caches; c != NULL; c = c->next)
        c->tls->map = fmap;
}

/* Weight of a fast path that waits at every operation (page offsets,
 * client/cache.h): a class above 16 KiB counts a 64th of one below, its
 * operation being the rarer and, with the object's first touch, the
 * longer one. */
static unsigned alias_weight(unsigned cls)
{
    return shm_classes[cls].size > 16384 ? 1 : 64;
}

/* Count, for a cache placed at page offset `at`, every table entry of
 * `tab` (n entries: size-class numbers) whose line has the page offset of
 * its own class's bin. */
static unsigned alias_table_cost(uintptr_t at, const uint8_t *tab, size_t n)
{
    unsigned cost = 0;
    for (size_t j = 0; j < n; j++) {
        unsigned k = tab[j];
        if (k == 0 || k >= SHM_CLASS_TINY)
            continue;
        uintptr_t bin = (at + offsetof(spci_cache_t, bins) + k * sizeof(spci_bin_t)) %
                        SPCI_ALIAS_BYTES;
        if (bin == ((uintptr_t)&tab[j] & (SPCI_ALIAS_BYTES - 64)))
            cost += alias_weight(k);
    }
    return cost;
}

/* Where in a page to place the calling thread's new cache (client/cache.h,
 * page offsets): of the 64 line offsets, the one where the fewest fast
 * paths load a line from outside the cache (this thread's spci_tls, an
 * entry of the size-class tables) or store one (an object of a class of
 * 4 KiB multiples, whose objects start pages) at the page offset of the
 * bin they store into, by alias_weight; a remote free stores into its
 * batch's slot (rfree) instead, and loads spci_tls too. */
static uintptr_t cache_place(void)
{
    /* the answer depends on the thread-local line's offset alone (the
     * tables are the process's): 1 + the line chosen, 0 not yet known */
    static _Atomic uint8_t memo[SPCI_ALIAS_BYTES / 64];
    uintptr_t tls = (uintptr_t)&spci_tls % SPCI_ALIAS_BYTES, best = 0;
    uint8_t known = shm_load_relaxed(&memo[tls / 64]);
    if (known != 0)
        return (uintptr_t)(known - 1) * 64;
    unsigned best_cost = UINT32_MAX;
    for (uintptr_t at = 0; at < SPCI_ALIAS_BYTES; at += 64) {
        unsigned cost = (at + offsetof(spci_cache_t, tiny)) % SPCI_ALIAS_BYTES == tls ? 64 : 0;
        for (unsigned k = 1; k < SHM_CLASS_TINY; k++) {
            uintptr_t bin = (at + offsetof(spci_cache_t, bins) + k * sizeof(spci_bin_t)) %
                            SPCI_ALIAS_BYTES;
            if (bin == tls || (bin == 0 && shm_classes[k].size % SPCI_ALIAS_BYTES == 0))
                cost += alias_weight(k);
        }
        /* a remote free of any class stores into its batch's slot */
        for (uintptr_t r = offsetof(spci_cache_t, rfree); r < offsetof(spci_cache_t, rfree) +
                                                                 sizeof(((spci_cache_t *)0)->rfree);
             r += 64)
            if ((at + r) % SPCI_ALIAS_BYTES == tls)
                cost += 64;
        cost += alias_table_cost(at, shm_class_small, sizeof shm_class_small);
        cost += alias_table_cost(at, shm_class_large, sizeof shm_class_large);
        if (cost < best_cost) {
            best_cost = cost;
            best = at;
        }
    }
    shm_store_relaxed(&memo[tls / 64], (uint8_t)(best / 64 + 1));
    return best;
}

spci_cache_t *spci_cache_create(void)
{
    if (spci_ensure_attached() != 0) {
        errno = ENOTCONN;
        return NULL;
    }
    /* a page of slack buys the choice of page offset (aligned_alloc wants
     * a multiple of the alignment) */
    size_t len = (sizeof(spci_cache_t) + 2 * SPCI_ALIAS_BYTES - 1) & ~(size_t)(SPCI_ALIAS_BYTES - 1);
    uintptr_t at = cache_place();
    /* allocated and linked under the lock, which fork_prepare takes: a
     * child forked meanwhile holds no cache memory it cannot reach */
    pthread_mutex_lock(&spci_proc.lock);
    void *mem = aligned_alloc(SPCI_ALIAS_BYTES, len);
    if (mem == NULL) {
        pthread_mutex_unlock(&spci_proc.lock);
        errno = ENOMEM;
        return NULL;
    }
    spci_cache_t *c = (spci_cache_t *)((uint8_t *)mem + at);
    memset(c, 0, sizeof *c);
    c->mem = mem;
    c->tls = &spci_tls;
    spci_cache_init_bins(c);
    c->tid = spci_gettid();
    c->tls->map = fmap;
    c->next = spci_proc.caches;
    if (c->next)
        c->next->prev = c;
    spci_proc.caches = c;
    pthread_mutex_unlock(&spci_proc.lock);
    pthread_setspecific(cache_key, c);
    spci_tls.tc = c;
    return c;
}

/* ---- fork ---- */

static void fork_prepare(void)
{
    pthread_mutex_lock(&spci_proc.lock);
}

static void fork_parent(void)
{
    pthread_mutex_unlock(&spci_proc.lock);
}

static void fork_child(void)
{
    /* the mutex is held by the parent's thread id: make a fresh one */
    pthread_mutexattr_t attr;
    pthread_mutexattr_init(&attr);
    pthread_mutexattr_settype(&attr, PTHREAD_MUTEX_RECURSIVE);
    pthread_mutex_init(&spci_proc.lock, &attr);
    pthread_mutexattr_destroy(&attr);
    /* the caches are copies of the parent's: forget them, touch no span */
    spci_cache_t *c = spci_proc.caches;
    while (c != NULL) {
        spci_cache_t *next = c->next;
        free(c->mem);
        c = next;
    }
    spci_proc.caches = NULL;
    spci_tls = (spci_tls_t){ .tc = &spci_empty_cache };
    pthread_setspecific(cache_key, NULL);
    if (spci_proc.sock >= 0)
        close(spci_proc.sock);
    spci_proc.sock = -1;
    spci_proc.pid = 0;
    spci_proc.session = 0;
    shm_store_relaxed(&spci_attached, 0);
    broken = false;
}

static void init_once(void)
{
    pthread_key_create(&cache_key, thread_exit);
    pthread_atfork(fork_prepare, fork_parent, fork_child);
}

/* ---- attach and detach ---- */

static void map_publish(const shm_arena_t *a)
{
    const shm_header_t *h = a->hdr;
    spci_map.base = a->base;
    spci_map.data_off = h->data_off;
    spci_map.data_len = h->arena_size - h->data_off;
    spci_map.size = h->arena_size;
    spci_map.spanmap = shm_spanmap(a->base);
    spci_map.spans = shm_span(a->base, 0);
    spci_map.bitmaps = a->base + h->bitmap_off;
    fmap = (spci_fmap_t){
        .base = spci_map.base,
        .data = (uintptr_t)spci_map.base + spci_map.data_off,
        .data_len = spci_map.data_len,
        .pagemap = (uintptr_t)spci_map.spanmap -
                   ((uintptr_t)spci_map.base >> SHM_PAGE_SHIFT) * sizeof *spci_map.spanmap,
        .classmap = (uintptr_t)shm_classmap(a->base) - ((uintptr_t)spci_map.base >> SHM_PAGE_SHIFT),
        .spans = spci_map.spans,
        .bitmaps = spci_map.bitmaps,
    };
    caches_set_map_locked();
}

static void unmap_locked(void)
{
    shm_arena_close(&spci_proc.arena);
    memset(&spci_map, 0, sizeof spci_map);
    fmap = (spci_fmap_t){ 0 };
    caches_set_map_locked();
}

/* Is the arena behind `fd` the object we have mapped already? */
static bool same_arena(int fd, uint64_t base, uint64_t size)
{
    struct stat a, b;
    const shm_arena_t *m = &spci_proc.arena;
    return m->base != NULL && (uint64_t)(uintptr_t)m->base == base && m->size == size &&
           fstat(fd, &a) == 0 && fstat(m->fd, &b) == 0 && a.st_ino == b.st_ino &&
           a.st_dev == b.st_dev;
}

static int attach_locked(const char *path)
{
    if (shm_load_relaxed(&spci_attached) && spci_proc.pid == getpid())
        return 0;
    if (broken) {
        spci_log("the session with spand broke; call spc_detach() before attaching again");
        return -ENOTCONN;
    }
    pthread_once(&once, init_once);
    int fd = -1;
    uint64_t base = 0, size = 0;
    int rc = spci_rpc_hello_locked(path, &fd, &base, &size);
    if (rc != 0)
        return rc;
    if (same_arena(fd, base, size)) {
        close(fd);                      /* a fork child: the mapping is right */
    } else {
        if (spci_proc.arena.base != NULL)
            unmap_locked();             /* the daemon has a different arena now */
        char err[SHM_ERRLEN] = "";
        rc = shm_arena_map_fd(&spci_proc.arena, fd, err);
        if (rc != 0) {
            close(fd);                  /* map_fd owns it only on success */
        } else if ((uint64_t)(uintptr_t)spci_proc.arena.base != base ||
                   spci_proc.arena.size != size) {
            snprintf(err, sizeof err, "the arena's header (base %p, %llu bytes) does not "
                     "match spand's Hello (base %#llx, %llu bytes)",
                     (void *)spci_proc.arena.base,
                     (unsigned long long)spci_proc.arena.size, (unsigned long long)base,
                     (unsigned long long)size);
            unmap_locked();
            rc = -EPROTO;
        }
        if (rc != 0) {
            spci_log("cannot attach: %s", err);
            spci_rpc_close_locked();
            return rc;
        }
        map_publish(&spci_proc.arena);
    }
    shm_store_release(&spci_attached, 1);
    return 0;
}

int spci_ensure_attached(void)
{
    if (shm_load_acquire(&spci_attached) && spci_proc.pid == getpid())
        return 0;
    pthread_mutex_lock(&spci_proc.lock);
    int rc = attach_locked(NULL);
    pthread_mutex_unlock(&spci_proc.lock);
    return rc;
}

SPC_PUBLIC int spc_attach(const char *socket_path)
{
    pthread_mutex_lock(&spci_proc.lock);
    int rc = attach_locked(socket_path);
    pthread_mutex_unlock(&spci_proc.lock);
    return rc;
}

SPC_PUBLIC void spc_detach(void)
{
    pthread_mutex_lock(&spci_proc.lock);
    bool session = shm_load_relaxed(&spci_attached) && spci_proc.pid == getpid() &&
                   spci_proc.sock >= 0;
    for (spci_cache_t *c = spci_proc.caches; c != NULL; c = c->next)
        spci_cache_flush_locked(c, session);
    if (session)
        spci_rpc_goodbye_locked();
    else
        spci_rpc_close_locked();
    shm_store_release(&spci_attached, 0);
    unmap_locked();
    broken = false;
    pthread_mutex_unlock(&spci_proc.lock);
}

/* rpc.c calls this when the connection breaks: no lazy re-attach until
 * spc_detach, since the daemon takes back every span this process holds. */
void spci_session_broken_locked(void)
{
    if (shm_load_relaxed(&spci_attached)) {
        broken = true;
        shm_store_release(&spci_attached, 0);
    }
}

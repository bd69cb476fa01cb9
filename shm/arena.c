/* See shm/layout.h for the overview.  The arena's shared-memory object. */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "shm/arena.h"
#include "shm/atomic.h"

#ifndef MAP_FIXED_NOREPLACE
#define MAP_FIXED_NOREPLACE 0x100000
#endif

static int fail(char *err, int rc, const char *fmt, ...)
{
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, SHM_ERRLEN, fmt, ap);
        va_end(ap);
    }
    return rc;
}

static uint64_t page_round(uint64_t n)
{
    return (n + SHM_PAGE_SIZE - 1) & ~(uint64_t)(SHM_PAGE_SIZE - 1);
}

void shm_layout_compute(shm_header_t *h, uint64_t size, uint64_t base)
{
    uint64_t npages = size >> SHM_PAGE_SHIFT;
    h->version = SHM_LAYOUT_VERSION;
    h->page_shift = SHM_PAGE_SHIFT;
    h->arena_size = size;
    h->base = base;
    h->npages = (uint32_t)npages;
    h->nclasses = SHM_NCLASSES;
    h->spanmap_off = page_round(sizeof(shm_header_t));
    h->classmap_off = h->spanmap_off + page_round(npages * sizeof(uint32_t));
    h->bitmap_off = h->classmap_off + page_round(npages);
    h->spans_off = h->bitmap_off + page_round(npages * SHM_BITMAP_PAGE_BYTES);
    /* at most one span per page, and id 0 unused */
    h->data_off = h->spans_off + page_round((npages + 1) * sizeof(shm_span_t));
    memcpy(h->classes, shm_classes, sizeof(shm_classes));
}

int shm_arena_back(shm_arena_t *a, uint64_t off, uint64_t len)
{
    long os = sysconf(_SC_PAGESIZE);
    uint64_t lo = off & ~(uint64_t)(os - 1);
    uint64_t hi = (off + len + os - 1) & ~(uint64_t)(os - 1);
    if (hi > a->size)
        hi = a->size;
    if (hi <= lo)
        return 0;
    if (fallocate(a->fd, 0, (off_t)lo, (off_t)(hi - lo)) != 0)
        return (errno == ENOSPC || errno == EFBIG) ? -ENOMEM : -errno;
    return 0;
}

int shm_arena_punch(shm_arena_t *a, uint64_t off, uint64_t len)
{
    long os = sysconf(_SC_PAGESIZE);
    uint64_t lo = (off + os - 1) & ~(uint64_t)(os - 1);
    uint64_t hi = (off + len) & ~(uint64_t)(os - 1);
    if (hi <= lo)
        return 0;
    if (fallocate(a->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                  (off_t)lo, (off_t)(hi - lo)) != 0)
        return -errno;
    return 0;
}

uint64_t shm_arena_resident(const shm_arena_t *a)
{
    struct stat st;
    if (fstat(a->fd, &st) != 0)
        return 0;
    return (uint64_t)st.st_blocks * 512;
}

static int map_at(shm_arena_t *a, int fd, uint64_t size, uint64_t base, char *err)
{
    void *p = mmap((void *)(uintptr_t)base, size, PROT_READ | PROT_WRITE,
                   MAP_SHARED | MAP_FIXED_NOREPLACE, fd, 0);
    if (p == MAP_FAILED)
        return fail(err, -errno, "cannot map the arena (%llu bytes) at %#llx: %s",
                    (unsigned long long)size, (unsigned long long)base, strerror(errno));
    if ((uint64_t)(uintptr_t)p != base) {
        /* an old kernel that ignores MAP_FIXED_NOREPLACE: never relocate */
        munmap(p, size);
        return fail(err, -EEXIST, "address %#llx is taken in this process; the arena "
                    "must map at the same address in every process",
                    (unsigned long long)base);
    }
    a->fd = fd;
    a->base = p;
    a->size = size;
    a->hdr = p;
    return 0;
}

int shm_arena_create(shm_arena_t *a, const char *name, uint64_t size, uint64_t base,
                     char *err)
{
    a->fd = -1;
    if (size < SHM_MIN_ARENA_SIZE || size > SHM_MAX_ARENA_SIZE || size % SHM_PAGE_SIZE)
        return fail(err, -EINVAL, "arena size %llu must be a multiple of %u between %llu "
                    "and %llu bytes", (unsigned long long)size, SHM_PAGE_SIZE,
                    (unsigned long long)SHM_MIN_ARENA_SIZE,
                    (unsigned long long)SHM_MAX_ARENA_SIZE);
    if (base == 0 || base % (2u << 20))
        return fail(err, -EINVAL, "base address %#llx must be non-zero and 2 MiB aligned",
                    (unsigned long long)base);
    shm_header_t tmp;
    memset(&tmp, 0, sizeof tmp);
    shm_layout_compute(&tmp, size, base);
    if (tmp.data_off + 2 * SHM_GROW_MIN_PAGES * (uint64_t)SHM_PAGE_SIZE > size)
        return fail(err, -EINVAL, "arena size %llu leaves no room for objects",
                    (unsigned long long)size);

    int fd = shm_open(name, O_RDWR | O_CREAT | O_EXCL, 0600);
    if (fd < 0)
        return fail(err, -errno, "shm_open(%s): %s", name, strerror(errno));
    int rc;
    if (ftruncate(fd, (off_t)size) != 0) {
        rc = fail(err, -errno, "cannot reserve %llu bytes: %s",
                  (unsigned long long)size, strerror(errno));
        goto out;
    }
    if ((rc = map_at(a, fd, size, base, err)) != 0)
        goto out;
    /* the header is written before anyone can see the object */
    if ((rc = shm_arena_back(a, 0, tmp.spanmap_off)) != 0) {
        fail(err, rc, "cannot back the arena header: %s", strerror(-rc));
        munmap(a->base, size);
        goto out;
    }
    memcpy(a->hdr, &tmp, offsetof(shm_header_t, xdaemon_pid));
    a->hdr->created = (uint64_t)time(NULL);
    __atomic_store_n(&a->hdr->magic, SHM_MAGIC, __ATOMIC_RELEASE);
    return 0;
out:
    close(fd);
    shm_unlink(name);
    a->fd = -1;
    return rc;
}

int shm_arena_map_fd(shm_arena_t *a, int fd, char *err)
{
    shm_header_t h;
    a->fd = -1;
    ssize_t n = pread(fd, &h, offsetof(shm_header_t, xdaemon_pid), 0);
    if (n != (ssize_t)offsetof(shm_header_t, xdaemon_pid))
        return fail(err, -EPROTO, "the arena is too short to hold a header");
    if (h.magic != SHM_MAGIC)
        return fail(err, -EPROTO, "not a spand arena (bad magic %#llx)",
                    (unsigned long long)h.magic);
    if (h.version != SHM_LAYOUT_VERSION || h.page_shift != SHM_PAGE_SHIFT ||
        h.nclasses != SHM_NCLASSES ||
        memcmp(h.classes, shm_classes, sizeof(shm_classes)) != 0)
        return fail(err, -EPROTO, "arena layout version %u (page shift %u, %u classes) "
                    "does not match this build's version %u", h.version, h.page_shift,
                    h.nclasses, SHM_LAYOUT_VERSION);
    struct stat st;
    if (fstat(fd, &st) != 0 || (uint64_t)st.st_size < h.arena_size)
        return fail(err, -EPROTO, "the arena object is smaller than its header says");
    shm_header_t want;
    memset(&want, 0, sizeof want);
    shm_layout_compute(&want, h.arena_size, h.base);
    if (want.data_off != h.data_off || want.spans_off != h.spans_off ||
        want.bitmap_off != h.bitmap_off || want.classmap_off != h.classmap_off ||
        want.spanmap_off != h.spanmap_off)
        return fail(err, -EPROTO, "the arena header's region offsets are inconsistent");
    return map_at(a, fd, h.arena_size, h.base, err);
}

int shm_arena_open(shm_arena_t *a, const char *name, char *err)
{
    int fd = shm_open(name, O_RDWR, 0);
    if (fd < 0)
        return fail(err, -errno, "shm_open(%s): %s", name, strerror(errno));
    int rc = shm_arena_map_fd(a, fd, err);
    if (rc != 0)
        close(fd);
    return rc;
}

void shm_arena_close(shm_arena_t *a)
{
    if (a->base)
        munmap(a->base, a->size);
    if (a->fd >= 0)
        close(a->fd);
    a->base = NULL;
    a->hdr = NULL;
    a->fd = -1;
}

int shm_parse_size(const char *s, uint64_t *out)
{
    char *end;
    errno = 0;
    if (s == NULL || *s == '\0' || *s == '-')
        return -EINVAL;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno != 0 || end == s)
        return -EINVAL;
    unsigned shift = 0;
    switch (*end) {
    case 'k': case 'K': shift = 10; end++; break;
    case 'm': case 'M': shift = 20; end++; break;
    case 'g': case 'G': shift = 30; end++; break;
    case 't': case 'T': shift = 40; end++; break;
    case '\0': break;
    default: return -EINVAL;
    }
    if (*end == 'i' || *end == 'I')
        end++;
    if (*end == 'b' || *end == 'B')
        end++;
    if (*end != '\0' || (shift && v > (~0ULL >> shift)))
        return -EINVAL;
    *out = (uint64_t)v << shift;
    return 0;
}

/* See shm/layout.h for the overview.
 *
 * The arena object: create or open the POSIX shared-memory object, reserve
 * and map the whole range at one fixed address, back and release pages.
 * Errors are returned as negative errno values; `err` (when not NULL) gets
 * a sentence saying what failed, for the caller to log or print.
 */
#ifndef SHM_ARENA_H
#define SHM_ARENA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "shm/layout.h"

#define SHM_ERRLEN 256

typedef struct shm_arena_s {
    int fd;                  /* the shared-memory object, -1 when closed */
    uint8_t *base;           /* mapping address; == hdr->base */
    uint64_t size;           /* bytes mapped */
    shm_header_t *hdr;       /* == (shm_header_t *)base */
} shm_arena_t;

/* Offsets of the regions for an arena of `size` bytes (a multiple of the
 * page size).  Fills the identity fields of `h` (not magic). */
void shm_layout_compute(shm_header_t *h, uint64_t size, uint64_t base);

/* Create a new shared-memory object `name` (O_EXCL: -EEXIST if there is
 * one), reserve `size` bytes, map it at `base` and write a header with the
 * region offsets and the class table.  Only the header is backed; the heap
 * is left empty (spd_heap_init in daemon/heap.c initialises it and backs the
 * first span descriptors). */
int shm_arena_create(shm_arena_t *a, const char *name, uint64_t size, uint64_t base,
                     char *err);

/* Map an arena from an open fd (received over the socket, or from
 * shm_open): read the header, check magic, version, page size and class
 * table, then map the whole range at the recorded address with
 * MAP_FIXED_NOREPLACE.  Takes ownership of fd on success. */
int shm_arena_map_fd(shm_arena_t *a, int fd, char *err);

/* shm_open(name) + shm_arena_map_fd. */
int shm_arena_open(shm_arena_t *a, const char *name, char *err);

/* Unmap and close; the object itself stays. */
void shm_arena_close(shm_arena_t *a);

/* Make [off, off+len) resident in the object (fallocate), rounded out to
 * whole OS pages.  -ENOMEM (or -ENOSPC from tmpfs, reported as -ENOMEM)
 * when the system has no room. */
int shm_arena_back(shm_arena_t *a, uint64_t off, uint64_t len);

/* Give [off, off+len) back to the kernel (fallocate PUNCH_HOLE), rounded
 * in to whole OS pages.  The range reads as zeros afterwards. */
int shm_arena_punch(shm_arena_t *a, uint64_t off, uint64_t len);

/* Bytes of the object the kernel has resident (fstat st_blocks). */
uint64_t shm_arena_resident(const shm_arena_t *a);

/* Parse a size with an optional K, M, G or T suffix (powers of 1024).
 * Returns 0 and *out, or -EINVAL. */
int shm_parse_size(const char *s, uint64_t *out);

#endif /* SHM_ARENA_H */

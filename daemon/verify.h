/* See shm/layout.h for the overview.
 *
 * The heap verifier: walks every span and list and checks every invariant
 * written in shm/layout.h.  Returns 0, or -1 with `msg` saying the first
 * invariant found broken.  Slow (it reads the whole span map): for tests,
 * debug builds and `spanctl verify`, never on a hot path.
 */
#ifndef SPD_VERIFY_H
#define SPD_VERIFY_H

#include <stddef.h>

#include "shm/arena.h"

int spd_heap_verify(shm_arena_t *a, char *msg, size_t len);

#endif /* SPD_VERIFY_H */

/* See shm/layout.h for the overview.
 *
 * The allocator core's CUnit runner (tests/test_core): shared fixtures.
 * Each test makes its arenas with fx_new(); the per-test teardown closes and
 * unlinks every one of them, also when a fatal assertion ended the test, and
 * an atexit handler does the same if the runner stops early.
 */
#ifndef TEST_CORE_H
#define TEST_CORE_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "tests/cutest.h"

#include "daemon/central.h"
#include "daemon/heap.h"
#include "daemon/verify.h"
#include "shm/arena.h"
#include "shm/atomic.h"
#include "shm/span.h"

#define FX_MAX 4

/* A fresh arena of `size` bytes with an initialised heap, at a base address
 * of its own, named "/spand-test-core-<pid>-<n>".  NULL (and a failed
 * assertion) if it cannot be made. */
shm_arena_t *fx_new(uint64_t size);

/* The shared-memory name of an arena made by fx_new. */
const char *fx_name(const shm_arena_t *a);

/* Close and unlink every arena made by fx_new (the per-test teardown). */
void fx_teardown(void);

/* Close and unlink one arena before the test ends. */
void fx_drop(shm_arena_t *a);

/* Hand CENTRAL span `id` (on no list) to session slot `slot` the way the
 * daemon's Refill does: state HELD, session = slot + 1, on the slot's list.
 * The slot gets this process's pid if it had none. */
void fx_hold(shm_arena_t *a, shm_spanid_t id, unsigned slot);

/* Take HELD span `id` off its session's list (it stays HELD), as the daemon
 * does before spd_central_put or spd_heap_free. */
void fx_unhold(shm_arena_t *a, shm_spanid_t id);

/* Fault injection: the test binary is linked with
 * -Wl,--wrap=shm_arena_back, so every call the daemon core makes goes
 * through tests/test_core.c.  fx_back_fail >= 0 lets that many calls
 * succeed and fails every later one with -ENOMEM; -1 (the default, and what
 * the teardown restores) fails none.  fx_back_calls counts the calls. */
extern int fx_back_fail;
extern unsigned fx_back_calls;

/* A small deterministic PRNG (xorshift64*) for the randomized tests; the
 * seed is printed, and SPAND_TEST_SEED overrides it. */
uint64_t fx_rand(void);
void fx_seed(uint64_t seed);

/* spd_heap_verify must pass; prints its message when it does not. */
#define VERIFY_OK(a)                                                           \
    do {                                                                       \
        char m_[256];                                                          \
        int r_ = spd_heap_verify((a), m_, sizeof m_);                          \
        if (r_ != 0)                                                           \
            fprintf(stderr, "\n    verify (%s:%d): %s\n", __FILE__, __LINE__, m_); \
        CU_ASSERT_EQUAL(r_, 0);                                                \
    } while (0)

/* The span descriptor and the first byte of a span. */
static inline shm_span_t *fx_span(shm_arena_t *a, shm_spanid_t id)
{
    return shm_span(a->base, id);
}

static inline uint8_t fx_state(shm_arena_t *a, shm_spanid_t id)
{
    return shm_load_acquire(&shm_span(a->base, id)->xstate);
}

static inline uint8_t *fx_addr(shm_arena_t *a, shm_spanid_t id)
{
    return shm_span_addr(a->base, shm_span(a->base, id));
}

/* Suites, one file each. */
extern CU_TestInfo sizeclass_tests[];
extern CU_TestInfo heap_tests[];
extern CU_TestInfo span_tests[];
extern CU_TestInfo central_tests[];
extern CU_TestInfo lpool_tests[];
extern CU_TestInfo verify_tests[];

#endif /* TEST_CORE_H */

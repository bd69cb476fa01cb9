/* See shm/layout.h for the overview.
 *
 * Named-order atomics for the shared arena.  The memory order is part of the
 * name, never a parameter, so every access says at its call site what it
 * orders.  Atomic fields of shared structures carry an `x` prefix and are
 * touched only through these.  All of them are lock-free on x86-64 and
 * aarch64 for 8-, 16-, 32- and 64-bit fields, so they work across processes.
 */
#ifndef SHM_ATOMIC_H
#define SHM_ATOMIC_H

#include <stdatomic.h>
#include <stdbool.h>

#define shm_load_relaxed(p)      atomic_load_explicit((p), memory_order_relaxed)
#define shm_load_acquire(p)      atomic_load_explicit((p), memory_order_acquire)
#define shm_store_relaxed(p, v)  atomic_store_explicit((p), (v), memory_order_relaxed)
#define shm_store_release(p, v)  atomic_store_explicit((p), (v), memory_order_release)
#define shm_exchange_acquire(p, v) \
    atomic_exchange_explicit((p), (v), memory_order_acquire)
#define shm_exchange_acq_rel(p, v) \
    atomic_exchange_explicit((p), (v), memory_order_acq_rel)
/* Weak CAS for retry loops; on failure *expected is reloaded (relaxed). */
#define shm_cas_weak_release(p, expected, desired)                              \
    atomic_compare_exchange_weak_explicit((p), (expected), (desired),           \
                                          memory_order_release, memory_order_relaxed)
#define shm_cas_strong_acq_rel(p, expected, desired)                            \
    atomic_compare_exchange_strong_explicit((p), (expected), (desired),         \
                                            memory_order_acq_rel, memory_order_acquire)
#define shm_fetch_add_relaxed(p, v) atomic_fetch_add_explicit((p), (v), memory_order_relaxed)
#define shm_fetch_sub_relaxed(p, v) atomic_fetch_sub_explicit((p), (v), memory_order_relaxed)
#define shm_fetch_sub_acq_rel(p, v) atomic_fetch_sub_explicit((p), (v), memory_order_acq_rel)

/* Plain words that one writer owns and others only peek at (the alloc
 * bitmap): the owner writes with a relaxed store, which is an ordinary store
 * on every target (no lock prefix); readers use a relaxed load.  This keeps
 * the fast path free of atomic instructions and the program free of data
 * races in the C11 sense. */
#define shm_word_load(p)      __atomic_load_n((p), __ATOMIC_RELAXED)
#define shm_word_store(p, v)  __atomic_store_n((p), (v), __ATOMIC_RELAXED)

#endif /* SHM_ATOMIC_H */

/* See shm/layout.h for the overview.
 *
 * The tests' holder taking objects from a span it holds: the free object of
 * lowest index, its bit set; NULL when the span is full.  A thread cache
 * takes a bitmap word at a time instead (client/cache.h); the tests want
 * the simplest allocation the bitmap allows, to check everything else
 * against.
 */
#ifndef TESTS_SPAN_TAKE_H
#define TESTS_SPAN_TAKE_H

#include "shm/span.h"

static inline void *fx_take(uint8_t *base, shm_span_t *s)
{
    uint32_t w;
    uint64_t m;
    if (!shm_span_free_word(base, s, 0, &w, &m))
        return NULL;
    uint64_t *bm = shm_span_bitmap(base, s);
    shm_word_store(&bm[w], shm_word_load(&bm[w]) | (m & (0 - m)));
    uint32_t i = w * 64 + (uint32_t)__builtin_ctzll(m);
    return shm_span_addr(base, s) + (uint64_t)i * shm_classes[s->sizeclass].size;
}

#endif /* TESTS_SPAN_TAKE_H */

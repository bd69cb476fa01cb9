/* The shared list of examples/list-build.c and examples/list-walk.c: a
 * header object and nodes linked by raw pointers, all in the arena (the
 * arena is mapped at the same address in every process, so raw pointers
 * are valid everywhere). */
#ifndef SPANEX_LIST_H
#define SPANEX_LIST_H

#include <stdint.h>

#define LIST_MAGIC 0x5453494c4e415053ULL    /* "SPANLIST" */

struct node {
    struct node *next;
    uint64_t seq;            /* 0, 1, 2 ... */
    uint32_t len;            /* bytes of data */
    uint8_t data[];          /* data[j] == (uint8_t)(seq * 31 + j) */
};

struct list {
    uint64_t magic;          /* LIST_MAGIC */
    uint64_t count;          /* nodes */
    uint64_t bytes;          /* data bytes in all nodes */
    struct node *first;
};

static inline uint32_t node_len(uint64_t seq)
{
    return (uint32_t)(seq * 7919 % 97);     /* 0..96 bytes, so sizes vary */
}

static inline uint8_t node_byte(uint64_t seq, uint32_t j)
{
    return (uint8_t)(seq * 31 + j);
}

#endif /* SPANEX_LIST_H */

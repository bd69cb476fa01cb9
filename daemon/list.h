/* See shm/layout.h for the overview.
 *
 * Doubly linked lists of span descriptors through their next/prev fields,
 * with the head an id in the arena: the heap's exact lists, central's
 * partial and full lists, and each session's held spans.  Daemon only.
 */
#ifndef SPD_LIST_H
#define SPD_LIST_H

#include "shm/layout.h"

static inline void spd_list_push(uint8_t *base, shm_spanid_t *head, shm_spanid_t id)
{
    shm_span_t *s = shm_span(base, id);
    s->prev = 0;
    s->next = *head;
    if (*head)
        shm_span(base, *head)->prev = id;
    *head = id;
}

static inline void spd_list_remove(uint8_t *base, shm_spanid_t *head, shm_spanid_t id)
{
    shm_span_t *s = shm_span(base, id);
    if (s->prev)
        shm_span(base, s->prev)->next = s->next;
    else
        *head = s->next;
    if (s->next)
        shm_span(base, s->next)->prev = s->prev;
    s->next = s->prev = 0;
}

#define spd_list_foreach(base, head, id, s)                                      \
    for (shm_spanid_t id = (head), id##_next_;                                   \
         id != 0 && ((s) = shm_span((base), id), id##_next_ = (s)->next, 1);      \
         id = id##_next_)

#endif /* SPD_LIST_H */

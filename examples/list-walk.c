/* list-walk OFFSET: walk the list that examples/list-build left in the
 * spand arena (OFFSET is what it printed), by raw pointers, check every
 * node, and free every node and the header. */
#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <spanclient.h>

#include "list.h"

int main(int argc, char **argv)
{
    char *end = NULL;
    unsigned long long off = argc == 2 ? strtoull(argv[1], &end, 0) : 0;
    if (argc != 2 || *argv[1] == '\0' || *end != '\0' || off == 0) {
        fprintf(stderr, "usage: list-walk OFFSET    (the number list-build printed)\n");
        return 2;
    }
    int rc = spc_attach(NULL);
    if (rc != 0) {
        fprintf(stderr, "list-walk: cannot attach to spand: %s\n", strerror(-rc));
        return 1;
    }
    struct list *l = spc_pointer(off);
    if (l == NULL || spc_usable_size(l) < sizeof *l || l->magic != LIST_MAGIC) {
        fprintf(stderr, "list-walk: offset %llu is not a list built by list-build\n", off);
        return 1;
    }
    uint64_t nodes = 0, bytes = 0, bad = 0;
    struct node *nd = l->first;
    while (nd != NULL && nodes < l->count) {
        if (spc_usable_size(nd) < sizeof *nd + node_len(nodes)) {
            fprintf(stderr, "list-walk: node %" PRIu64 " at %p is not a live object\n",
                    nodes, (void *)nd);
            return 1;
        }
        if (nd->seq != nodes || nd->len != node_len(nodes))
            bad++;
        else
            for (uint32_t j = 0; j < nd->len; j++)
                bad += nd->data[j] != node_byte(nodes, j);
        bytes += nd->len;
        struct node *next = nd->next;
        spc_free(nd);
        nd = next;
        nodes++;
    }
    bool ok = nodes == l->count && nd == NULL && bytes == l->bytes && bad == 0;
    printf("list-walk: %" PRIu64 " of %" PRIu64 " nodes, %" PRIu64 " data bytes: %s; "
           "freed every node\n", nodes, l->count, bytes,
           ok ? "all intact" : "MISMATCH");
    l->magic = 0;
    spc_free(l);
    spc_detach();
    return ok ? 0 : 1;
}

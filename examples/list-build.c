/* list-build N: build a linked list of N nodes in the spand arena, print
 * the arena offset of its header on stdout, and leave it there for another
 * process (examples/list-walk) to walk and free.
 *
 *     spand &                      # or spand -f in another terminal
 *     off=$(list-build 100000)
 *     list-walk "$off"
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <spanclient.h>

#include "list.h"

int main(int argc, char **argv)
{
    char *end = NULL;
    unsigned long long n = argc == 2 ? strtoull(argv[1], &end, 10) : 0;
    if (argc != 2 || *argv[1] == '\0' || *end != '\0' || n == 0 || n > 100000000ULL) {
        fprintf(stderr, "usage: list-build N    (1 <= N <= 100000000 nodes)\n");
        return 2;
    }
    int rc = spc_attach(NULL);
    if (rc != 0) {
        fprintf(stderr, "list-build: cannot attach to spand: %s\n", strerror(-rc));
        return 1;
    }
    struct list *l = spc_calloc(1, sizeof *l);
    if (l == NULL) {
        fprintf(stderr, "list-build: %s\n", strerror(errno));
        return 1;
    }
    struct node **tail = &l->first;
    for (uint64_t seq = 0; seq < n; seq++) {
        uint32_t len = node_len(seq);
        struct node *nd = spc_malloc(sizeof *nd + len);
        if (nd == NULL) {
            fprintf(stderr, "list-build: node %" PRIu64 ": %s\n", seq, strerror(errno));
            return 1;
        }
        nd->next = NULL;
        nd->seq = seq;
        nd->len = len;
        for (uint32_t j = 0; j < len; j++)
            nd->data[j] = node_byte(seq, j);
        *tail = nd;
        tail = &nd->next;
        l->bytes += len;
    }
    l->count = n;
    l->magic = LIST_MAGIC;
    printf("%" PRIu64 "\n", spc_offset(l));
    fprintf(stderr, "list-build: %" PRIu64 " nodes with %" PRIu64 " data bytes in the arena\n",
            l->count, l->bytes);
    spc_detach();        /* our spans go back; the list stays allocated */
    return 0;
}

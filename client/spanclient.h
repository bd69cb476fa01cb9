/* spanclient.h: allocate objects that several processes share, from the
 * arena of a spand daemon on this host.
 *
 *     #include <spanclient.h>      cc ... $(pkg-config --cflags --libs spanclient)
 *
 * Attach once per process; then any thread may allocate, and any attached
 * process may use and free any object.  The arena is mapped at the same
 * address in every process, so objects may hold raw pointers to each other;
 * spc_offset()/spc_pointer() convert for channels that carry integers.
 *
 * Errors: functions returning a pointer return NULL and set errno, as malloc
 * does (ENOMEM: no room, or size too large; EINVAL: bad alignment; ENOTCONN:
 * not attached and attaching failed).  int-returning functions return 0 or a
 * negative errno: -ECONNREFUSED no daemon at the socket, -ENOENT no socket,
 * -EPROTO protocol or layout mismatch, -EEXIST the arena's address is taken
 * in this process, -EACCES the daemon refused us.
 *
 * Freeing a pointer that is not a live object of the arena (outside it, not
 * at an object's start, or already free) prints a message naming the
 * pointer and the reason on stderr and aborts, as glibc does for a double
 * free.
 */
#ifndef SPANCLIENT_H
#define SPANCLIENT_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define SPC_API_VERSION 1

/* Connect to the daemon at socket_path (NULL: $SPAND_SOCKET, else
 * $XDG_RUNTIME_DIR/spand.sock, else /tmp/spand-$UID/spand.sock), receive the
 * arena and map it.  A second call in the same process returns 0 and does
 * nothing.  Not needed before spc_malloc, which attaches to the default
 * socket on first use, but it is the way to learn why attaching fails. */
int spc_attach(const char *socket_path);

/* Give every span this process holds back to the daemon and unmap the arena.
 * Objects stay allocated; other processes may go on using and freeing them.
 * Call it when no other thread of the process uses the arena any more. */
void spc_detach(void);

void *spc_malloc(size_t size);                 /* size 0: a unique minimal object */
void *spc_calloc(size_t n, size_t size);       /* zeroed; overflow of n*size: ENOMEM */
void *spc_realloc(void *p, size_t size);       /* NULL p: malloc; size 0: free, NULL */
void *spc_aligned_alloc(size_t align, size_t size); /* align: any power of two */
void  spc_free(void *p);                       /* NULL: nothing; any process, any object */
size_t spc_usable_size(const void *p);         /* bytes usable at p; 0 for NULL */

uint64_t spc_offset(const void *p);            /* arena offset of p; 0 for NULL */
void *spc_pointer(uint64_t offset);            /* p again, in this process; NULL for 0 */

/* Where the library's own diagnostics go (default: none).  The fatal
 * message of a bogus free always goes to stderr as well. */
typedef void (*spc_log_fn)(const char *message, void *arg);
void spc_set_log_fn(spc_log_fn fn, void *arg);

#ifdef __cplusplus
}
#endif

#endif /* SPANCLIENT_H */

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
 * free.  A double free is caught at once when the object belongs to a span
 * the freeing thread holds; when it is a large object, in any process (the
 * free claims the object with one atomic operation, which the second
 * fails); and when the same thread's first free of it still waits in the
 * thread's batch of frees into its span.  A free into a span another
 * thread holds waits in such a batch, and the object's bit is tested when
 * the batch is pushed: a double free is caught then, in the freeing
 * process, if the object is free in the span's bitmap by then; when both
 * frees reach the span's remote-free stack, it is caught when the holder
 * drains the stack (the message then comes from that process; the daemon,
 * when it holds the span, sets the span aside instead).  A double free of
 * a piece of a tiny block (requests of 0..4 bytes) is caught only once the
 * block's live count would go below zero.
 *
 * Threads: each thread has its own cache, created on its first allocation
 * or its first free of an object of a span it does not hold (a remote or a
 * large free); when the thread exits, its cache goes back to the daemon.
 * A process may exit without spc_detach(): what waits in the cache of the
 * thread that calls exit() is handed on then, and the daemon takes back
 * its spans when the process is gone.  Frees still waiting in the caches
 * of other threads running at exit(), or in any thread of a process that
 * is killed or calls _exit(), are lost: those objects stay allocated.
 * fork(): the child keeps the mapping (inherited pointers stay valid, and
 * it may free them), drops the parent's caches and connection, and
 * attaches anew on its first call that needs the daemon.  If the daemon
 * goes away while attached, calls that need it fail with ENOTCONN
 * (-ENOTCONN from spc_attach) until spc_detach() is called; objects
 * already stored stay readable.
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

/* Sizes up to 32 KiB come from the thread's cache (requests of 0..4 bytes
 * share 16-byte blocks, aligned to their size rounded up to a power of
 * two; larger ones are 8-byte aligned).  A larger size up to 1 MiB first
 * takes a freed large object of its page count that the thread keeps, or
 * one from the arena's large pool, with no round trip; otherwise, as any
 * larger size, it is one round trip to the daemon (which may bring up to 7
 * more of that size for the thread to keep).  A size larger than the
 * arena: NULL and ENOMEM at once. */
void *spc_malloc(size_t size);                 /* size 0: a unique minimal object */
void *spc_calloc(size_t n, size_t size);       /* zeroed; overflow of n*size: ENOMEM */
/* In place when the new size falls in the same size class (or, for a large
 * object, fits and uses at least half of it); otherwise a new object, the
 * contents copied, the old one freed.  On failure p is left as it was. */
void *spc_realloc(void *p, size_t size);       /* NULL p: malloc; size 0: free, NULL */
void *spc_aligned_alloc(size_t align, size_t size); /* align: any power of two, else EINVAL */
void  spc_free(void *p);                       /* NULL: nothing; any process, any object */
/* Bytes usable at the object p: its size class, the power of two of a tiny
 * piece, or the pages of a large object.  0 for NULL; 0 and EINVAL when p
 * is not a live object of the arena. */
size_t spc_usable_size(const void *p);

/* Arena offset of p, any address inside the arena; 0 for NULL, and 0 with
 * EINVAL for an address outside it (or when not attached). */
uint64_t spc_offset(const void *p);
/* p again, in this process (attaching first when needed: NULL and ENOTCONN
 * when that fails); NULL for 0, NULL and EINVAL for an offset outside the
 * arena's object pages. */
void *spc_pointer(uint64_t offset);

/* Where the library's own diagnostics go (default: none).  The fatal
 * message of a bogus free always goes to stderr as well. */
typedef void (*spc_log_fn)(const char *message, void *arg);
void spc_set_log_fn(spc_log_fn fn, void *arg);

#ifdef __cplusplus
}
#endif

#endif /* SPANCLIENT_H */

/* See shm/layout.h for the overview; the protocol is proto/spand.proto.
 *
 * What the daemon and every client of the socket share about the wire:
 * the protocol version, the frame limit, the framing helpers and the
 * default socket path.  Header only (static inline), so the client library,
 * spanctl and the tests use the same code without a shared library.
 *
 * Framing
 * -------
 * Every message is a 4-byte big-endian length N followed by N bytes: one
 * packed spand.Request (client to daemon) or spand.Response (daemon to
 * client).  0 <= N <= SPAND_MAX_FRAME; a longer frame gets one error
 * response (id 0, error EMSGSIZE) and the daemon closes that connection.
 * Responses come back in request order and carry the request's id.
 *
 * The arena's file descriptor (SCM_RIGHTS)
 * ----------------------------------------
 * A connection is refused (EACCES on every request, then closed) unless the
 * peer's uid (SO_PEERCRED) is the daemon's, 0, or one the daemon was told to
 * allow.  Hello opens the connection's session; at most one Hello per
 * connection (a second one gets EINVAL).  The daemon answers Hello like
 * this: it first waits until every earlier response on the connection has
 * been written to the socket, then sends the whole HelloReply frame (length
 * prefix included) with one sendmsg() whose SCM_RIGHTS ancillary data holds
 * exactly one fd, the arena's.  (If the kernel takes only part of the frame,
 * the rest follows as ordinary bytes.)  Only a successful HelloReply carries
 * an fd; an error response to Hello carries none.
 *
 * So the receiving side must read the socket with recvmsg() and a control
 * buffer of at least CMSG_SPACE(sizeof(int)) on EVERY read (a plain read()
 * would discard the fd), preferably with MSG_CMSG_CLOEXEC.  The fd arrives
 * with the first byte of the HelloReply frame; since Linux may return the
 * tail of earlier responses in the same recvmsg(), a client keeps any fd it
 * receives until it has parsed the HelloReply, which owns it.  At most one
 * fd ever arrives on a connection.
 */
#ifndef SPAND_WIRE_H
#define SPAND_WIRE_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#define SPAND_PROTOCOL_VERSION 1u
#define SPAND_FRAME_HDR        4u            /* the big-endian length prefix */
#define SPAND_MAX_FRAME        (1u << 20)    /* bytes after the prefix, 1 MiB */

/* Longest socket path we accept (sockaddr_un.sun_path is 108 bytes). */
#define SPAND_PATH_MAX         108u

/* Write the length prefix of a frame of `len` bytes into hdr[0..3]. */
static inline void spand_frame_put_len(uint8_t hdr[SPAND_FRAME_HDR], uint32_t len)
{
    hdr[0] = (uint8_t)(len >> 24);
    hdr[1] = (uint8_t)(len >> 16);
    hdr[2] = (uint8_t)(len >> 8);
    hdr[3] = (uint8_t)len;
}

static inline uint32_t spand_frame_get_len(const uint8_t hdr[SPAND_FRAME_HDR])
{
    return (uint32_t)hdr[0] << 24 | (uint32_t)hdr[1] << 16 |
           (uint32_t)hdr[2] << 8 | (uint32_t)hdr[3];
}

/* The default socket path: $SPAND_SOCKET, else $XDG_RUNTIME_DIR/spand.sock,
 * else /tmp/spand-$UID/spand.sock (the daemon creates that directory with
 * mode 0700 when it is missing).  Returns 0, or -1 when the result would
 * not fit in `len` bytes or SPAND_PATH_MAX. */
static inline int spand_default_socket(char *buf, size_t len)
{
    const char *env = getenv("SPAND_SOCKET");
    int n;
    if (env != NULL && *env != '\0')
        n = snprintf(buf, len, "%s", env);
    else if ((env = getenv("XDG_RUNTIME_DIR")) != NULL && *env != '\0')
        n = snprintf(buf, len, "%s/spand.sock", env);
    else
        n = snprintf(buf, len, "/tmp/spand-%u/spand.sock", (unsigned)getuid());
    return (n < 0 || (size_t)n >= len || (size_t)n >= SPAND_PATH_MAX) ? -1 : 0;
}

#endif /* SPAND_WIRE_H */

/* See shm/layout.h for the overview.
 *
 * libspanclient against a real spand ($SPAND_BIN): every API function and
 * its edge cases, bogus frees (in forked children), threads freeing each
 * other's objects, processes exchanging objects through the arena, and what
 * the daemon holds afterwards (Stats, Clients, Verify).  Each suite starts
 * its own daemon (private socket and shared-memory name, 256 MiB arena) and
 * stops it in its cleanup; tests/daemon_helper.c also stops any daemon left
 * running at exit.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "proto/spand.pb-c.h"
#include "proto/wire.h"
#include "shm/layout.h"
#include "spanclient.h"
#include "tests/client_helper.h"
#include "tests/cutest.h"
#include "tests/daemon_helper.h"

#define ARENA_BASE 0x200000000000ULL   /* spand's default --base-address */

static dh_daemon_t *daemon_;

/* ---- helpers ---- */

/* Start a spand with `args` for a suite; libspanclient finds it through
 * SPAND_SOCKET. */
static int daemon_start_with(const char *const *args)
{
    daemon_ = dh_start_client(args);
    return daemon_ ? 0 : -1;
}

static int suite_start(void)
{
    static const char *const args[] = { "-m", "256M", NULL };
    return daemon_start_with(args);
}

static int suite_stop(void)
{
    spc_detach();
    return dh_finish(daemon_);
}

/* The byte pattern of an object: derived from its arena offset (so the
 * process that checks it needs nothing but the offset) and a salt. */
static inline uint8_t pat(uint64_t off, uint64_t j)
{
    return (uint8_t)(((off * 2654435761u) >> 13) + j * 131 + (j >> 8));
}

static void fill(void *p, size_t n)
{
    uint64_t off = spc_offset(p);
    uint8_t *b = p;
    for (size_t j = 0; j < n; j++)
        b[j] = pat(off, j);
}

static bool check(const void *p, size_t n)
{
    uint64_t off = spc_offset(p);
    const uint8_t *b = p;
    for (size_t j = 0; j < n; j++)
        if (b[j] != pat(off, j))
            return false;
    return true;
}

/* After every process detached: no client, no live object.  Objects freed
 * into spans that went back to the daemon wait on those spans' remote-free
 * stacks until the daemon sweeps them; Scavenge sweeps every full one now. */
static void assert_nothing_live(void)
{
    CU_ASSERT(ct_nothing_live(daemon_->sock, 0));
}

static pid_t runner_pid;            /* the test runner: main() sets it */

/* Write all n bytes to a pipe: a child that cannot exits with status 90
 * (its parent sees it); the runner fails the test and goes on (a child
 * that died leaves EPIPE, and ending the runner there would leave no
 * report and no clean-up). */
static void xwrite(int fd, const void *buf, size_t n)
{
    if (ct_write_all(fd, buf, n))
        return;
    if (getpid() != runner_pid)
        _exit(90);
    CU_FAIL("a write to a child's pipe failed (the child is gone)");
}

/* A child process and two pipes to talk to it: up (child to parent), down
 * (parent to child). */
typedef struct kid_s {
    pid_t pid;
    int up[2], down[2];
} kid_t;

/* Fork with the pipes open: the pid, 0 in the child. */
static pid_t kid_fork(kid_t *k)
{
    CU_ASSERT_FATAL(pipe(k->up) == 0 && pipe(k->down) == 0);
    k->pid = fork();
    CU_ASSERT_FATAL(k->pid >= 0);
    return k->pid;
}

/* In the child: close every descriptor but its ends of the pipes (a
 * program that closes every fd it does not know: the spand connection
 * goes too). */
static void kid_close_others(const kid_t *k)
{
    for (int fd = 3; fd < 1024; fd++)
        if (fd != k->up[1] && fd != k->down[0])
            close(fd);
}

/* The child exits with status 0 within timeout_ms; the pipes are closed. */
static void kid_reap(kid_t *k, int timeout_ms)
{
    int st = 0;
    CU_ASSERT_EQUAL(dh_reap(k->pid, &st, timeout_ms), 0);
    CU_ASSERT(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    close(k->up[0]), close(k->up[1]), close(k->down[0]), close(k->down[1]);
}

/* ---- suite "api": one process ---- */

static char logged[512];
static void log_sink(const char *msg, void *arg)
{
    (void)arg;
    snprintf(logged, sizeof logged, "%s", msg);
}

static void test_attach(void)
{
    spc_set_log_fn(log_sink, NULL);
    CU_ASSERT_EQUAL(spc_attach("/nonexistent-dir/spand.sock"), -ENOENT);
    CU_ASSERT_PTR_NOT_NULL(strstr(logged, "/nonexistent-dir/spand.sock"));
    char longpath[300];
    memset(longpath, 'a', sizeof longpath - 1);
    longpath[sizeof longpath - 1] = '\0';
    CU_ASSERT_EQUAL(spc_attach(longpath), -ENAMETOOLONG);
    spc_set_log_fn(NULL, NULL);
    CU_ASSERT_EQUAL(spc_attach(NULL), 0);                 /* $SPAND_SOCKET */
    CU_ASSERT_EQUAL(spc_attach(NULL), 0);                 /* harmless again */
    CU_ASSERT_EQUAL(spc_attach("/nonexistent-dir/x"), 0); /* attached: nothing to do */
    CU_ASSERT(ct_client_spans(daemon_->sock, getpid()) >= 0);
}

/* ---- a daemon that answers Hello wrongly ---- */

/* What the fake daemon does with the Hello of each connection, in order. */
enum {
    FAKE_OLD_PROTOCOL,          /* a HelloReply of another protocol version */
    FAKE_NO_FD,                 /* a right HelloReply, but no arena fd */
    FAKE_NOT_ARENA,             /* a right HelloReply with the fd of a file of zeros */
    FAKE_GARBAGE,               /* a frame that does not decode */
    FAKE_BIG_FRAME,             /* a length over the limit */
    FAKE_WRONG_ID,              /* an answer to another request */
    FAKE_REFUSED,               /* error ENOSPC, with a message */
    FAKE_HANG_UP,               /* closes without answering */
    FAKE_N
};

typedef struct fake_s {
    int lfd;                    /* listening socket */
    int zeros;                  /* fd of a file of zeros */
} fake_t;

/* Send frame bytes, with `fd` attached when >= 0. */
static void fake_send(int s, const void *buf, size_t len, int fd)
{
    union {
        char buf[CMSG_SPACE(sizeof(int))];
        struct cmsghdr align;
    } cm;
    struct iovec iov = { .iov_base = (void *)buf, .iov_len = len };
    struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1 };
    if (fd >= 0) {
        memset(&cm, 0, sizeof cm);
        mh.msg_control = cm.buf;
        mh.msg_controllen = sizeof cm.buf;
        struct cmsghdr *h = CMSG_FIRSTHDR(&mh);
        h->cmsg_level = SOL_SOCKET;
        h->cmsg_type = SCM_RIGHTS;
        h->cmsg_len = CMSG_LEN(sizeof(int));
        memcpy(CMSG_DATA(h), &fd, sizeof fd);
    }
    if (sendmsg(s, &mh, MSG_NOSIGNAL) != (ssize_t)len)
        perror("fake daemon: sendmsg");
}

/* Answer `resp` as one frame. */
static void fake_answer(int s, Spand__Response *resp, int fd)
{
    uint8_t buf[256];
    size_t n = spand__response__get_packed_size(resp);
    if (n + SPAND_FRAME_HDR > sizeof buf)
        return;
    spand_frame_put_len(buf, (uint32_t)n);
    spand__response__pack(resp, buf + SPAND_FRAME_HDR);
    fake_send(s, buf, SPAND_FRAME_HDR + n, fd);
}

/* The fake daemon: one connection per case, in order. */
static void *fake_daemon(void *arg)
{
    fake_t *f = arg;
    struct timeval tv = { 10, 0 };     /* a test that goes wrong fails, never hangs */
    setsockopt(f->lfd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);    /* accept too */
    for (int k = 0; k < FAKE_N; k++) {
        int s = accept(f->lfd, NULL, NULL);
        if (s < 0)
            break;
        setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
        uint8_t hdr[SPAND_FRAME_HDR], body[512];
        Spand__Request *req = NULL;
        if (ct_read_all(s, hdr, sizeof hdr) && spand_frame_get_len(hdr) <= sizeof body &&
            ct_read_all(s, body, spand_frame_get_len(hdr)))
            req = spand__request__unpack(NULL, spand_frame_get_len(hdr), body);
        uint64_t id = req ? req->id : 0;
        if (req)
            spand__request__free_unpacked(req, NULL);
        Spand__HelloReply h = SPAND__HELLO_REPLY__INIT;
        h.protocol_version = SPAND_PROTOCOL_VERSION;
        h.layout_version = SHM_LAYOUT_VERSION;
        h.arena_size = 1 << 20;
        h.base_address = ARENA_BASE;
        h.session_id = 1;
        h.page_size = SHM_PAGE_SIZE;
        Spand__Response resp = SPAND__RESPONSE__INIT;
        resp.id = id;
        resp.body_case = SPAND__RESPONSE__BODY_HELLO;
        resp.hello = &h;
        switch (k) {
        case FAKE_OLD_PROTOCOL:
            h.protocol_version = SPAND_PROTOCOL_VERSION + 1;
            fake_answer(s, &resp, f->zeros);
            break;
        case FAKE_NO_FD:
            fake_answer(s, &resp, -1);
            break;
        case FAKE_NOT_ARENA:
            fake_answer(s, &resp, f->zeros);
            break;
        case FAKE_GARBAGE: {
            const uint8_t junk[] = { 0, 0, 0, 5, 0xff, 0xff, 0xff, 0xff, 0xff };
            fake_send(s, junk, sizeof junk, -1);
            break;
        }
        case FAKE_BIG_FRAME: {
            uint8_t big[SPAND_FRAME_HDR];
            spand_frame_put_len(big, SPAND_MAX_FRAME + 1);
            fake_send(s, big, sizeof big, -1);
            break;
        }
        case FAKE_WRONG_ID:
            resp.id = id + 1;
            fake_answer(s, &resp, f->zeros);
            break;
        case FAKE_REFUSED:
            resp.body_case = SPAND__RESPONSE__BODY__NOT_SET;
            resp.error = ENOSPC;
            resp.message = "no session slot left";
            fake_answer(s, &resp, -1);
            break;
        default:                /* FAKE_HANG_UP */
            break;
        }
        /* wait for the client to hang up (it must, on every case but the
         * last, where we hang up first) */
        char c;
        while (k != FAKE_HANG_UP && read(s, &c, 1) > 0)
            ;
        close(s);
    }
    return NULL;
}

/* Every message the library logs, in order (the last one alone would be
 * "the connection broke" for most of the cases below). */
static char fake_logged[2048];
static void fake_log(const char *msg, void *arg)
{
    (void)arg;
    size_t n = strlen(fake_logged);
    snprintf(fake_logged + n, sizeof fake_logged - n, "%s|", msg);
}

/* Every wrong answer to Hello fails spc_attach with a clear error and a
 * logged reason, leaves nothing attached (nothing is mapped at the arena's
 * address) and never hangs; the process attaches to a real daemon after. */
static void test_attach_bad_daemon(void)
{
    spc_detach();
    char dir[] = "/tmp/spandfake.XXXXXX", path[64], zpath[64];
    CU_ASSERT_FATAL(mkdtemp(dir) != NULL);
    snprintf(path, sizeof path, "%s/spand.sock", dir);
    snprintf(zpath, sizeof zpath, "%s/zeros", dir);
    fake_t f;
    f.zeros = open(zpath, O_RDWR | O_CREAT | O_TRUNC, 0600);
    CU_ASSERT_FATAL(f.zeros >= 0 && ftruncate(f.zeros, 1 << 20) == 0);
    f.lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    snprintf(sa.sun_path, sizeof sa.sun_path, "%s", path);
    CU_ASSERT_FATAL(f.lfd >= 0 && bind(f.lfd, (struct sockaddr *)&sa, sizeof sa) == 0 &&
                    listen(f.lfd, 8) == 0);
    pthread_t th;
    CU_ASSERT_FATAL(pthread_create(&th, NULL, fake_daemon, &f) == 0);

    static const struct {
        int rc;
        const char *logged;
    } want[FAKE_N] = {
        [FAKE_OLD_PROTOCOL] = { -EPROTO, "spand speaks protocol" },
        [FAKE_NO_FD] = { -EPROTO, "without the arena's file descriptor" },
        [FAKE_NOT_ARENA] = { -EPROTO, "not a spand arena" },
        [FAKE_GARBAGE] = { -EPROTO, "does not decode" },
        [FAKE_BIG_FRAME] = { -EPROTO, "sent a frame of" },
        [FAKE_WRONG_ID] = { -EPROTO, "wrong id" },
        [FAKE_REFUSED] = { -ENOSPC, "no session slot left" },
        [FAKE_HANG_UP] = { -ECONNRESET, "" },
    };
    spc_set_log_fn(fake_log, NULL);
    for (int k = 0; k < FAKE_N; k++) {
        fake_logged[0] = '\0';
        int rc = spc_attach(path);
        CU_ASSERT_EQUAL(rc, want[k].rc);
        CU_ASSERT(strstr(fake_logged, want[k].logged) != NULL);
        if (rc != want[k].rc || strstr(fake_logged, want[k].logged) == NULL)
            fprintf(stderr, "fake daemon case %d: spc_attach %d (%s), logged \"%s\"\n", k,
                    rc, strerror(-rc), fake_logged);
        /* nothing mapped where the arena would be */
        CU_ASSERT(msync((void *)ARENA_BASE, SHM_PAGE_SIZE, MS_ASYNC) != 0 && errno == ENOMEM);
    }
    spc_set_log_fn(NULL, NULL);
    pthread_join(th, NULL);
    close(f.lfd);
    close(f.zeros);
    unlink(path);
    unlink(zpath);
    rmdir(dir);

    /* and the real daemon is fine to attach to */
    CU_ASSERT_EQUAL(spc_attach(NULL), 0);
    void *p = spc_malloc(64);
    CU_ASSERT_PTR_NOT_NULL(p);
    spc_free(p);
}

/* detach, then re-attach lazily from spc_malloc */
static void test_detach_lazy_attach(void)
{
    void *p = spc_malloc(100);
    CU_ASSERT_PTR_NOT_NULL_FATAL(p);
    CU_ASSERT(ct_client_spans(daemon_->sock, getpid()) > 0);
    spc_free(p);
    spc_detach();
    CU_ASSERT_EQUAL(ct_client_spans(daemon_->sock, getpid()), -1);
    spc_detach();                                          /* harmless */
    p = spc_malloc(100);
    CU_ASSERT_PTR_NOT_NULL_FATAL(p);
    CU_ASSERT(ct_client_spans(daemon_->sock, getpid()) > 0);
    fill(p, 100);
    CU_ASSERT(check(p, 100));
    spc_free(p);
}

/* The arena's address is taken in this process: -EEXIST, no relocation. */
static void test_attach_address_taken(void)
{
    pid_t pid = fork();
    CU_ASSERT_FATAL(pid >= 0);
    if (pid == 0) {
        spc_detach();               /* the child's copy of the mapping goes */
        void *m = mmap((void *)ARENA_BASE, 1 << 20, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS |
                       MAP_FIXED_NOREPLACE, -1, 0);
        if (m != (void *)ARENA_BASE)
            _exit(2);
        int rc = spc_attach(NULL);
        void *p = spc_malloc(10);
        _exit(rc == -EEXIST && p == NULL && errno == ENOTCONN ? 0 : 1);
    }
    int st;
    CU_ASSERT_EQUAL(dh_reap(pid, &st, 10000), 0);
    CU_ASSERT(WIFEXITED(st) && WEXITSTATUS(st) == 0);
}

static const size_t sizes[] = {
    0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 12, 15, 16, 17, 24, 31, 32, 33, 100, 128, 129, 1000,
    1024, 1025, 2048, 4096, 5000, 8192, 10000, 20000, 32767, 32768, 32769, 65536, 100000,
    1 << 20, (3 << 20) + 5,
};
#define NSIZES (sizeof sizes / sizeof sizes[0])

static void test_malloc_sizes(void)
{
    enum { N = 40 };
    static void *objs[NSIZES][N];
    for (size_t k = 0; k < NSIZES; k++) {
        size_t n = sizes[k];
        size_t align = n >= 8 ? 8 : n <= 1 ? 1 : n <= 2 ? 2 : 4;
        for (int i = 0; i < N; i++) {
            void *p = objs[k][i] = spc_malloc(n);
            CU_ASSERT_PTR_NOT_NULL_FATAL(p);
            CU_ASSERT_EQUAL((uintptr_t)p % align, 0);
            CU_ASSERT(spc_usable_size(p) >= (n ? n : 1));
            CU_ASSERT(spc_pointer(spc_offset(p)) == p);
            fill(p, n);
        }
    }
    /* nothing overlaps: every object still holds its own pattern */
    for (size_t k = 0; k < NSIZES; k++)
        for (int i = 0; i < N; i++)
            CU_ASSERT(check(objs[k][i], sizes[k]));
    for (size_t k = 0; k < NSIZES; k++)
        for (int i = 0; i < N; i++)
            spc_free(objs[k][i]);
}

static void test_malloc_zero(void)
{
    void *a = spc_malloc(0), *b = spc_malloc(0);
    CU_ASSERT_PTR_NOT_NULL(a);
    CU_ASSERT_PTR_NOT_NULL(b);
    CU_ASSERT(a != b);
    CU_ASSERT(spc_usable_size(a) >= 1);
    spc_free(a);
    spc_free(b);
    spc_free(NULL);                 /* does nothing */
    CU_ASSERT_EQUAL(spc_usable_size(NULL), 0);
}

static void test_huge(void)
{
    void *keep = spc_malloc(100);
    CU_ASSERT_PTR_NOT_NULL_FATAL(keep);
    fill(keep, 100);
    const size_t huge[] = { SIZE_MAX, SIZE_MAX / 2, (size_t)1 << 40, (size_t)300 << 20 };
    for (size_t k = 0; k < sizeof huge / sizeof huge[0]; k++) {
        errno = 0;
        CU_ASSERT_PTR_NULL(spc_malloc(huge[k]));
        CU_ASSERT_EQUAL(errno, ENOMEM);
        errno = 0;
        CU_ASSERT_PTR_NULL(spc_aligned_alloc(1 << 20, huge[k]));
        CU_ASSERT_EQUAL(errno, ENOMEM);
        errno = 0;
        CU_ASSERT_PTR_NULL(spc_realloc(keep, huge[k]));
        CU_ASSERT_EQUAL(errno, ENOMEM);
        CU_ASSERT(check(keep, 100));    /* realloc failed: p untouched */
    }
    errno = 0;
    CU_ASSERT_PTR_NULL(spc_calloc(SIZE_MAX / 2, 4));   /* n * size overflows */
    CU_ASSERT_EQUAL(errno, ENOMEM);
    errno = 0;
    CU_ASSERT_PTR_NULL(spc_calloc((size_t)1 << 33, (size_t)1 << 33));
    CU_ASSERT_EQUAL(errno, ENOMEM);
    spc_free(keep);

    /* the arena fills up: the daemon says ENOMEM, and everything allocated
     * before is intact and can be freed */
    enum { MAXN = 64 };
    void *big[MAXN];
    int n = 0;
    errno = 0;
    while (n < MAXN && (big[n] = spc_malloc((size_t)16 << 20)) != NULL) {
        ((uint8_t *)big[n])[0] = (uint8_t)n;
        ((uint8_t *)big[n])[(16 << 20) - 1] = (uint8_t)n;
        n++;
    }
    CU_ASSERT(n > 4 && n < MAXN);
    CU_ASSERT_EQUAL(errno, ENOMEM);
    for (int i = 0; i < n; i++) {
        CU_ASSERT(((uint8_t *)big[i])[0] == (uint8_t)i);
        CU_ASSERT(((uint8_t *)big[i])[(16 << 20) - 1] == (uint8_t)i);
        spc_free(big[i]);
    }
    void *again = spc_malloc((size_t)16 << 20);      /* the room came back */
    CU_ASSERT_PTR_NOT_NULL(again);
    spc_free(again);
}

static void test_aligned(void)
{
    static const size_t asizes[] = { 1, 8, 24, 100, 3000, 5000, 40000 };
    enum { NA = sizeof asizes / sizeof asizes[0] };
    void *objs[21][NA];
    for (int s = 0; s <= 20; s++) {             /* 1 B .. 1 MiB */
        size_t align = (size_t)1 << s;
        for (int k = 0; k < NA; k++) {
            void *p = objs[s][k] = spc_aligned_alloc(align, asizes[k]);
            CU_ASSERT_PTR_NOT_NULL_FATAL(p);
            CU_ASSERT_EQUAL((uintptr_t)p % align, 0);
            CU_ASSERT(spc_usable_size(p) >= asizes[k]);
            fill(p, asizes[k]);
        }
    }
    for (int s = 0; s <= 20; s++)
        for (int k = 0; k < NA; k++) {
            CU_ASSERT(check(objs[s][k], asizes[k]));
            spc_free(objs[s][k]);
        }
    const size_t bad[] = { 0, 3, 24, 1000, ((size_t)1 << 20) + 1 };
    for (size_t k = 0; k < sizeof bad / sizeof bad[0]; k++) {
        errno = 0;
        CU_ASSERT_PTR_NULL(spc_aligned_alloc(bad[k], 64));
        CU_ASSERT_EQUAL(errno, EINVAL);
    }
    void *z = spc_aligned_alloc(64, 0);
    CU_ASSERT_PTR_NOT_NULL(z);
    CU_ASSERT_EQUAL((uintptr_t)z % 64, 0);
    spc_free(z);
}

static void test_realloc(void)
{
    static const size_t steps[] = { 1, 2, 3, 5, 8, 9, 16, 17, 100, 1000, 4000, 32768, 32769,
                                    50000, 100000, 1 << 20, (5 << 20) + 3 };
    enum { NS = sizeof steps / sizeof steps[0] };
    uint8_t *p = spc_realloc(NULL, 1);        /* realloc(NULL) is malloc */
    CU_ASSERT_PTR_NOT_NULL_FATAL(p);
    p[0] = 3;                                 /* the pattern j * 7 + 3 */
    size_t have = 1;
    /* grow through tiny, small and large, then shrink back */
    for (int pass = 0; pass < 2; pass++) {
        for (int k = 1; k < NS; k++) {
            size_t n = steps[pass == 0 ? k : NS - 1 - k];
            uint8_t *q = spc_realloc(p, n);
            CU_ASSERT_PTR_NOT_NULL_FATAL(q);
            CU_ASSERT(spc_usable_size(q) >= n);
            size_t keep = have < n ? have : n;
            bool same = true;
            for (size_t j = 0; j < keep; j++)
                same &= q[j] == (uint8_t)(j * 7 + 3);
            CU_ASSERT(same);
            for (size_t j = 0; j < n; j++)
                q[j] = (uint8_t)(j * 7 + 3);
            p = q;
            have = n;
        }
    }
    spc_free(p);
    /* same class: in place */
    void *a = spc_malloc(20);
    CU_ASSERT_PTR_EQUAL(spc_realloc(a, 24), a);
    CU_ASSERT_PTR_EQUAL(spc_realloc(a, 17), a);
    void *t = spc_malloc(3);                  /* tiny, 4-byte granule */
    CU_ASSERT_PTR_EQUAL(spc_realloc(t, 4), t);
    void *l = spc_malloc(100000);
    CU_ASSERT_PTR_EQUAL(spc_realloc(l, 90000), l);
    /* size 0 frees */
    CU_ASSERT_PTR_NULL(spc_realloc(a, 0));
    CU_ASSERT_PTR_NULL(spc_realloc(t, 0));
    CU_ASSERT_PTR_NULL(spc_realloc(l, 0));
}

static void test_calloc(void)
{
    enum { N = 2000 };
    static void *objs[N];
    static const size_t csizes[] = { 5, 64, 1000, 20000, 70000 };
    for (size_t k = 0; k < sizeof csizes / sizeof csizes[0]; k++) {
        size_t sz = csizes[k];
        int n = sz > 10000 ? 20 : N;
        for (int i = 0; i < n; i++) {
            objs[i] = spc_malloc(sz);
            CU_ASSERT_PTR_NOT_NULL_FATAL(objs[i]);
            memset(objs[i], 0xa5, sz);
        }
        for (int i = 0; i < n; i++)
            spc_free(objs[i]);
        /* the spare room of the last Refill comes first: go on past n until
         * the freed objects come back (a Refill batch is at most 4,096
         * objects' worth, so 4 * N objects reach them at every size) */
        int reused = 0, nz = 0;
        static void *z[4 * N];
        for (int i = 0; i < n || (sz <= 10000 && reused < 50 && i < 4 * N); i++, nz++) {
            uint8_t *p = z[i] = spc_calloc(1, sz);
            CU_ASSERT_PTR_NOT_NULL_FATAL(p);
            bool zero = true;
            for (size_t j = 0; j < sz; j++)
                zero &= p[j] == 0;
            CU_ASSERT(zero);
            for (int m = 0; m < n && sz <= 10000; m++)
                if (objs[m] == p) {
                    reused++;
                    break;
                }
        }
        if (sz <= 10000)        /* the test did look at recycled memory */
            CU_ASSERT(reused >= 50);
        for (int i = 0; i < nz; i++)
            spc_free(z[i]);
    }
    uint8_t *c = spc_calloc(3, 5);
    CU_ASSERT_PTR_NOT_NULL(c);
    spc_free(c);
}

static void test_usable_size(void)
{
    static const struct { size_t req, usable; } t[] = {
        { 0, 1 }, { 1, 1 }, { 2, 2 }, { 3, 4 }, { 4, 4 }, { 5, 8 }, { 8, 8 }, { 9, 16 },
        { 15, 16 }, { 16, 16 }, { 17, 24 }, { 100, 104 }, { 1000, 1024 },
        { 32768, 32768 }, { 40000, 40960 },
    };
    for (size_t k = 0; k < sizeof t / sizeof t[0]; k++) {
        void *p = spc_malloc(t[k].req);
        CU_ASSERT_PTR_NOT_NULL_FATAL(p);
        CU_ASSERT_EQUAL(spc_usable_size(p), t[k].usable);
        if (spc_usable_size(p) != t[k].usable)
            fprintf(stderr, "usable(%zu) = %zu\n", t[k].req, spc_usable_size(p));
        spc_free(p);
    }
    int x;
    errno = 0;
    CU_ASSERT_EQUAL(spc_usable_size(&x), 0);
    CU_ASSERT_EQUAL(errno, EINVAL);
}

static void test_offset_pointer(void)
{
    CU_ASSERT_EQUAL(spc_offset(NULL), 0);
    CU_ASSERT_PTR_NULL(spc_pointer(0));
    void *p = spc_malloc(48);
    CU_ASSERT_PTR_NOT_NULL_FATAL(p);
    uint64_t off = spc_offset(p);
    CU_ASSERT(off != 0);
    CU_ASSERT_EQUAL((uintptr_t)p - off, ARENA_BASE);
    CU_ASSERT_PTR_EQUAL(spc_pointer(off), p);
    int x;
    errno = 0;
    CU_ASSERT_EQUAL(spc_offset(&x), 0);
    CU_ASSERT_EQUAL(errno, EINVAL);
    errno = 0;
    CU_ASSERT_PTR_NULL(spc_pointer(1ULL << 40));
    CU_ASSERT_EQUAL(errno, EINVAL);
    errno = 0;
    CU_ASSERT_PTR_NULL(spc_pointer(8));              /* the header, not objects */
    CU_ASSERT_EQUAL(errno, EINVAL);
    spc_free(p);
}

/* Run `what` in a child with stderr into a pipe; it must abort (SIGABRT)
 * with a message naming the pointer it printed first ("ptr=%p") and
 * containing `reason`. */
static void expect_abort(void (*what)(void), const char *reason)
{
    int fds[2];
    CU_ASSERT_FATAL(pipe(fds) == 0);
    pid_t pid = fork();
    CU_ASSERT_FATAL(pid >= 0);
    if (pid == 0) {
        struct rlimit no_core = { 0, 0 };
        setrlimit(RLIMIT_CORE, &no_core);
        close(fds[0]);
        dup2(fds[1], STDERR_FILENO);
        what();
        _exit(0);                   /* did not abort */
    }
    close(fds[1]);
    char out[2048];
    size_t n = 0;
    ssize_t r;
    while (n < sizeof out - 1 && (r = read(fds[0], out + n, sizeof out - 1 - n)) > 0)
        n += (size_t)r;
    out[n] = '\0';
    close(fds[0]);
    int st = 0;
    CU_ASSERT_EQUAL(dh_reap(pid, &st, 10000), 0);
    CU_ASSERT(WIFSIGNALED(st) && WTERMSIG(st) == SIGABRT);
    char ptr[64] = "";
    const char *at = strstr(out, "ptr=");
    if (at)
        sscanf(at + 4, "%63s", ptr);
    const char *msg = strstr(out, "spanclient: ");
    CU_ASSERT_PTR_NOT_NULL(at);
    CU_ASSERT_PTR_NOT_NULL(msg);
    CU_ASSERT(msg && ptr[0] && strstr(msg, ptr) != NULL);
    CU_ASSERT(msg && strstr(msg, reason) != NULL);
    if (!msg || !ptr[0] || !strstr(msg, ptr) || !strstr(msg, reason))
        fprintf(stderr, "child said: %s", out);
}

static void say_ptr(const void *p)
{
    fprintf(stderr, "ptr=%p\n", p);
    fflush(stderr);
}

static void bogus_outside(void)
{
    int x;
    say_ptr(&x);
    spc_free(&x);
}

static void bogus_misaligned(void)
{
    char *p = spc_malloc(64);
    say_ptr(p + 8);
    spc_free(p + 8);
}

static void bogus_double_small(void)
{
    void *p = spc_malloc(64);
    say_ptr(p);
    spc_free(p);
    spc_free(p);
}

static void bogus_double_large(void)
{
    void *p = spc_malloc(100000);
    say_ptr(p);
    spc_free(p);
    spc_free(p);
}

static void bogus_inside_large(void)
{
    char *p = spc_malloc(100000);
    say_ptr(p + 4096);
    spc_free(p + 4096);
}

static void bogus_tiny_misaligned(void)
{
    char *p = spc_malloc(4);        /* a 4-byte granule: p + 1 is no piece */
    say_ptr(p + 1);
    spc_free(p + 1);
}

static void bogus_realloc(void)
{
    char *p = spc_malloc(200);
    say_ptr(p + 16);
    spc_realloc(p + 16, 400);
}

static void bogus_metadata(void)
{
    void *p = (void *)(uintptr_t)(ARENA_BASE + 4096);   /* the arena header */
    say_ptr(p);
    spc_free(p);
}

/* Two remote frees of one object: the second is caught when the holder
 * drains the span's remote-free stack. */
static void *free_twice(void *p)
{
    spc_free(p);
    spc_free(p);
    return NULL;
}

/* Objects in a span of the class that serves `size` bytes, from the
 * daemon's class table (Stats); 0 if the daemon does not answer. */
static uint32_t span_objects(size_t size)
{
    Spand__StatsRequest body = SPAND__STATS_REQUEST__INIT;
    body.classes = true;
    Spand__Request req = SPAND__REQUEST__INIT;
    req.body_case = SPAND__REQUEST__BODY_STATS;
    req.stats = &body;
    Spand__Response *r = ct_call(daemon_->sock, &req);
    uint32_t best = 0, n = 0;
    for (size_t i = 0; r && r->body_case == SPAND__RESPONSE__BODY_STATS &&
                       i < r->stats->n_classes; i++) {
        const Spand__ClassStats *k = r->stats->classes[i];
        if (k->size >= size && (best == 0 || k->size < best) && k->size > 0) {
            best = k->size;
            n = (uint32_t)((uint64_t)k->npages * SHM_PAGE_SIZE / k->size);
        }
    }
    if (r)
        spand__response__free_unpacked(r, NULL);
    return n;
}

static uint32_t remote_double_allocs;   /* 8 spans' worth of 64 B objects */

static void bogus_remote_double(void)
{
    void *p = spc_malloc(64);
    say_ptr(p);
    pthread_t th;
    pthread_create(&th, NULL, free_twice, p);
    pthread_join(th, NULL);
    for (uint32_t i = 0; i < remote_double_allocs; i++)   /* until the holder drains its stack */
        spc_malloc(64);
}

static void *free_once(void *p)
{
    spc_free(p);
    return NULL;
}

/* A remote free of an object whose first remote free was pushed and drained
 * already: the bit is clear when the second free's batch is pushed (at the
 * latest when its thread exits), and the freeing process aborts, not the
 * holder. */
static void bogus_remote_double_drained(void)
{
    void *p = spc_malloc(64);
    say_ptr(p);
    pthread_t th;
    pthread_create(&th, NULL, free_once, p);    /* pushed when the thread exits */
    pthread_join(th, NULL);
    /* the holder fills its spans, drains p's stack and may hand p out again:
     * freeing all it took leaves p free, its bit clear */
    void **q = malloc(remote_double_allocs * sizeof *q);
    for (uint32_t i = 0; i < remote_double_allocs; i++)
        q[i] = spc_malloc(64);
    for (uint32_t i = 0; i < remote_double_allocs; i++)
        spc_free(q[i]);
    free(q);
    pthread_create(&th, NULL, free_once, p);
    pthread_join(th, NULL);
}

/* A thread frees 32 objects in address order (a full batch of one run,
 * pushed as one record: client/free.c), one of which another thread freed
 * before and the holder has drained: the run's bits, tested a word at a
 * time, are not all set, and the object freed twice is the one named. */
typedef struct in_run_s {
    char **q;
    uint32_t n;
} in_run_t;

static void *free_run(void *arg)
{
    const in_run_t *r = arg;
    for (uint32_t k = 0; k < r->n; k++)
        spc_free(r->q[k]);
    return NULL;
}

static void bogus_remote_double_in_run(void)
{
    uint32_t n = remote_double_allocs;
    char **q = malloc(n * sizeof *q);
    for (uint32_t i = 0; i < n; i++)
        q[i] = spc_malloc(64);
    /* 32 objects one after another from the start of a page: one span's */
    uint32_t at = n;
    for (uint32_t i = 0; i + 32 <= n && at == n; i++) {
        if ((uintptr_t)q[i] % 4096 != 0)
            continue;
        uint32_t k = 1;
        while (k < 32 && q[i + k] == q[i] + 64 * k)
            k++;
        if (k == 32)
            at = i;
    }
    if (at == n) {
        fprintf(stderr, "no 32 consecutive objects from a page's start\n");
        return;                 /* exits without aborting: the test fails */
    }
    char *twice = q[at + 5];
    say_ptr(twice);
    pthread_t th;
    pthread_create(&th, NULL, free_once, twice);   /* pushed when it exits */
    pthread_join(th, NULL);
    void **v = malloc(n * sizeof *v);               /* drains twice's stack */
    for (uint32_t i = 0; i < n; i++)
        v[i] = spc_malloc(64);
    for (uint32_t i = 0; i < n; i++)
        spc_free(v[i]);
    free(v);
    in_run_t r = { q + at, 32 };
    pthread_create(&th, NULL, free_run, &r);
    pthread_join(th, NULL);
}

/* A double free that waits in a thread's batch while the span it names is
 * emptied, given back to the heap and cut again (for another class).  The
 * batch's shape is that of the old span: the thread must not take the
 * batch's shortcut for an object of the new span, nor push the old indices
 * onto the descriptor; it aborts, naming the object it freed twice. */
#define RECUT_SIZE 2816u        /* a class no other test keeps objects of */
static uint32_t recut_allocs;   /* 8 spans' worth of RECUT_SIZE objects */

typedef struct recut_s {
    void *p;                    /* holder: the object freed twice */
    void *q;                    /* main: an object cut after p's span went back */
    pthread_barrier_t drained;  /* holder, stale freer, main: p is free again */
    pthread_barrier_t waiting;  /* stale freer, main: its free of p waits */
    pthread_barrier_t recut;    /* stale freer, main: q is allocated */
} recut_t;

static void *recut_holder(void *arg)
{
    recut_t *r = arg;
    r->p = spc_malloc(RECUT_SIZE);
    say_ptr(r->p);
    pthread_t th;
    pthread_create(&th, NULL, free_once, r->p);   /* pushed when it exits */
    pthread_join(th, NULL);
    void **v = malloc(recut_allocs * sizeof *v);
    for (uint32_t i = 0; i < recut_allocs; i++)   /* drains p's stack */
        v[i] = spc_malloc(RECUT_SIZE);
    for (uint32_t i = 0; i < recut_allocs; i++)
        spc_free(v[i]);
    free(v);
    pthread_barrier_wait(&r->drained);
    pthread_barrier_wait(&r->waiting);
    return NULL;                /* exits: its empty spans go back to the heap */
}

static void *recut_stale_freer(void *arg)
{
    recut_t *r = arg;
    spc_free(spc_malloc(200));  /* a thread cache: remote frees wait in it */
    pthread_barrier_wait(&r->drained);
    spc_free(r->p);             /* free already: waits in this thread's batch */
    pthread_barrier_wait(&r->waiting);
    pthread_barrier_wait(&r->recut);
    spc_free(r->q);
    return NULL;                /* exits: its batches are pushed */
}

static void bogus_remote_double_recut(void)
{
    static recut_t r;
    pthread_barrier_init(&r.drained, NULL, 3);
    pthread_barrier_init(&r.waiting, NULL, 3);
    pthread_barrier_init(&r.recut, NULL, 2);
    pthread_t h, f;
    pthread_create(&h, NULL, recut_holder, &r);
    pthread_create(&f, NULL, recut_stale_freer, &r);
    pthread_barrier_wait(&r.drained);
    pthread_barrier_wait(&r.waiting);
    pthread_join(h, NULL);
    for (int i = 0; i < 256; i++)  /* cut 1 KiB spans from the pages given back */
        r.q = spc_malloc(1024);
    pthread_barrier_wait(&r.recut);
    pthread_join(f, NULL);
}

/* A thread frees p, which opens its batch for p's span, then a pointer
 * inside another object of that span: the batch's shortcut must not take
 * it (spci_free_other). */
static void *free_then_inside(void *arg)
{
    char **v = arg;
    spc_free(v[0]);
    spc_free(v[1] + 8);
    return NULL;
}

static void bogus_remote_misaligned(void)
{
    char *v[2] = { spc_malloc(64), spc_malloc(64) };
    say_ptr(v[1] + 8);
    pthread_t th;
    pthread_create(&th, NULL, free_then_inside, v);
    pthread_join(th, NULL);
}

static void test_bogus_frees(void)
{
    uint32_t per_span = span_objects(64);
    CU_ASSERT_FATAL(per_span > 0);
    remote_double_allocs = 8 * per_span;
    recut_allocs = 8 * span_objects(RECUT_SIZE);
    CU_ASSERT_FATAL(recut_allocs > 0);
    expect_abort(bogus_remote_double, "double free");
    expect_abort(bogus_remote_double_drained, "double free");
    expect_abort(bogus_remote_double_in_run, "double free");
    expect_abort(bogus_outside, "not a pointer into the arena");
    expect_abort(bogus_metadata, "not a pointer into the arena");
    expect_abort(bogus_misaligned, "not the start of an object");
    expect_abort(bogus_remote_misaligned, "not the start of an object");
    expect_abort(bogus_remote_double_recut, "emptied and reused");
    expect_abort(bogus_double_small, "double free");
    expect_abort(bogus_double_large, "double free");
    expect_abort(bogus_inside_large, "not the start of an object");
    expect_abort(bogus_tiny_misaligned, "not the start of an object");
    expect_abort(bogus_realloc, "spc_realloc(");
}

/* ---- suites "large pool": freed large objects kept in the arena ---- */

#define PSZ (256u * 1024)            /* 32 pages: a bucket of the pool */

/* What Stats says about large objects and the heap. */
typedef struct pstats_s {
    uint64_t large_allocs, large_frees;   /* the heap's counters */
    uint64_t alloc_calls;                 /* AllocLarge requests */
    uint64_t large_bytes, pool_bytes, hits, puts, free_bytes;
} pstats_t;

static bool pool_stats(pstats_t *ps)
{
    Spand__StatsRequest body = SPAND__STATS_REQUEST__INIT;
    Spand__Request req = SPAND__REQUEST__INIT;
    req.body_case = SPAND__REQUEST__BODY_STATS;
    req.stats = &body;
    Spand__Response *r = ct_call(daemon_->sock, &req);
    if (r == NULL || r->body_case != SPAND__RESPONSE__BODY_STATS) {
        if (r)
            spand__response__free_unpacked(r, NULL);
        return false;
    }
    memset(ps, 0, sizeof *ps);
    ps->large_bytes = r->stats->large_bytes;
    ps->pool_bytes = r->stats->large_pool_bytes;
    ps->hits = r->stats->large_pool_hits;
    ps->puts = r->stats->large_pool_puts;
    ps->free_bytes = r->stats->free_bytes;
    for (size_t i = 0; i < r->stats->n_counters; i++) {
        const Spand__Counter *c = r->stats->counters[i];
        if (!strcmp(c->name, "large_allocs"))
            ps->large_allocs = c->value;
        else if (!strcmp(c->name, "large_frees"))
            ps->large_frees = c->value;
        else if (!strcmp(c->name, "large_alloc_calls"))
            ps->alloc_calls = c->value;
    }
    spand__response__free_unpacked(r, NULL);
    return true;
}

static void verify_ok(void)
{
    char msg[256];
    bool ok = ct_verify(daemon_->sock, msg, sizeof msg);
    CU_ASSERT(ok);
    if (!ok)
        fprintf(stderr, "verify: %s\n", msg);
}

/* no scavenger: an idle bucket would be drained between two steps */
static int pool_start(void)
{
    static const char *const args[] = { "-m", "256M", "--scavenge-interval", "0", NULL };
    return daemon_start_with(args);
}

static int pool_1m_start(void)
{
    static const char *const args[] = { "-m", "256M", "--scavenge-interval", "0",
                                        "--large-pool", "1M", NULL };
    return daemon_start_with(args);
}

static int pool_off_start(void)
{
    static const char *const args[] = { "-m", "256M", "--large-pool", "0", NULL };
    return daemon_start_with(args);
}

static int pool_idle_start(void)
{
    static const char *const args[] = { "-m", "256M", "--scavenge-interval", "1", NULL };
    return daemon_start_with(args);
}

/* Free the objects of a free_list_t in a thread of their own, which then
 * exits: the large spans its cache kept go on to the pool. */
typedef struct { void **p; int n; } free_list_t;

static void *free_list_thread(void *arg)
{
    free_list_t *l = arg;
    for (int i = 0; i < l->n; i++)
        spc_free(l->p[i]);
    return NULL;
}

static void free_in_thread(void **p, int n)
{
    free_list_t l = { p, n };
    pthread_t th;
    CU_ASSERT_FATAL(pthread_create(&th, NULL, free_list_thread, &l) == 0);
    pthread_join(th, NULL);
}

/* malloc, free, malloc: the same span, and no AllocLarge for the second:
 * first from the thread's own cache of large spans, then, freed by a thread
 * that exits, from the pool */
static void test_pool_reuse(void)
{
    pstats_t s0, s1, s2, s3;
    CU_ASSERT_EQUAL_FATAL(spc_attach(NULL), 0);
    char *p = spc_malloc(PSZ);
    CU_ASSERT_PTR_NOT_NULL_FATAL(p);
    fill(p, PSZ);
    CU_ASSERT_FATAL(pool_stats(&s0));
    spc_free(p);                                           /* kept by this thread */
    CU_ASSERT_FATAL(pool_stats(&s1));
    CU_ASSERT_EQUAL(s1.pool_bytes, s0.pool_bytes + PSZ);   /* freed, kept for reuse */
    CU_ASSERT_EQUAL(s1.large_bytes, s0.large_bytes - PSZ);
    CU_ASSERT_EQUAL(s1.puts, s0.puts);                     /* not on the pool */
    CU_ASSERT_EQUAL(s1.large_frees, s0.large_frees);       /* no FreeLarge */
    verify_ok();                                           /* a CACHED tag is fine */
    char *q = spc_malloc(PSZ - 100);                       /* same page count */
    CU_ASSERT_PTR_EQUAL(q, p);
    CU_ASSERT(check(q, PSZ - 100));                        /* the same pages */
    CU_ASSERT_EQUAL(spc_usable_size(q), PSZ);
    CU_ASSERT_FATAL(pool_stats(&s2));
    CU_ASSERT_EQUAL(s2.large_allocs, s0.large_allocs);     /* no AllocLarge */
    CU_ASSERT_EQUAL(s2.hits, s0.hits);
    CU_ASSERT_EQUAL(s2.pool_bytes, s0.pool_bytes);
    CU_ASSERT_EQUAL(s2.large_bytes, s0.large_bytes);
    verify_ok();
    void *one[1] = { q };
    free_in_thread(one, 1);                                /* its exit: onto the pool */
    CU_ASSERT_FATAL(pool_stats(&s1));
    CU_ASSERT_EQUAL(s1.puts, s0.puts + 1);
    CU_ASSERT_EQUAL(s1.pool_bytes, s0.pool_bytes + PSZ);
    q = spc_malloc(PSZ);
    CU_ASSERT_PTR_EQUAL(q, p);
    CU_ASSERT(check(q, PSZ - 100));
    CU_ASSERT_FATAL(pool_stats(&s2));
    CU_ASSERT_EQUAL(s2.hits, s0.hits + 1);
    CU_ASSERT_EQUAL(s2.large_allocs, s0.large_allocs);
    CU_ASSERT_EQUAL(s2.pool_bytes, s0.pool_bytes);
    verify_ok();
    /* aligned_alloc up to a page takes it from the cache too; more does not */
    spc_free(q);
    void *r = spc_aligned_alloc(8192, PSZ);
    CU_ASSERT_PTR_EQUAL(r, p);
    spc_free(r);
    void *big = spc_aligned_alloc(65536, PSZ);
    CU_ASSERT_PTR_NOT_NULL(big);
    CU_ASSERT_EQUAL((uintptr_t)big % 65536, 0);
    CU_ASSERT_FATAL(pool_stats(&s3));
    CU_ASSERT_EQUAL(s3.large_allocs, s0.large_allocs + 1);
    CU_ASSERT_EQUAL(s3.pool_bytes, s0.pool_bytes + PSZ);   /* p waits in our cache */
    spc_free(big);
    spc_detach();                   /* no session: Verify walks the pool too */
    verify_ok();
}

/* One process frees, another allocates: no round trip either way */
static void test_pool_cross_process(void)
{
    pstats_t s0, s1, s2;
    CU_ASSERT_EQUAL_FATAL(spc_attach(NULL), 0);
    char *p = spc_malloc(PSZ);
    CU_ASSERT_PTR_NOT_NULL_FATAL(p);
    fill(p, PSZ);
    CU_ASSERT_FATAL(pool_stats(&s0));
    pid_t pid = fork();
    CU_ASSERT_FATAL(pid >= 0);
    if (pid == 0) {
        int bad = !check(p, PSZ);
        spc_free(p);
        spc_detach();
        _exit(bad);
    }
    int st = 0;
    CU_ASSERT_EQUAL(dh_reap(pid, &st, 10000), 0);
    CU_ASSERT(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    CU_ASSERT_FATAL(pool_stats(&s1));
    CU_ASSERT_EQUAL(s1.puts, s0.puts + 1);
    CU_ASSERT_EQUAL(s1.large_frees, s0.large_frees);
    CU_ASSERT_EQUAL(s1.pool_bytes, s0.pool_bytes + PSZ);
    void *q = spc_malloc(PSZ);
    CU_ASSERT_PTR_EQUAL(q, p);
    CU_ASSERT_FATAL(pool_stats(&s2));
    CU_ASSERT_EQUAL(s2.large_allocs, s0.large_allocs);
    CU_ASSERT_EQUAL(s2.hits, s0.hits + 1);
    verify_ok();
    spc_free(q);
    spc_detach();
    verify_ok();
}

/* A thread that allocates only large objects (it never made a small one,
 * so it had no thread cache) takes a whole batch from the pool at its first
 * allocation: one pop, the first span allocated and the rest kept in the
 * cache it now gets; not one span a pop with the rest pushed back (which
 * walked them all at every allocation).  `hits` counts spans popped. */
#define BATCH_SZ (PSZ + 3u * 8192)   /* a bucket no other test uses */
enum { BATCH_N = 9 };                /* a thread keeps 8, the 9th free pushes all */

typedef struct batch_arg_s {
    void *v[BATCH_N];
    pthread_barrier_t step;
} batch_arg_t;

static void *alloc_batch_thread(void *arg)
{
    batch_arg_t *b = arg;
    b->v[0] = spc_malloc(BATCH_SZ);
    pthread_barrier_wait(&b->step);             /* the parent looks */
    pthread_barrier_wait(&b->step);
    for (int i = 1; i < BATCH_N; i++)
        b->v[i] = spc_malloc(BATCH_SZ);
    return NULL;
}

static void test_pool_batch_fresh_thread(void)
{
    pstats_t s0, s1, s2;
    void *v[BATCH_N];
    CU_ASSERT_EQUAL_FATAL(spc_attach(NULL), 0);
    for (int i = 0; i < BATCH_N; i++) {
        v[i] = spc_malloc(BATCH_SZ);
        CU_ASSERT_PTR_NOT_NULL_FATAL(v[i]);
    }
    free_in_thread(v, BATCH_N);                 /* one batch onto the pool */
    CU_ASSERT_FATAL(pool_stats(&s0));
    batch_arg_t b;
    memset(&b, 0, sizeof b);
    CU_ASSERT_FATAL(pthread_barrier_init(&b.step, NULL, 2) == 0);
    pthread_t th;
    CU_ASSERT_FATAL(pthread_create(&th, NULL, alloc_batch_thread, &b) == 0);
    pthread_barrier_wait(&b.step);              /* it allocated one */
    CU_ASSERT(pool_stats(&s1));
    pthread_barrier_wait(&b.step);
    pthread_join(th, NULL);
    pthread_barrier_destroy(&b.step);
    CU_ASSERT_FATAL(pool_stats(&s2));
    CU_ASSERT_PTR_NOT_NULL(b.v[0]);
    CU_ASSERT_EQUAL(s1.hits, s0.hits + BATCH_N);         /* the whole batch at once */
    CU_ASSERT_EQUAL(s2.hits, s1.hits);                   /* the rest from its cache */
    CU_ASSERT_EQUAL(s2.large_allocs, s0.large_allocs);   /* no AllocLarge */
    for (int i = 0; i < BATCH_N; i++) {
        CU_ASSERT_PTR_NOT_NULL(b.v[i]);
        spc_free(b.v[i]);
    }
    spc_detach();
    verify_ok();
}

static void *pooled_ptr;

/* p was freed into the pool by the parent: this free is a double free */
static void bogus_double_pooled(void)
{
    say_ptr(pooled_ptr);
    spc_free(pooled_ptr);
}

/* freed twice by one thread: the first free keeps it in the thread's
 * cache (another size than pooled_ptr, so the pool's span stays there) */
static void bogus_double_pooled_local(void)
{
    void *p = spc_malloc(PSZ + 8192);
    say_ptr(p);
    spc_free(p);
    spc_free(p);
}

static void test_pool_double_free(void)
{
    pstats_t s0, s1;
    CU_ASSERT_EQUAL_FATAL(spc_attach(NULL), 0);
    pooled_ptr = spc_malloc(PSZ);
    CU_ASSERT_PTR_NOT_NULL_FATAL(pooled_ptr);
    void *one[1] = { pooled_ptr };
    free_in_thread(one, 1);                         /* onto the pool */
    CU_ASSERT_FATAL(pool_stats(&s0));
    expect_abort(bogus_double_pooled, "double free of a large object");
    expect_abort(bogus_double_pooled_local, "double free of a large object");
    CU_ASSERT_FATAL(pool_stats(&s1));
    CU_ASSERT_EQUAL(s1.puts, s0.puts);              /* neither child reached the pool */
    /* the second child died with its object in its thread's cache: the
     * daemon freed it when the session ended */
    CU_ASSERT_EQUAL(s1.large_frees, s0.large_frees + 1);
    CU_ASSERT_EQUAL(s1.pool_bytes, s0.pool_bytes);
    /* the pool holds pooled_ptr once */
    void *a = spc_malloc(PSZ), *b = spc_malloc(PSZ);
    CU_ASSERT(a == pooled_ptr || b == pooled_ptr);
    CU_ASSERT(a != b);
    spc_free(a);
    spc_free(b);
    spc_detach();
    verify_ok();
}

/* Scavenge (spanctl release) gives the pool back to the heap */
static void test_pool_scavenge(void)
{
    pstats_t s0, s1, s2;
    enum { N = 6 };
    void *p[N];
    CU_ASSERT_EQUAL_FATAL(spc_attach(NULL), 0);
    CU_ASSERT(ct_scavenge(daemon_->sock));
    for (int i = 0; i < N; i++)
        CU_ASSERT_PTR_NOT_NULL_FATAL(p[i] = spc_malloc(PSZ + (size_t)i * 8192));
    CU_ASSERT_FATAL(pool_stats(&s0));
    CU_ASSERT_EQUAL(s0.pool_bytes, 0);
    free_in_thread(p, N);           /* all on the pool when the thread exits */
    CU_ASSERT_FATAL(pool_stats(&s1));
    uint64_t bytes = 0;
    for (int i = 0; i < N; i++)
        bytes += PSZ + (uint64_t)i * 8192;
    CU_ASSERT_EQUAL(s1.pool_bytes, bytes);
    CU_ASSERT_EQUAL(s1.free_bytes, s0.free_bytes);
    CU_ASSERT(ct_scavenge(daemon_->sock));
    CU_ASSERT_FATAL(pool_stats(&s2));
    CU_ASSERT_EQUAL(s2.pool_bytes, 0);
    CU_ASSERT_EQUAL(s2.free_bytes, s0.free_bytes + bytes);
    CU_ASSERT_EQUAL(s2.large_frees, s1.large_frees + N);
    CU_ASSERT_EQUAL(s2.large_bytes, s0.large_bytes - bytes);
    verify_ok();
    spc_detach();
    verify_ok();
    assert_nothing_live();
}

/* A burst of large allocations of one size, none freed back meanwhile:
 * AllocLarge brings extra spans into the thread's cache (1, 3, then 7 a
 * call), so 40 objects take 8 round trips, not 40; a lone one of another
 * size brings none.  All of it goes back when the thread frees and exits. */
typedef struct { int n; size_t size; void *v[40]; pstats_t before, after; } burst_t;

static void *burst_thread(void *arg)
{
    burst_t *b = arg;
    CU_ASSERT(pool_stats(&b->before));
    for (int i = 0; i < b->n; i++) {
        b->v[i] = spc_malloc(b->size);
        if (b->v[i] != NULL)
            fill(b->v[i], b->size);
    }
    CU_ASSERT(pool_stats(&b->after));
    for (int i = 0; i < b->n; i++)
        CU_ASSERT(b->v[i] != NULL && check(b->v[i], b->size));
    for (int i = 0; i < b->n; i++)
        spc_free(b->v[i]);
    return NULL;
}

static void run_burst(burst_t *b)
{
    pthread_t th;
    CU_ASSERT_FATAL(pthread_create(&th, NULL, burst_thread, b) == 0);
    pthread_join(th, NULL);
}

static void test_large_burst(void)
{
    CU_ASSERT_EQUAL_FATAL(spc_attach(NULL), 0);
    CU_ASSERT(ct_scavenge(daemon_->sock));          /* an empty pool */
    pstats_t s0, s1;
    CU_ASSERT_FATAL(pool_stats(&s0));
    burst_t b = { .n = 40, .size = PSZ };
    run_burst(&b);
    uint64_t calls = b.after.alloc_calls - b.before.alloc_calls;
    uint64_t spans = b.after.large_allocs - b.before.large_allocs;
    CU_ASSERT_EQUAL(calls, 8);                      /* 1 + 2 + 4 + 8 x 5 >= 40 */
    CU_ASSERT_EQUAL(spans, 47);
    CU_ASSERT_EQUAL(b.after.pool_bytes - b.before.pool_bytes, (spans - 40) * PSZ);
    CU_ASSERT_FATAL(pool_stats(&s1));               /* the thread has exited */
    CU_ASSERT_EQUAL(s1.large_bytes, s0.large_bytes);
    /* every span is in the pool or back in the heap */
    CU_ASSERT_EQUAL((s1.pool_bytes - s0.pool_bytes) / PSZ + (s1.large_frees - s0.large_frees),
                    spans);
    verify_ok();
    burst_t lone = { .n = 1, .size = 3 * PSZ };     /* a size the thread never had */
    run_burst(&lone);
    CU_ASSERT_EQUAL(lone.after.alloc_calls - lone.before.alloc_calls, 1);
    CU_ASSERT_EQUAL(lone.after.large_allocs - lone.before.large_allocs, 1);
    spc_detach();
    verify_ok();
}

/* A process killed in a burst, with extra spans in its thread's cache: the
 * daemon frees them when the session ends; the objects it handed out stay
 * allocated until somebody frees them (here the test, from their offsets). */
static void test_large_burst_killed(void)
{
    enum { N = 12 };                /* 1 + 2 + 4 + 8 spans: 3 extras cached */
    CU_ASSERT_EQUAL_FATAL(spc_attach(NULL), 0);
    CU_ASSERT(ct_scavenge(daemon_->sock));
    pstats_t s0, s1, s2;
    CU_ASSERT_FATAL(pool_stats(&s0));
    kid_t k;
    pid_t pid = kid_fork(&k);
    if (pid == 0) {
        uint64_t off[N];
        for (int i = 0; i < N; i++) {
            void *p = spc_malloc(PSZ);
            if (p == NULL)
                _exit(2);
            fill(p, PSZ);
            off[i] = spc_offset(p);
        }
        xwrite(k.up[1], off, sizeof off);
        pause();                                    /* until killed */
        _exit(0);
    }
    uint64_t off[N];
    CU_ASSERT_FATAL(ct_read_all(k.up[0], off, sizeof off));
    CU_ASSERT_FATAL(pool_stats(&s1));
    CU_ASSERT_EQUAL(s1.large_allocs - s0.large_allocs, N + 3);
    CU_ASSERT_EQUAL(s1.pool_bytes, s0.pool_bytes + 3 * PSZ);   /* its cache */
    kill(pid, SIGKILL);
    int st = 0;
    CU_ASSERT_EQUAL(dh_reap(pid, &st, 10000), 0);
    close(k.up[0]), close(k.up[1]), close(k.down[0]), close(k.down[1]);
    long n = 1;
    for (int i = 0; i < 200 && (n = ct_client_sessions(daemon_->sock, pid)) != 0; i++)
        nanosleep(&(struct timespec){ 0, 10 * 1000 * 1000 }, NULL);
    CU_ASSERT_EQUAL(n, 0);
    CU_ASSERT_FATAL(pool_stats(&s2));
    CU_ASSERT_EQUAL(s2.large_frees, s1.large_frees + 3);       /* the extras */
    CU_ASSERT_EQUAL(s2.pool_bytes, s0.pool_bytes);
    CU_ASSERT_EQUAL(s2.large_bytes, s0.large_bytes + N * PSZ); /* still allocated */
    verify_ok();
    for (int i = 0; i < N; i++) {
        char *p = spc_pointer(off[i]);
        CU_ASSERT(p != NULL && check(p, PSZ));
        spc_free(p);
    }
    spc_detach();
    CU_ASSERT_FATAL(pool_stats(&s2));
    CU_ASSERT_EQUAL(s2.large_bytes, s0.large_bytes);
    verify_ok();
}

/* --large-pool 1M: four 256 KiB spans fill it, the rest go to the heap (the
 * five objects, and the extra spans the burst's AllocLarge calls brought
 * into the thread's cache, all flushed at the detach) */
static void test_pool_cap(void)
{
    pstats_t sa, s0, s1;
    enum { N = 5 };
    void *p[N];
    CU_ASSERT_EQUAL_FATAL(spc_attach(NULL), 0);
    CU_ASSERT_FATAL(pool_stats(&sa));
    for (int i = 0; i < N; i++)
        CU_ASSERT_PTR_NOT_NULL_FATAL(p[i] = spc_malloc(PSZ));
    CU_ASSERT_FATAL(pool_stats(&s0));
    uint64_t spans = s0.large_allocs - sa.large_allocs;    /* N, and the extras */
    CU_ASSERT(spans >= N && spans < N + 8);    /* a thread caches at most 8 */
    CU_ASSERT_EQUAL(s0.pool_bytes, sa.pool_bytes + (spans - N) * PSZ);
    for (int i = 0; i < N; i++)
        spc_free(p[i]);
    spc_detach();                   /* reads the answer of the FreeLarge */
    CU_ASSERT_FATAL(pool_stats(&s1));
    CU_ASSERT_EQUAL(s1.pool_bytes, 4 * PSZ);
    CU_ASSERT_EQUAL(s1.puts, s0.puts + 4);
    CU_ASSERT_EQUAL(s1.large_frees, s0.large_frees + spans - 4);
    CU_ASSERT_EQUAL(s1.large_bytes, s0.large_bytes - N * PSZ);
    verify_ok();
    /* 2 MiB objects (256 pages) never go to the pool */
    void *big = spc_malloc(2u << 20);
    CU_ASSERT_PTR_NOT_NULL_FATAL(big);
    spc_free(big);
    spc_detach();
    CU_ASSERT_FATAL(pool_stats(&s0));
    CU_ASSERT_EQUAL(s0.pool_bytes, 4 * PSZ);
    CU_ASSERT_EQUAL(s0.large_frees, s1.large_frees + 1);
    verify_ok();
    assert_nothing_live();
}

/* --large-pool 0: every large object is a round trip, as before */
static void test_pool_off(void)
{
    pstats_t s0, s1;
    CU_ASSERT_EQUAL_FATAL(spc_attach(NULL), 0);
    CU_ASSERT_FATAL(pool_stats(&s0));
    void *p = spc_malloc(PSZ);
    CU_ASSERT_PTR_NOT_NULL_FATAL(p);
    spc_free(p);
    void *q = spc_malloc(PSZ);
    CU_ASSERT_PTR_NOT_NULL_FATAL(q);
    spc_free(q);
    spc_detach();
    CU_ASSERT_FATAL(pool_stats(&s1));
    CU_ASSERT_EQUAL(s1.large_allocs, s0.large_allocs + 2);
    CU_ASSERT_EQUAL(s1.large_frees, s0.large_frees + 2);
    CU_ASSERT_EQUAL(s1.puts, 0);
    CU_ASSERT_EQUAL(s1.hits, 0);
    CU_ASSERT_EQUAL(s1.pool_bytes, 0);
    expect_abort(bogus_double_pooled_local, "double free");
    spc_detach();
    verify_ok();
    assert_nothing_live();
}

/* The scavenger drains a bucket nobody pops from */
static void test_pool_idle_drain(void)
{
    pstats_t s0;
    CU_ASSERT_EQUAL_FATAL(spc_attach(NULL), 0);
    void *p = spc_malloc(PSZ);
    CU_ASSERT_PTR_NOT_NULL_FATAL(p);
    spc_free(p);
    spc_detach();
    bool drained = false;
    for (int i = 0; i < 40 && !drained; i++) {     /* ticks every 0.5 s */
        usleep(100000);
        CU_ASSERT_FATAL(pool_stats(&s0));
        drained = s0.pool_bytes == 0;
    }
    CU_ASSERT(drained);
    CU_ASSERT_EQUAL(s0.large_bytes, 0);
    verify_ok();
    assert_nothing_live();
}

/* ---- suite "threads" ---- */

enum { NTHREADS = 4, PER_THREAD = 6000, ROUNDS = 4 };
static void *slots[NTHREADS][PER_THREAD];
static size_t slot_size[NTHREADS][PER_THREAD];
static pthread_barrier_t barrier;
static int thread_errors;

static size_t pick_size(uint64_t *rng)
{
    *rng = *rng * 6364136223846793005ULL + 1442695040888963407ULL;
    uint32_t r = (uint32_t)(*rng >> 33);
    switch (r % 100) {
    case 0:
        return 32769 + r % 100000;              /* large */
    case 1: case 2:
        return 4096 + r % 28672;                /* big small */
    default:
        if (r % 3 == 0)
            return r % 9;                       /* tiny, 0..8 */
        return 9 + (r >> 8) % 1000;             /* small */
    }
}

static void *exchange_thread(void *arg)
{
    int t = (int)(intptr_t)arg;
    uint64_t rng = 12345 + (uint64_t)t;
    int errors = 0;
    for (int round = 0; round < ROUNDS; round++) {
        for (int i = 0; i < PER_THREAD; i++) {
            size_t n = slot_size[t][i] = pick_size(&rng);
            void *p = slots[t][i] = spc_malloc(n);
            if (p == NULL) {
                errors++;
                continue;
            }
            fill(p, n);
        }
        pthread_barrier_wait(&barrier);
        /* free the objects of the next thread (the last round: our own) */
        int from = round == ROUNDS - 1 ? t : (t + 1) % NTHREADS;
        for (int i = 0; i < PER_THREAD; i++) {
            void *p = slots[from][i];
            if (p == NULL)
                continue;
            if (!check(p, slot_size[from][i]))
                errors++;
            spc_free(p);
        }
        pthread_barrier_wait(&barrier);
    }
    __atomic_add_fetch(&thread_errors, errors, __ATOMIC_RELAXED);
    return NULL;
}

static void test_threads_exchange(void)
{
    pthread_t th[NTHREADS];
    pthread_barrier_init(&barrier, NULL, NTHREADS);
    for (int t = 0; t < NTHREADS; t++)
        CU_ASSERT_FATAL(pthread_create(&th[t], NULL, exchange_thread, (void *)(intptr_t)t) == 0);
    for (int t = 0; t < NTHREADS; t++)
        pthread_join(th[t], NULL);
    pthread_barrier_destroy(&barrier);
    CU_ASSERT_EQUAL(thread_errors, 0);
    /* the threads exited: their caches went back; nothing is live */
    long held = ct_client_spans(daemon_->sock, getpid());
    CU_ASSERT(held == 0 || held == -1);          /* -2 would be a failed request */
    spc_detach();
    assert_nothing_live();
}

/* ---- local and remote frees into the span a thread allocates from ----
 *
 * The thread cache hands out objects from two places (client/cache.h): its
 * list of its own frees into the current span, and a word of the span's
 * alloc bitmap; a drain of the remote stack frees more into the bitmap.
 * One thread allocates, frees some of its objects itself and hands others
 * to a second thread that frees them (remote frees, drained later), in a
 * random mix over a few sizes.  Every object carries the serial number of
 * its allocation: an object handed out while it is still live, or still
 * on its way to the other thread, is found (the live set, or a serial that
 * changed under the freer). */

#define MIX_OPS 300000
#define MIX_LIVE 4096
#define MIX_QUEUE 1024

typedef struct {
    void *p;
    uint64_t serial;
} mix_obj_t;

static struct {
    mix_obj_t q[MIX_QUEUE];
    unsigned head, tail;           /* under lock */
    bool done;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    int errors;                    /* the freer's */
} mix = { .lock = PTHREAD_MUTEX_INITIALIZER, .cond = PTHREAD_COND_INITIALIZER };

static void *mix_freer(void *arg)
{
    (void)arg;
    pthread_mutex_lock(&mix.lock);
    for (;;) {
        while (mix.head == mix.tail && !mix.done)
            pthread_cond_wait(&mix.cond, &mix.lock);
        if (mix.head == mix.tail)
            break;
        mix_obj_t o = mix.q[mix.tail++ % MIX_QUEUE];
        pthread_cond_broadcast(&mix.cond);
        pthread_mutex_unlock(&mix.lock);
        if (*(uint64_t *)o.p != o.serial)      /* handed out again meanwhile */
            mix.errors++;
        spc_free(o.p);
        pthread_mutex_lock(&mix.lock);
    }
    pthread_mutex_unlock(&mix.lock);
    return NULL;
}

static void mix_send(mix_obj_t o)
{
    pthread_mutex_lock(&mix.lock);
    while (mix.head - mix.tail == MIX_QUEUE)
        pthread_cond_wait(&mix.cond, &mix.lock);
    mix.q[mix.head++ % MIX_QUEUE] = o;
    pthread_cond_broadcast(&mix.cond);
    pthread_mutex_unlock(&mix.lock);
}

static void test_mixed_frees(void)
{
    static const size_t mix_sizes[] = { 24, 48, 1024, 16384 };
    static mix_obj_t live[MIX_LIVE];
    uint32_t nlive = 0;
    uint64_t rng = 0x5eed00c1, serial = 0;
    int errors = 0;
    mix.head = mix.tail = 0, mix.done = false, mix.errors = 0;
    pthread_t th;
    CU_ASSERT_FATAL(pthread_create(&th, NULL, mix_freer, NULL) == 0);
    for (int op = 0; op < MIX_OPS; op++) {
        rng = rng * 6364136223846793005ULL + 1442695040888963407ULL;
        unsigned r = (unsigned)(rng >> 33);
        if (nlive < MIX_LIVE && (nlive == 0 || r % 4 < 2)) {
            void *p = spc_malloc(mix_sizes[(r >> 4) % 4]);
            if (p == NULL) {
                errors++;
                continue;
            }
            for (uint32_t k = 0; k < nlive; k++)    /* not live already */
                if (live[k].p == p)
                    errors++;
            *(uint64_t *)p = ++serial;
            live[nlive++] = (mix_obj_t){ p, serial };
            continue;
        }
        uint32_t k = (r >> 4) % nlive;
        mix_obj_t o = live[k];
        live[k] = live[--nlive];
        if (*(uint64_t *)o.p != o.serial)
            errors++;
        if (r % 4 == 2)
            spc_free(o.p);                           /* a local free */
        else
            mix_send(o);                             /* a remote free */
    }
    for (uint32_t k = 0; k < nlive; k++) {
        if (*(uint64_t *)live[k].p != live[k].serial)
            errors++;
        spc_free(live[k].p);
    }
    pthread_mutex_lock(&mix.lock);
    mix.done = true;
    pthread_cond_broadcast(&mix.cond);
    pthread_mutex_unlock(&mix.lock);
    pthread_join(th, NULL);
    CU_ASSERT_EQUAL(errors, 0);
    CU_ASSERT_EQUAL(mix.errors, 0);
    CU_ASSERT(serial > MIX_OPS / 3);
    spc_detach();
    assert_nothing_live();
}

static long spans_while_running;

static void *holding_thread(void *arg)
{
    (void)arg;
    enum { N = 20000 };
    void **p = malloc(N * sizeof *p);
    for (int i = 0; i < N; i++)
        p[i] = spc_malloc((size_t)(i % 23) * 40 + 1);
    for (int i = 0; i < N; i += 2)
        spc_free(p[i]);
    spans_while_running = ct_client_spans(daemon_->sock, getpid());
    for (int i = 1; i < N; i += 2)
        spc_free(p[i]);
    free(p);
    return NULL;
}

/* A thread that exits gives its spans back. */
static void test_thread_exit_releases(void)
{
    CU_ASSERT_EQUAL_FATAL(spc_attach(NULL), 0);
    long before = ct_client_spans(daemon_->sock, getpid());
    CU_ASSERT(before >= 0);
    pthread_t th;
    CU_ASSERT_FATAL(pthread_create(&th, NULL, holding_thread, NULL) == 0);
    pthread_join(th, NULL);
    CU_ASSERT(spans_while_running > before + 10);
    CU_ASSERT_EQUAL(ct_client_spans(daemon_->sock, getpid()), before);
    spc_detach();
    assert_nothing_live();
}

/* Remote frees wait in the freeing thread's cache in batches: a thread that
 * only frees (it never allocated) pushes them when it exits, and
 * spc_detach pushes those of a thread still running.  Nothing stays live. */
enum { NFREED = 3000 };
static void *freed[NFREED];
static pthread_barrier_t freer_done, freer_exit;

static void *free_only_thread(void *arg)
{
    int hold = (int)(intptr_t)arg;
    for (int i = 0; i < NFREED; i++)
        spc_free(freed[i]);
    if (hold) {                                 /* stay alive with the batches */
        pthread_barrier_wait(&freer_done);
        pthread_barrier_wait(&freer_exit);
    }
    return NULL;
}

static void alloc_freed(void)
{
    for (int i = 0; i < NFREED; i++)
        freed[i] = spc_malloc((size_t)(i % 7) * 24 + 16);
}

static void test_free_only_threads(void)
{
    CU_ASSERT_EQUAL_FATAL(spc_attach(NULL), 0);
    alloc_freed();
    pthread_t th;
    CU_ASSERT_FATAL(pthread_create(&th, NULL, free_only_thread, (void *)0) == 0);
    pthread_join(th, NULL);
    spc_detach();
    assert_nothing_live();

    CU_ASSERT_EQUAL_FATAL(spc_attach(NULL), 0);
    alloc_freed();
    pthread_barrier_init(&freer_done, NULL, 2);
    pthread_barrier_init(&freer_exit, NULL, 2);
    CU_ASSERT_FATAL(pthread_create(&th, NULL, free_only_thread, (void *)1) == 0);
    pthread_barrier_wait(&freer_done);
    spc_detach();                               /* the freer still runs */
    assert_nothing_live();
    pthread_barrier_wait(&freer_exit);
    pthread_join(th, NULL);
    pthread_barrier_destroy(&freer_done);
    pthread_barrier_destroy(&freer_exit);
}

/* ---- suite "procs" ---- */

/* fork while a thread has remote frees waiting: the child's copy of them is
 * forgotten, only the parent pushes them (pushed twice, the holder would
 * find them on its stack twice and abort on a double free). */
static void test_fork_pending_frees(void)
{
    CU_ASSERT_EQUAL_FATAL(spc_attach(NULL), 0);
    alloc_freed();
    pthread_barrier_init(&freer_done, NULL, 2);
    pthread_barrier_init(&freer_exit, NULL, 2);
    pthread_t th;
    CU_ASSERT_FATAL(pthread_create(&th, NULL, free_only_thread, (void *)1) == 0);
    pthread_barrier_wait(&freer_done);
    pid_t pid = fork();
    CU_ASSERT_FATAL(pid >= 0);
    if (pid == 0) {
        void *q = spc_malloc(100);              /* a session of its own */
        spc_free(q);
        spc_detach();
        _exit(q == NULL ? 1 : 0);
    }
    int st;
    CU_ASSERT_EQUAL(dh_reap(pid, &st, 10000), 0);
    CU_ASSERT(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    pthread_barrier_wait(&freer_exit);          /* the parent's thread pushes */
    pthread_join(th, NULL);
    for (int round = 0; round < 4; round++) {   /* reuse every span: drains */
        alloc_freed();
        for (int i = 0; i < NFREED; i++)
            spc_free(freed[i]);
    }
    pthread_barrier_destroy(&freer_done);
    pthread_barrier_destroy(&freer_exit);
    spc_detach();
    assert_nothing_live();
}

/* A process that exits without spc_detach (exit(), or a return from main)
 * loses nothing: the exiting thread's waiting remote frees are pushed and
 * its current tiny blocks given up (attach.c, exit_flush), so the blocks are
 * freed with their last pieces and the parent's objects it freed go back.
 * Without that, every such exit left them allocated for good. */
#define EXIT_REMOTE 10              /* fewer than a batch: they would wait */

static void test_exit_without_detach(void)
{
    CU_ASSERT_EQUAL_FATAL(spc_attach(NULL), 0);
    void *mine[EXIT_REMOTE];
    for (int i = 0; i < EXIT_REMOTE; i++) {
        mine[i] = spc_malloc(64);
        CU_ASSERT_PTR_NOT_NULL_FATAL(mine[i]);
    }
    kid_t k;
    fflush(NULL);                               /* the kid's exit flushes stdio */
    if (kid_fork(&k) == 0) {
        for (int i = 0; i < EXIT_REMOTE; i++)
            spc_free(mine[i]);                  /* into the parent's span */
        uint64_t offs[3 * 3];
        for (int code = 0; code < 3; code++)    /* 1, 2 and 4 bytes */
            for (int j = 0; j < 3; j++) {
                uint8_t *t = spc_malloc((size_t)1 << code);
                if (t == NULL)
                    _exit(2);
                t[0] = (uint8_t)(code * 3 + j);
                offs[code * 3 + j] = spc_offset(t);
            }
        xwrite(k.up[1], offs, sizeof offs);
        exit(0);                                /* no spc_detach */
    }
    uint64_t offs[3 * 3];
    CU_ASSERT_FATAL(ct_read_all(k.up[0], offs, sizeof offs));
    kid_reap(&k, 10000);
    for (int n = 0; n < 9; n++) {               /* the last piece of each block */
        uint8_t *t = spc_pointer(offs[n]);
        CU_ASSERT_PTR_NOT_NULL_FATAL(t);
        CU_ASSERT_EQUAL(t[0], n);
        spc_free(t);
    }
    spc_detach();
    assert_nothing_live();
}

/* A process that detaches gives its spans back and closes its session. */
/* A process that closes its connection while it runs (as a program that
 * closes every fd it does not know does) keeps its spans: its threads go
 * on allocating from them.  The daemon ends the session when the process
 * exits, not when the socket closes; until then nobody else gets those
 * objects. */
#define CLOSED_SIZE 3584u           /* a class no other test keeps objects of */

typedef struct { uint32_t n; void **v; } alloc_list_t;

static void *alloc_closed_class(void *arg)
{
    alloc_list_t *l = arg;
    for (uint32_t i = 0; i < l->n; i++)
        l->v[i] = spc_malloc(CLOSED_SIZE);
    return NULL;
}

/* In a kid: allocate one object of CLOSED_SIZE (a span of the class in its
 * bin), close every fd but the pipes (the connection among them), tell the
 * parent and wait for its word.  The object; the kid exits on a failure. */
static void *kid_hold_and_close(const kid_t *k)
{
    char c = 0;
    void *p = spc_malloc(CLOSED_SIZE);
    if (p == NULL)
        _exit(2);
    kid_close_others(k);
    xwrite(k->up[1], "c", 1);
    if (!ct_read_all(k->down[0], &c, 1))
        _exit(3);
    return p;
}

static void test_closed_connection_keeps_spans(void)
{
    uint32_t per_span = span_objects(CLOSED_SIZE);
    CU_ASSERT_FATAL(per_span > 4);
    kid_t k;
    pid_t pid = kid_fork(&k);
    int *up = k.up, *down = k.down;
    if (pid == 0) {
        char c = 0;
        void *first = kid_hold_and_close(&k);
        void *v[64];                            /* from the spans it holds */
        uint32_t n = 0;
        while (n < per_span && n < 64 && (v[n] = spc_malloc(CLOSED_SIZE)) != NULL)
            n++;
        xwrite(up[1], &n, sizeof n);
        xwrite(up[1], v, n * sizeof v[0]);
        if (!ct_read_all(down[0], &c, 1))
            _exit(3);
        for (uint32_t i = 0; i < n; i++)        /* into spans it holds: no daemon */
            spc_free(v[i]);
        spc_free(first);
        _exit(0);
    }
    char c;
    CU_ASSERT_FATAL(ct_read_all(up[0], &c, 1));       /* its socket is closed */
    struct timespec ts = { 0, 200 * 1000 * 1000 };
    nanosleep(&ts, NULL);                       /* the daemon has seen it */
    CU_ASSERT(ct_client_spans(daemon_->sock, pid) > 0);   /* session kept */
    /* a fresh thread here takes spans of the class from the daemon */
    alloc_list_t mine = { 4 * per_span, calloc(4 * per_span, sizeof(void *)) };
    CU_ASSERT_FATAL(mine.v != NULL);
    pthread_t th;
    CU_ASSERT_FATAL(pthread_create(&th, NULL, alloc_closed_class, &mine) == 0);
    pthread_join(th, NULL);
    xwrite(down[1], "x", 1);
    uint32_t n = 0;
    void *theirs[64];
    CU_ASSERT_FATAL(ct_read_all(up[0], &n, sizeof n) && n > 0 && n <= 64);
    CU_ASSERT_FATAL(ct_read_all(up[0], theirs, n * sizeof theirs[0]));
    uint32_t shared = 0;
    for (uint32_t i = 0; i < mine.n; i++) {
        CU_ASSERT_PTR_NOT_NULL(mine.v[i]);
        for (uint32_t j = 0; j < n; j++)
            shared += mine.v[i] == theirs[j];
    }
    CU_ASSERT_EQUAL(shared, 0);                 /* no object handed out twice */
    for (uint32_t i = 0; i < mine.n; i++)
        spc_free(mine.v[i]);
    free(mine.v);
    xwrite(down[1], "x", 1);
    kid_reap(&k, 10000);
    long spans = 0;                             /* its session ends once it exits */
    for (int i = 0; i < 200 && (spans = ct_client_spans(daemon_->sock, pid)) != -1; i++)
        nanosleep(&(struct timespec){ 0, 10 * 1000 * 1000 }, NULL);
    CU_ASSERT_EQUAL(spans, -1);
}

/* A process whose connection closed (its session kept, with its spans)
 * detaches and attaches again: its new Hello ends the kept session at
 * once (spc_detach dropped the caches that used those spans and unmapped
 * the arena), so it does not hold a second slot until it exits. */
static void test_reattach_ends_kept_session(void)
{
    kid_t k;
    pid_t pid = kid_fork(&k);
    int *up = k.up, *down = k.down;
    if (pid == 0) {
        char c = 0;
        void *p = kid_hold_and_close(&k);
        spc_free(p);                            /* into a span it holds: no daemon */
        spc_detach();
        if (spc_attach(NULL) != 0 || (p = spc_malloc(CLOSED_SIZE)) == NULL)
            _exit(4);
        xwrite(up[1], "a", 1);
        if (!ct_read_all(down[0], &c, 1))
            _exit(3);
        spc_free(p);
        spc_detach();
        _exit(0);
    }
    char c;
    CU_ASSERT_FATAL(ct_read_all(up[0], &c, 1));       /* its socket is closed */
    nanosleep(&(struct timespec){ 0, 200 * 1000 * 1000 }, NULL);
    CU_ASSERT_EQUAL(ct_client_sessions(daemon_->sock, pid), 1);
    CU_ASSERT(ct_client_spans(daemon_->sock, pid) > 0);      /* kept */
    xwrite(down[1], "x", 1);
    CU_ASSERT_FATAL(ct_read_all(up[0], &c, 1));       /* attached again, allocated */
    CU_ASSERT_EQUAL(ct_client_sessions(daemon_->sock, pid), 1);  /* the new one only */
    xwrite(down[1], "x", 1);
    kid_reap(&k, 10000);
    spc_detach();                               /* this process too (earlier tests) */
    assert_nothing_live();
}

/* A process that holds spans and execs: its new image cannot use them (the
 * kernel closed the connection at exec, CLOEXEC, and dropped the arena's
 * mapping), but the pid stays and the pidfd does not fire.  The daemon
 * looks at /proc/PID/maps: its session ends at once if the exec closed the
 * connection (close_first false), or within about a second if the
 * connection was closed before, with the session kept (close_first true). */
static void exec_ends_session(bool close_first)
{
    kid_t k;
    pid_t pid = kid_fork(&k);
    int *up = k.up, *down = k.down;
    if (pid == 0) {
        char c = 0;
        prctl(PR_SET_PDEATHSIG, SIGKILL);       /* survives the exec */
        void *p = spc_malloc(CLOSED_SIZE);      /* a span of the class in its bin */
        if (p == NULL)
            _exit(2);
        spc_free(p);                            /* still held, nothing live */
        if (close_first)
            kid_close_others(&k);           /* the connection among them */
        xwrite(up[1], "c", 1);
        if (!ct_read_all(down[0], &c, 1))
            _exit(3);
        execl("/bin/sleep", "sleep", "30", (char *)NULL);
        _exit(4);
    }
    char c;
    CU_ASSERT_FATAL(ct_read_all(up[0], &c, 1));
    if (close_first)
        nanosleep(&(struct timespec){ 0, 200 * 1000 * 1000 }, NULL);
    CU_ASSERT(ct_client_spans(daemon_->sock, pid) > 0);   /* a session with spans */
    xwrite(down[1], "x", 1);
    long spans = 0;
    for (int i = 0; i < 300 && (spans = ct_client_spans(daemon_->sock, pid)) != -1; i++)
        nanosleep(&(struct timespec){ 0, 10 * 1000 * 1000 }, NULL);
    CU_ASSERT_EQUAL(spans, -1);                 /* ended, within 3 s */
    CU_ASSERT_EQUAL(waitpid(pid, NULL, WNOHANG), 0);  /* while the process runs */
    kill(pid, SIGKILL);
    int st = 0;
    CU_ASSERT_EQUAL(dh_reap(pid, &st, 10000), 0);
    CU_ASSERT(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL);   /* it was sleep(1) */
    close(up[0]), close(up[1]), close(down[0]), close(down[1]);
    spc_detach();                               /* this process too (earlier tests) */
    assert_nothing_live();                      /* the child's spans came back */
}

static void test_exec_ends_session(void)
{
    exec_ends_session(false);
}

static void test_exec_after_close_ends_session(void)
{
    exec_ends_session(true);
}

static void test_detach_releases(void)
{
    kid_t k;
    pid_t pid = kid_fork(&k);
    int *up = k.up, *down = k.down;
    if (pid == 0) {
        char c = 0;
        void *p[1000];
        for (int i = 0; i < 1000; i++)
            p[i] = spc_malloc((size_t)i * 3 + 1);
        xwrite(up[1], "a", 1);                  /* allocated */
        if (!ct_read_all(down[0], &c, 1))
            _exit(3);
        for (int i = 0; i < 1000; i++)
            spc_free(p[i]);
        spc_detach();
        xwrite(up[1], "d", 1);                  /* detached */
        if (!ct_read_all(down[0], &c, 1))
            _exit(3);
        _exit(0);
    }
    char c;
    CU_ASSERT_FATAL(ct_read_all(up[0], &c, 1));
    CU_ASSERT(ct_client_spans(daemon_->sock, pid) > 10);
    xwrite(down[1], "x", 1);
    CU_ASSERT_FATAL(ct_read_all(up[0], &c, 1));
    CU_ASSERT_EQUAL(ct_client_spans(daemon_->sock, pid), -1);   /* session gone */
    assert_nothing_live();                      /* while it still runs */
    xwrite(down[1], "x", 1);
    kid_reap(&k, 10000);
}

/* fork: the child frees the parent's objects through the inherited mapping
 * and its own new session, and hands its own objects back by raw pointer. */
static void test_fork_inherit(void)
{
    enum { N = 3000 };
    static void *mine[N];
    static size_t len[N];
    uint64_t rng = 99;
    CU_ASSERT_EQUAL_FATAL(spc_attach(NULL), 0);
    for (int i = 0; i < N; i++) {
        len[i] = pick_size(&rng);
        mine[i] = spc_malloc(len[i]);
        CU_ASSERT_PTR_NOT_NULL_FATAL(mine[i]);
        fill(mine[i], len[i]);
    }
    kid_t k;
    pid_t pid = kid_fork(&k);
    int *up = k.up, *down = k.down;
    if (pid == 0) {
        int bad = 0;
        for (int i = 0; i < N; i++) {
            bad += !check(mine[i], len[i]);
            spc_free(mine[i]);
        }
        uint64_t rng2 = 7;
        for (int i = 0; i < N; i++) {
            size_t n = pick_size(&rng2);
            void *p = spc_malloc(n);
            if (p == NULL)
                _exit(4);
            fill(p, n);
            xwrite(up[1], &p, sizeof p);
            xwrite(up[1], &n, sizeof n);
        }
        char c;
        if (!ct_read_all(down[0], &c, 1))     /* the parent freed them all */
            _exit(3);
        spc_detach();
        _exit(bad ? 1 : 0);
    }
    int bad = 0;
    for (int i = 0; i < N; i++) {
        void *p;
        size_t n;
        CU_ASSERT_FATAL(ct_read_all(up[0], &p, sizeof p) && ct_read_all(up[0], &n, sizeof n));
        bad += !check(p, n);
        spc_free(p);
    }
    CU_ASSERT_EQUAL(bad, 0);
    xwrite(down[1], "x", 1);
    kid_reap(&k, 20000);
    /* the parent's cache is its own still */
    void *p = spc_malloc(64);
    CU_ASSERT_PTR_NOT_NULL(p);
    spc_free(p);
    spc_detach();
    assert_nothing_live();
}

/* The load test: NPROC processes in a ring; each allocates its share of
 * TOTAL objects (tiny, small and large), fills them with a pattern of their
 * offset and passes the offsets to the next process, whose consumer thread
 * checks every byte and frees them. */
enum { NPROC = 3, TOTAL = 1000000, BATCH = 256 };

typedef struct rec_s {
    uint64_t off;
    uint64_t size;
} rec_t;

typedef struct consumer_s {
    int in;
    long objects, errors;
} consumer_t;

static void *ring_consumer(void *arg)
{
    consumer_t *c = arg;
    rec_t buf[BATCH];
    for (;;) {
        if (!ct_read_all(c->in, buf, sizeof buf)) {
            c->errors++;
            return NULL;
        }
        for (int i = 0; i < BATCH; i++) {
            if (buf[i].off == 0)
                return NULL;            /* the producer is done */
            void *p = spc_pointer(buf[i].off);
            if (p == NULL || spc_usable_size(p) < buf[i].size || !check(p, buf[i].size))
                c->errors++;
            spc_free(p);
            c->objects++;
        }
    }
}

static void ring_child(int k, int in, int out, int report, int go)
{
    uint64_t rng = 1000003u * (uint64_t)(k + 1);
    consumer_t cons = { .in = in };
    pthread_t th;
    if (pthread_create(&th, NULL, ring_consumer, &cons) != 0)
        _exit(5);
    rec_t buf[BATCH];
    int nb = 0;
    long made = 0, fails = 0;
    for (long i = 0; i < TOTAL / NPROC; i++) {
        size_t n = pick_size(&rng);
        void *p = spc_malloc(n);
        if (p == NULL) {
            fails++;
            continue;
        }
        fill(p, n);
        buf[nb].off = spc_offset(p);
        buf[nb].size = n;
        made++;
        if (++nb == BATCH) {
            xwrite(out, buf, sizeof buf);
            nb = 0;
        }
    }
    memset(&buf[nb], 0, sizeof buf - nb * sizeof buf[0]);   /* end marker */
    xwrite(out, buf, sizeof buf);
    pthread_join(th, NULL);
    long result[4] = { made, fails, cons.objects, cons.errors };
    xwrite(report, result, sizeof result);
    char c;
    if (!ct_read_all(go, &c, 1))      /* every process has freed what it got */
        _exit(3);
    spc_detach();
    _exit(0);
}

static void test_ring_load(void)
{
    int ring[NPROC][2], report[2], go[2];
    for (int k = 0; k < NPROC; k++)
        CU_ASSERT_FATAL(pipe(ring[k]) == 0);
    CU_ASSERT_FATAL(pipe(report) == 0 && pipe(go) == 0);
    pid_t pids[NPROC];
    for (int k = 0; k < NPROC; k++) {
        pids[k] = fork();
        CU_ASSERT_FATAL(pids[k] >= 0);
        if (pids[k] == 0) {
            /* k writes to ring[k], reads from ring[k-1] */
            int in = ring[(k + NPROC - 1) % NPROC][0], out = ring[k][1];
            for (int j = 0; j < NPROC; j++) {
                if (ring[j][0] != in)
                    close(ring[j][0]);
                if (ring[j][1] != out)
                    close(ring[j][1]);
            }
            close(report[0]);
            close(go[1]);
            ring_child(k, in, out, report[1], go[0]);
        }
    }
    for (int k = 0; k < NPROC; k++)
        close(ring[k][0]), close(ring[k][1]);
    close(report[1]);
    close(go[0]);
    long made = 0, fails = 0, consumed = 0, errors = 0;
    for (int k = 0; k < NPROC; k++) {
        long r[4];
        CU_ASSERT_FATAL(ct_read_all(report[0], r, sizeof r));
        made += r[0], fails += r[1], consumed += r[2], errors += r[3];
    }
    CU_ASSERT_EQUAL(fails, 0);
    CU_ASSERT_EQUAL(errors, 0);
    CU_ASSERT_EQUAL(made, (TOTAL / NPROC) * NPROC);
    CU_ASSERT_EQUAL(consumed, made);
    CU_ASSERT(made >= 999999);
    if (fails || errors || consumed != made)
        fprintf(stderr, "made %ld, failed %ld, consumed %ld, errors %ld\n", made, fails,
                consumed, errors);
    xwrite(go[1], "goo", NPROC);
    close(go[1]);
    for (int k = 0; k < NPROC; k++) {
        int st;
        CU_ASSERT_EQUAL(dh_reap(pids[k], &st, 30000), 0);
        CU_ASSERT(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    }
    close(report[0]);
    assert_nothing_live();
}

/* ---- suite "daemon killed" ---- */

/* The daemon dies under an attached process: clear errors, objects already
 * stored stay readable, and after spc_detach a new daemon can be used. */
static void test_daemon_killed(void)
{
    CU_ASSERT_EQUAL_FATAL(spc_attach(NULL), 0);
    void *small = spc_malloc(100);
    CU_ASSERT_PTR_NOT_NULL_FATAL(small);
    fill(small, 100);
    dh_kill(daemon_);
    errno = 0;
    CU_ASSERT_PTR_NULL(spc_malloc(100000));         /* needs the daemon */
    CU_ASSERT_EQUAL(errno, ENOTCONN);
    CU_ASSERT_EQUAL(spc_attach(NULL), -ENOTCONN);   /* refused until detach */
    CU_ASSERT(check(small, 100));                   /* nothing stored is lost */
    spc_detach();
    dh_cleanup(daemon_);
    CU_ASSERT_EQUAL_FATAL(suite_start(), 0);        /* a new daemon */
    CU_ASSERT_EQUAL(spc_attach(NULL), 0);
    void *p = spc_malloc(100000), *q = spc_malloc(10);
    CU_ASSERT_PTR_NOT_NULL(p);
    CU_ASSERT_PTR_NOT_NULL(q);
    spc_free(p);
    spc_free(q);
    spc_detach();
    assert_nothing_live();
}

int main(void)
{
    runner_pid = getpid();
    CU_TestInfo api[] = {
        { "attach", test_attach },
        { "attach to a daemon that answers Hello wrongly", test_attach_bad_daemon },
        { "detach, then attach lazily", test_detach_lazy_attach },
        { "attach fails with EEXIST when the address is taken", test_attach_address_taken },
        { "malloc of every kind of size", test_malloc_sizes },
        { "malloc(0) and free(NULL)", test_malloc_zero },
        { "huge sizes: NULL and ENOMEM", test_huge },
        { "aligned_alloc up to 1 MiB", test_aligned },
        { "realloc across classes and large", test_realloc },
        { "calloc zeroes reused memory", test_calloc },
        { "usable_size", test_usable_size },
        { "offset and pointer", test_offset_pointer },
        { "bogus frees abort with a message", test_bogus_frees },
        CU_TEST_INFO_NULL,
    };
    CU_TestInfo threads[] = {
        { "threads free each other's objects", test_threads_exchange },
        { "local and remote frees mixed: no object handed out twice", test_mixed_frees },
        { "an exiting thread gives its spans back", test_thread_exit_releases },
        { "a thread that only frees: exit and detach push its frees", test_free_only_threads },
        CU_TEST_INFO_NULL,
    };
    CU_TestInfo procs[] = {
        { "a detaching process gives its spans back", test_detach_releases },
        { "a process that closes its connection keeps its spans until it exits",
          test_closed_connection_keeps_spans },
        { "a process that attaches again: its kept session ends",
          test_reattach_ends_kept_session },
        { "a process that execs: its session ends at once", test_exec_ends_session },
        { "a process that closed its connection, then execs: its session ends",
          test_exec_after_close_ends_session },
        { "fork: the child frees the parent's objects", test_fork_inherit },
        { "fork: remote frees waiting in a thread are pushed once", test_fork_pending_frees },
        { "a process that exits without detaching loses nothing", test_exit_without_detach },
        { "3 processes, 1,000,000 objects, every byte checked", test_ring_load },
        CU_TEST_INFO_NULL,
    };
    CU_TestInfo killed[] = {
        { "the daemon dies under an attached process", test_daemon_killed },
        CU_TEST_INFO_NULL,
    };
    CU_TestInfo pool[] = {
        { "malloc, free, malloc: the same span, no AllocLarge", test_pool_reuse },
        { "freed by another process, reused without a round trip",
          test_pool_cross_process },
        { "a thread with no small objects takes a whole batch", test_pool_batch_fresh_thread },
        { "a double free of a pooled object aborts", test_pool_double_free },
        { "Scavenge empties the pool", test_pool_scavenge },
        { "a burst of large allocations: extra spans, fewer round trips", test_large_burst },
        { "a process killed in a burst: its extra spans freed", test_large_burst_killed },
        CU_TEST_INFO_NULL,
    };
    CU_TestInfo pool_1m[] = {
        { "over the cap, back to the heap", test_pool_cap },
        CU_TEST_INFO_NULL,
    };
    CU_TestInfo pool_off[] = {
        { "--large-pool 0 turns it off", test_pool_off },
        CU_TEST_INFO_NULL,
    };
    CU_TestInfo pool_idle[] = {
        { "the scavenger drains an idle bucket", test_pool_idle_drain },
        CU_TEST_INFO_NULL,
    };
    CU_SuiteInfo suites[] = {
        { "client api", suite_start, suite_stop, NULL, NULL, api },
        { "large pool", pool_start, suite_stop, NULL, NULL, pool },
        { "large pool, 1 MiB", pool_1m_start, suite_stop, NULL, NULL, pool_1m },
        { "large pool off", pool_off_start, suite_stop, NULL, NULL, pool_off },
        { "large pool, idle", pool_idle_start, suite_stop, NULL, NULL, pool_idle },
        { "client threads", suite_start, suite_stop, NULL, NULL, threads },
        { "client processes", suite_start, suite_stop, NULL, NULL, procs },
        { "client, daemon killed", suite_start, suite_stop, NULL, NULL, killed },
        CU_SUITE_INFO_NULL,
    };
    signal(SIGPIPE, SIG_IGN);
    return cutest_run(suites);
}

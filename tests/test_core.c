/* See shm/layout.h for the overview.
 *
 * tests/test_core: the allocator core (size classes, heap, span operations,
 * central, verifier).  This file holds main and the arena fixtures; the
 * suites are in tests/test_<module>.c.
 */
#include "config.h"

#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "daemon/list.h"
#include "tests/test_core.h"

int fx_back_fail = -1;
unsigned fx_back_calls;

int __real_shm_arena_back(shm_arena_t *a, uint64_t off, uint64_t len);
int __wrap_shm_arena_back(shm_arena_t *a, uint64_t off, uint64_t len);
int __wrap_shm_arena_back(shm_arena_t *a, uint64_t off, uint64_t len)
{
    fx_back_calls++;
    if (fx_back_fail == 0)
        return -ENOMEM;
    if (fx_back_fail > 0)
        fx_back_fail--;
    return __real_shm_arena_back(a, off, len);
}

static uint64_t rng_state = 0x9e3779b97f4a7c15ULL;

void fx_seed(uint64_t seed)
{
    const char *env = getenv("SPAND_TEST_SEED");
    if (env != NULL && *env != '\0')
        seed = strtoull(env, NULL, 0);
    fprintf(stderr, "(seed %#llx) ", (unsigned long long)seed);
    rng_state = seed ? seed : 1;
}

uint64_t fx_rand(void)
{
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 0x2545f4914f6cdd1dULL;
}

void fx_hold(shm_arena_t *a, shm_spanid_t id, unsigned slot)
{
    shm_session_t *ss = &a->hdr->sessions[slot];
    shm_span_t *s = shm_span(a->base, id);
    if (ss->pid == 0)
        ss->pid = (uint32_t)getpid();
    s->session = slot + 1;
    shm_store_release(&s->xstate, SHM_SPAN_HELD);
    spd_list_push(a->base, &ss->spans, id);
    ss->nspans++;
}

void fx_unhold(shm_arena_t *a, shm_spanid_t id)
{
    shm_span_t *s = shm_span(a->base, id);
    shm_session_t *ss = &a->hdr->sessions[s->session - 1];
    spd_list_remove(a->base, &ss->spans, id);
    ss->nspans--;
}

static struct fx_slot {
    shm_arena_t a;
    char name[64];
    bool used;
} slots[FX_MAX];
static unsigned fx_serial;

shm_arena_t *fx_new(uint64_t size)
{
    for (unsigned i = 0; i < FX_MAX; i++) {
        struct fx_slot *f = &slots[i];
        if (f->used)
            continue;
        char err[SHM_ERRLEN];
        snprintf(f->name, sizeof f->name, "/spand-test-core-%ld-%u", (long)getpid(),
                 fx_serial++);
        /* 64 GiB apart, far from the default base that a daemon would use */
        uint64_t base = SHM_DEFAULT_BASE + ((uint64_t)(i + 1) << 36);
        int rc = shm_arena_create(&f->a, f->name, size, base, err);
        if (rc != 0) {
            fprintf(stderr, "\n    fx_new: %s\n", err);
            CU_FAIL("shm_arena_create");
            return NULL;
        }
        f->used = true;
        rc = spd_heap_init(&f->a);
        CU_ASSERT_EQUAL(rc, 0);
        if (rc != 0) {
            fx_drop(&f->a);
            return NULL;
        }
        return &f->a;
    }
    CU_FAIL("fx_new: too many arenas open");
    return NULL;
}

const char *fx_name(const shm_arena_t *a)
{
    for (unsigned i = 0; i < FX_MAX; i++)
        if (slots[i].used && &slots[i].a == a)
            return slots[i].name;
    return "";
}

static void fx_close(struct fx_slot *f)
{
    shm_arena_close(&f->a);
    shm_unlink(f->name);
    f->used = false;
}

void fx_drop(shm_arena_t *a)
{
    for (unsigned i = 0; i < FX_MAX; i++)
        if (slots[i].used && &slots[i].a == a)
            fx_close(&slots[i]);
}

void fx_teardown(void)
{
    fx_back_fail = -1;
    for (unsigned i = 0; i < FX_MAX; i++)
        if (slots[i].used)
            fx_close(&slots[i]);
}

static void fx_setup(void)
{
}

/* A crash (or a kill) must not leave shared-memory objects behind:
 * unlink what is open (unlink is async-signal-safe) and die of the signal. */
static void fx_on_signal(int sig)
{
    for (unsigned i = 0; i < FX_MAX; i++)
        if (slots[i].used)
            shm_unlink(slots[i].name);
    signal(sig, SIG_DFL);
    raise(sig);
}

int main(void)
{
    atexit(fx_teardown);
    static const int sigs[] = { SIGSEGV, SIGBUS, SIGABRT, SIGFPE, SIGILL, SIGINT, SIGTERM,
                                SIGHUP };
    for (unsigned i = 0; i < sizeof sigs / sizeof sigs[0]; i++)
        signal(sigs[i], fx_on_signal);
    CU_SuiteInfo suites[] = {
        { "sizeclasses", NULL, NULL, fx_setup, fx_teardown, sizeclass_tests },
        { "heap", NULL, NULL, fx_setup, fx_teardown, heap_tests },
        { "span", NULL, NULL, fx_setup, fx_teardown, span_tests },
        { "central", NULL, NULL, fx_setup, fx_teardown, central_tests },
        { "lpool", NULL, NULL, fx_setup, fx_teardown, lpool_tests },
        { "verify", NULL, NULL, fx_setup, fx_teardown, verify_tests },
        CU_SUITE_INFO_NULL,
    };
    return cutest_run(suites);
}

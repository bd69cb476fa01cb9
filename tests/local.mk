# The allocator core's tests: one CUnit runner for size classes, heap, span
# operations, central, the large pool and the verifier, and the size-class regeneration check.
check_PROGRAMS += tests/test_core
tests_test_core_SOURCES = \
	tests/test_core.c tests/test_core.h tests/cutest.h tests/span_take.h \
	tests/test_sizeclasses.c \
	tests/test_heap.c \
	tests/test_span.c \
	tests/test_central.c \
	tests/test_lpool.c \
	tests/test_verify.c
tests_test_core_CFLAGS = $(AM_CFLAGS) $(CUNIT_CFLAGS) -pthread
# --wrap: the tests make shm_arena_back fail on purpose (see test_core.h)
tests_test_core_LDFLAGS = -Wl,--wrap=shm_arena_back
tests_test_core_LDADD = daemon/libspd.la shm/libshm.la $(CUNIT_LIBS) -lpthread
TESTS += tests/test_core tests/sizeclasses-regen.sh
EXTRA_DIST += tests/sizeclasses-regen.sh

# make bench's harness, run quick for spand alone: the report must be whole
TESTS += tests/bench-smoke.sh
EXTRA_DIST += tests/bench-smoke.sh

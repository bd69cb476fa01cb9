# The stress test: processes and threads in a random mix of every size and
# every way to free, against a real spand (tests/test_stress.c); built as
# the client tests are (tests/client.mk).
check_PROGRAMS += tests/test_stress
TESTS += tests/test_stress
tests_test_stress_SOURCES = tests/test_stress.c $(client_test_helpers)
nodist_tests_test_stress_SOURCES = proto/spand.pb-c.h
tests_test_stress_CFLAGS = $(tests_test_client_CFLAGS)
tests_test_stress_LDADD = $(tests_test_client_LDADD)

# The stress test: processes and threads in a random mix of every size and
# every way to free, against a real spand (tests/test_stress.c).
check_PROGRAMS += tests/test_stress
TESTS += tests/test_stress
tests_test_stress_SOURCES = tests/test_stress.c \
	tests/client_helper.c tests/client_helper.h \
	tests/daemon_helper.c tests/daemon_helper.h tests/cutest.h
nodist_tests_test_stress_SOURCES = proto/spand.pb-c.h
tests_test_stress_CFLAGS = $(AM_CFLAGS) $(CUNIT_CFLAGS) $(PROTOBUF_C_CFLAGS)
tests_test_stress_LDADD = client/libspanclient.la tools/libctl.la proto/libproto.la \
	$(CUNIT_LIBS) $(PROTOBUF_C_LIBS)

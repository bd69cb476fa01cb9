# The daemon's tests: a real spand ($SPAND_BIN) on a private socket and
# shared-memory name, driven over the socket (tests/daemon_helper.h).
check_PROGRAMS += tests/test_daemon
TESTS += tests/test_daemon
tests_test_daemon_SOURCES = tests/test_daemon.c \
	tests/daemon_helper.c tests/daemon_helper.h tests/cutest.h tests/span_take.h
tests_test_daemon_CFLAGS = $(AM_CFLAGS) $(CUNIT_CFLAGS) $(PROTOBUF_C_CFLAGS)
tests_test_daemon_LDADD = tools/libctl.la proto/libproto.la shm/libshm.la -lpthread \
	$(CUNIT_LIBS) $(PROTOBUF_C_LIBS)

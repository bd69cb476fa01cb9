# White-box checks of the thread cache (tests/test_cache.c): libspanclient
# linked in statically, to see its internals, against real spand processes.
check_PROGRAMS += tests/test_cache
TESTS += tests/test_cache
tests_test_cache_SOURCES = tests/test_cache.c tests/client_helper.c tests/client_helper.h \
	tests/daemon_helper.c tests/daemon_helper.h tests/cutest.h
tests_test_cache_CFLAGS = $(AM_CFLAGS) $(CUNIT_CFLAGS) $(PROTOBUF_C_CFLAGS)
tests_test_cache_LDADD = client/libspanclient.la tools/libctl.la proto/libproto.la $(CUNIT_LIBS) $(PROTOBUF_C_LIBS) -lpthread
tests_test_cache_LDFLAGS = -static
nodist_tests_test_cache_SOURCES = proto/spand.pb-c.h

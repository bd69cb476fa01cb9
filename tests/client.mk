# The client library against a real spand (tests/test_client.c).
check_PROGRAMS += tests/test_client
TESTS += tests/test_client
client_test_helpers = tests/client_helper.c tests/client_helper.h \
	tests/daemon_helper.c tests/daemon_helper.h tests/cutest.h
tests_test_client_SOURCES = tests/test_client.c $(client_test_helpers)
nodist_tests_test_client_SOURCES = proto/spand.pb-c.h
tests_test_client_CFLAGS = $(AM_CFLAGS) $(CUNIT_CFLAGS) $(PROTOBUF_C_CFLAGS)
tests_test_client_LDADD = client/libspanclient.la tools/libctl.la proto/libproto.la \
	$(CUNIT_LIBS) $(PROTOBUF_C_LIBS)

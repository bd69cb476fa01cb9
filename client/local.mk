# libspanclient: the client library (see doc/design.md section 3).
# Only spc_ symbols are exported; spci_ internals are hidden
# (-fvisibility=hidden, and the export regex for the shared library).
lib_LTLIBRARIES += client/libspanclient.la
include_HEADERS += client/spanclient.h
pkgconfig_DATA += client/spanclient.pc
client_libspanclient_la_SOURCES = \
	client/spanclient.h client/internal.h client/cache.h \
	client/api.c client/attach.c client/cache.c client/free.c client/rpc.c
nodist_client_libspanclient_la_SOURCES = proto/spand.pb-c.h
client_libspanclient_la_CFLAGS = $(AM_CFLAGS) -fvisibility=hidden $(PROTOBUF_C_CFLAGS)
client_libspanclient_la_LIBADD = shm/libshm.la proto/libproto.la $(PROTOBUF_C_LIBS)
client_libspanclient_la_LDFLAGS = -export-symbols-regex '^spc_' -version-info 0:0:0

# The wire protocol; C code generated at build time by protoc-c.
noinst_LTLIBRARIES += proto/libproto.la
nodist_proto_libproto_la_SOURCES = proto/spand.pb-c.c proto/spand.pb-c.h
proto_libproto_la_CFLAGS = $(AM_CFLAGS) $(PROTOBUF_C_CFLAGS)
proto_libproto_la_LIBADD = $(PROTOBUF_C_LIBS)
BUILT_SOURCES += proto/spand.pb-c.c proto/spand.pb-c.h
CLEANFILES += proto/spand.pb-c.c proto/spand.pb-c.h
EXTRA_DIST += proto/spand.proto

proto/spand.pb-c.c: $(srcdir)/proto/spand.proto
	$(AM_V_GEN)$(MKDIR_P) proto && \
	$(PROTOC_C) --proto_path=$(srcdir) --c_out=$(builddir) $(srcdir)/proto/spand.proto
proto/spand.pb-c.h: proto/spand.pb-c.c
	@test -f $@ || $(MAKE) $(AM_MAKEFLAGS) proto/spand.pb-c.c

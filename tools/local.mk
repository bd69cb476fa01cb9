# tools: spanctl, and the small blocking client of spand's socket that
# spanctl and the daemon tests share.
noinst_LTLIBRARIES += tools/libctl.la
tools_libctl_la_SOURCES = tools/ctlclient.c tools/ctlclient.h proto/wire.h
tools_libctl_la_CFLAGS = $(AM_CFLAGS) $(PROTOBUF_C_CFLAGS)
tools_libctl_la_LIBADD = proto/libproto.la

bin_PROGRAMS += tools/spanctl
tools_spanctl_SOURCES = tools/spanctl.c
tools_spanctl_CFLAGS = $(AM_CFLAGS) $(PROTOBUF_C_CFLAGS)
tools_spanctl_LDADD = tools/libctl.la $(PROTOBUF_C_LIBS)

# spand, the daemon: RPC server, sessions, scavenger, main.  The allocator
# core it drives is daemon/libspd.la (daemon/local.mk).
bin_PROGRAMS += daemon/spand
daemon_spand_SOURCES = \
	daemon/daemon.h daemon/main.c daemon/config.c \
	daemon/log.c daemon/log.h \
	daemon/rpc.c daemon/rpc.h daemon/handlers.c \
	daemon/session.c daemon/session.h \
	daemon/scavenger.c daemon/stats.c \
	proto/wire.h
daemon_spand_CFLAGS = $(AM_CFLAGS) $(LIBEVENT_CFLAGS) $(PROTOBUF_C_CFLAGS)
daemon_spand_LDADD = daemon/libspd.la proto/libproto.la shm/libshm.la \
	$(LIBEVENT_LIBS) $(PROTOBUF_C_LIBS)

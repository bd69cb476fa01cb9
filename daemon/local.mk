# The daemon's allocator core (heap, central, verifier) as a convenience
# library that spand and the tests link.
noinst_LTLIBRARIES += daemon/libspd.la
daemon_libspd_la_SOURCES = \
	daemon/list.h \
	daemon/heap.c daemon/heap.h \
	daemon/central.c daemon/central.h \
	daemon/lpool.c daemon/lpool.h \
	daemon/verify.c daemon/verify.h
daemon_libspd_la_LIBADD = shm/libshm.la

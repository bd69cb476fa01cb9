# The shared layout: linked into the daemon, the client library and tests.
noinst_LTLIBRARIES += shm/libshm.la
shm_libshm_la_SOURCES = \
	shm/layout.h shm/atomic.h \
	shm/arena.c shm/arena.h \
	shm/span.c shm/span.h \
	shm/lpool.c shm/lpool.h \
	shm/sizeclasses.c shm/sizeclasses.h

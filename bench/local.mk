# bench: spanbench and the comparison with other allocators.  Nothing here
# runs in `make check`; `make bench` runs bench/run-bench.sh, which writes
# bench/RESULTS.md in the source tree (see bench/README.md).
noinst_PROGRAMS += bench/spanbench
bench_spanbench_SOURCES = \
	bench/bench.h bench/util.c bench/spanbench.c \
	bench/wl.h bench/wl_libc.c bench/wl_spand.c bench/wl_stub.c \
	bench/rpc.h bench/rpc.c bench/daemon.c
nodist_bench_spanbench_SOURCES = proto/spand.pb-c.h
bench_spanbench_CFLAGS = $(AM_CFLAGS) -O2 $(PROTOBUF_C_CFLAGS)
# spand through its shared library, as every comparator runs through its
# own (LD_PRELOAD): each malloc and free crosses a PLT entry and finds its
# thread cache through the GOT, as in a program linked the usual way.
# (Linked statically, as it was until the eighth round, spand skipped both.)
# libshm for bench/daemon.c's own use; -no-install: no libtool wrapper script.
bench_spanbench_LDADD = client/libspanclient.la bench/libbenchstub.la \
	tools/libctl.la shm/libshm.la $(PROTOBUF_C_LIBS) -ldl
bench_spanbench_LDFLAGS = -no-install

# the stub allocator (the loop's floor), a shared library like the others:
# -rpath makes libtool build it shared though it is never installed
noinst_LTLIBRARIES += bench/libbenchstub.la
bench_libbenchstub_la_SOURCES = bench/stub.c
bench_libbenchstub_la_CFLAGS = $(AM_CFLAGS) -O2
bench_libbenchstub_la_LDFLAGS = -rpath /nowhere -avoid-version -shared

# the machine's core-to-core cache-line round trip, for the report
noinst_PROGRAMS += bench/c2c
bench_c2c_SOURCES = bench/c2c.c
bench_c2c_CFLAGS = $(AM_CFLAGS) -O2
bench_c2c_LDADD = -lpthread

EXTRA_DIST += bench/run-bench.sh bench/ab.sh bench/report.py bench/README.md bench/RESULTS.md bench/TRIED.md
CLEANFILES += bench/results-raw.tsv bench/results-meta.tsv

# make bench [BENCH_FLAGS='--quick | --reps N --secs S | --only glibc,spand']
.PHONY: bench
bench: all
	BENCH_FLAGS='$(BENCH_FLAGS)' $(SHELL) $(srcdir)/bench/run-bench.sh \
	  --builddir '$(abs_top_builddir)' --srcdir '$(abs_top_srcdir)' $(BENCH_FLAGS)

# Boost.Interprocess managed_shared_memory, the cross-process comparator.
if HAVE_BOOST_IPC
noinst_PROGRAMS += bench/boostbench
bench_boostbench_SOURCES = bench/boostbench.cc
bench_boostbench_CXXFLAGS = -std=gnu++17 -O2 $(WARN_CFLAGS)
bench_boostbench_LDADD = -lrt -lpthread
else
EXTRA_DIST += bench/boostbench.cc
endif

# iceoryx chunk loan/release through its C binding; RouDi is started by
# icebench itself with bench/roudi.toml.
if HAVE_ICEORYX
noinst_PROGRAMS += bench/icebench
bench_icebench_SOURCES = bench/icebench.c bench/util.c bench/bench.h
bench_icebench_CFLAGS = $(AM_CFLAGS) -O2 $(ICEORYX_CFLAGS)
bench_icebench_LDADD = $(ICEORYX_LIBS)
else
EXTRA_DIST += bench/icebench.c
endif
EXTRA_DIST += bench/roudi.toml

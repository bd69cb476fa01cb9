# bench: spanbench and the comparison with other allocators.  Nothing here
# runs in `make check`; `make bench` runs bench/run-bench.sh, which writes
# bench/RESULTS.md in the source tree (see bench/README.md).
noinst_PROGRAMS += bench/spanbench
bench_spanbench_SOURCES = \
	bench/bench.h bench/util.c bench/spanbench.c \
	bench/wl.h bench/wl_libc.c \
	bench/rpc.h bench/rpc.c bench/daemon.c
# libspanclient is being written; until it links, spanbench measures
# malloc only.
bench_spanbench_CPPFLAGS = $(AM_CPPFLAGS) -DBENCH_NO_SPAND
bench_spanbench_CFLAGS = $(AM_CFLAGS) -O2 $(PROTOBUF_C_CFLAGS)
bench_spanbench_LDADD = proto/libproto.la shm/libshm.la $(PROTOBUF_C_LIBS) -ldl
bench_spanbench_LDFLAGS = -static

EXTRA_DIST += bench/wl_spand.c

.PHONY: bench
bench: all
	@test -f $(srcdir)/bench/run-bench.sh || { echo "bench/run-bench.sh: not written yet"; exit 1; }
	$(SHELL) $(srcdir)/bench/run-bench.sh --builddir '$(abs_top_builddir)' \
	  --srcdir '$(abs_top_srcdir)' $(BENCH_FLAGS)

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

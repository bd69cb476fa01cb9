# Two small programs that share a linked list through the arena: list-build
# makes it and prints its offset, list-walk walks it by raw pointers and
# frees it (scripts/demo.sh runs them).
noinst_PROGRAMS += examples/list-build examples/list-walk
examples_list_build_SOURCES = examples/list-build.c examples/list.h
examples_list_build_LDADD = client/libspanclient.la
examples_list_walk_SOURCES = examples/list-walk.c examples/list.h
examples_list_walk_LDADD = client/libspanclient.la

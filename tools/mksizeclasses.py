#!/usr/bin/env python3
"""Generate spand's size-class table: shm/sizeclasses.h and shm/sizeclasses.c.

See shm/layout.h for the overview.  Run from the source tree:

    python3 tools/mksizeclasses.py shm/

The output is checked in and never edited by hand; `make check` regenerates it
into the build tree and compares (tests/sizeclasses-regen.sh).

How the classes are chosen
--------------------------
* Objects are at least 8 bytes and a multiple of 8.  Up to 128 bytes every
  multiple of 8 is a class: below that the 8-byte granule is the rounding.
* Above 128 bytes each class is the largest size, rounded down to an alignment
  of about 1/16 of the size (128 above 1 KiB, the lookup table's step), for which a request one byte larger than the
  previous class wastes at most 12.5 % of the object ("rounding waste").
* Each class gets the fewest pages (8 KiB each) whose span leaves at most
  12.5 % unused at its end ("tail waste").
* Two neighbouring classes whose spans hold the same number of objects in the
  same pages are merged into the larger one, as the Go runtime does, only if
  the merged class still meets the rounding bound.  (Classes are chosen and
  merged with these one-page-minimum spans.)
* Then classes of BIG_CLASS bytes and up get bigger spans: the fewest pages
  holding at least BIG_SPAN_BYTES and the objects of the first of SPAN_TIERS
  that the class can reach, with the same tail-waste bound and an exact
  divmul, within that tier's pages: 64 objects in at most 512 KiB, else 32
  in 512 KiB, else 8 in 256 KiB (where divmul cannot reach even that, the
  most pages it can).  With one or two objects a span the big classes went
  through the slow path every few objects and a Refill of 256 spans held
  few objects; with 8, a process freeing another's objects handed them back
  a few at a time, each span's lines moving between the two for a few
  objects; the small classes keep small spans for the footprint
  (doc/design.md section 1.6).
* The last class is the tiny class: 16-byte blocks that hold several tiny
  allocations (the client's requests of 0..4 bytes; 5..15 bytes take the
  8- and 16-byte classes), with a live count per block kept in the first
  blocks of the span (nreserved of them).
* divmul turns a byte offset inside a span into an object index without a
  division: idx = (off * divmul) >> 32.  The script checks it for every
  offset of every span.
"""
import os
import sys

PAGE_SHIFT = 13
PAGE_SIZE = 1 << PAGE_SHIFT
MAX_SMALL = 32768
MAX_WASTE = 1 / 8          # 12.5 %
MIN_SPAN_BYTES = 8192      # small classes: at least one page
BIG_CLASS = 64             # classes of this size and up get bigger spans:
BIG_SPAN_BYTES = 65536     # at least this much, and at least
SPAN_TIERS = ((64, 64),    # (objects, at most pages): the first tier a class
              (32, 64),    # reaches within the tail bound and with an exact
              (8, 32))     # divmul; 64 pages = 512 KiB
BITS_PER_PAGE = 1024       # alloc bitmap capacity: 128 bytes per page
TINY_BLOCK = 16
EXPECTED_CLASSES = 67      # classes 1..66 plus the tiny class; class 0 is "none"


def align_for(size):
    a = 8
    while a * 2 <= size // 16:
        a *= 2
    if size > 1024:
        a = max(a, 128)     # the lookup table above 1 KiB has 128-byte steps
    return a


def class_sizes():
    sizes = list(range(8, 129, 8))
    while sizes[-1] < MAX_SMALL:
        prev = sizes[-1]
        # largest s with (s - (prev + 1)) / s <= MAX_WASTE
        limit = int((prev + 1) / (1 - MAX_WASTE))
        a = align_for(limit)
        s = limit // a * a
        if s <= prev:
            s = prev + a
        sizes.append(min(s, MAX_SMALL))
    return sizes


def pages_for(size, min_bytes=MIN_SPAN_BYTES):
    npages = 1
    while True:
        span = npages * PAGE_SIZE
        if span >= max(size, min_bytes) and (span % size) <= span * MAX_WASTE:
            return npages
        npages += 1


def divmul_for(size):
    return (1 << 32) // size + 1 if size & (size - 1) else (1 << 32) // size


def divmul_exact(size, span):
    """(off * divmul) >> 32 == off // size for every off < span.  The left side
    never decreases as off grows, so the first and last byte of each object
    are enough."""
    d = divmul_for(size)
    for k in range((span + size - 1) // size):
        for off in (k * size, min(k * size + size, span) - 1):
            if (off * d) >> 32 != off // size:
                return False
    return True


def big_pages_for(size):
    """Pages for a class of BIG_CLASS bytes or more: the fewest that reach
    BIG_SPAN_BYTES and the objects of the first of SPAN_TIERS that can be
    reached within the tail-waste bound, with an exact divmul and within
    that tier's pages; where divmul cannot reach even the last tier, the
    most pages it can (never fewer than the plain pages_for)."""
    base = pages_for(size)
    ok = []
    for objects, max_pages in SPAN_TIERS:
        want = max(BIG_SPAN_BYTES, objects * size)
        ok = [p for p in range(base, max_pages + 1)
              if (p * PAGE_SIZE) % size <= p * PAGE_SIZE * MAX_WASTE
              and divmul_exact(size, p * PAGE_SIZE)]
        for p in ok:
            if p * PAGE_SIZE >= want:
                return p
    return ok[-1] if ok else base


def rounding_waste(size, prev):
    """Worst case fraction of an object lost to rounding: a request of prev+1."""
    if size - prev <= 8:
        return 0.0          # the 8-byte granule; nothing finer exists
    return (size - (prev + 1)) / size


def build():
    sizes = class_sizes()
    classes = [(s, pages_for(s)) for s in sizes]
    merged = True
    while merged:
        merged = False
        for i in range(1, len(classes) - 1):
            (s0, p0), (s1, p1) = classes[i], classes[i + 1]
            prev = classes[i - 1][0]
            if p0 == p1 and (p0 * PAGE_SIZE) // s0 == (p1 * PAGE_SIZE) // s1 \
                    and rounding_waste(s1, prev) <= MAX_WASTE:
                del classes[i]
                merged = True
                break
    # the classes are chosen with one-page spans as the minimum; the bigger
    # classes then get their bigger spans
    classes = [(s, big_pages_for(s) if s >= BIG_CLASS else p) for s, p in classes]
    out = []
    for s, p in classes:
        nelems = p * PAGE_SIZE // s
        out.append(dict(size=s, npages=p, nelems=nelems, nreserved=0))
    # the tiny class: 16-byte blocks, one live-count byte per block at the
    # start of the span
    nelems = PAGE_SIZE // TINY_BLOCK
    nres = (nelems + TINY_BLOCK - 1) // TINY_BLOCK
    out.append(dict(size=TINY_BLOCK, npages=1, nelems=nelems, nreserved=nres))
    for c in out:
        c['divmul'] = divmul_for(c['size'])
    return out


def check(classes):
    normal = classes[:-1]
    assert len(classes) + 1 == EXPECTED_CLASSES, \
        "number of size classes changed: %d" % (len(classes) + 1)
    assert normal[-1]['size'] == MAX_SMALL
    prev = 0
    for c in classes[:-1]:
        s, p = c['size'], c['npages']
        span = p * PAGE_SIZE
        assert s % 8 == 0 and s > prev
        assert (span % s) / span <= MAX_WASTE, "tail waste %d" % s
        assert rounding_waste(s, prev) <= MAX_WASTE, "rounding waste %d" % s
        assert c['nelems'] <= p * BITS_PER_PAGE
        # a remote-free record's entry holds an index with bit 15 clear
        # (shm/span.h), and shm/span.c compares 16-bit lanes that must not
        # carry
        assert c['nelems'] < 0x8000, "nelems %d" % s
        prev = s
    for c in classes:
        s, span = c['size'], c['npages'] * PAGE_SIZE
        assert c['divmul'] == divmul_for(s)
        assert divmul_exact(s, span), "divmul %d span %d" % (s, span)
        # shm_obj_starts (shm/span.h): the low half of off * divmul is below
        # divmul exactly at an object's first byte
        e = s * c['divmul'] - (1 << 32)
        assert (c['nelems'] - 1) * e < c['divmul'], "obj_starts %d" % s


def emit(classes, outdir):
    n = len(classes) + 1
    banner = "/* Code generated by tools/mksizeclasses.py; DO NOT EDIT. */\n"
    h = [banner,
         "/* See shm/layout.h for the overview. */\n",
         "#ifndef SHM_SIZECLASSES_H\n#define SHM_SIZECLASSES_H\n\n",
         "#include <stdint.h>\n\n",
         "#define SHM_NCLASSES %d      /* class 0 is none (free or large) */\n" % n,
         "#define SHM_CLASS_TINY %d    /* 16-byte blocks shared by tiny allocations */\n" % (n - 1),
         "#define SHM_MAX_SMALL %d\n" % MAX_SMALL,
         "#define SHM_TINY_MAX %d        /* the tiny class's block size; the client puts\n"
         "                                  only requests of 0..4 B there (SPCI_TINY_LIMIT,\n"
         "                                  client/cache.h): 5..15 B take classes 1 and 2 */\n\n" % TINY_BLOCK,
         "/* One size class.  Read-only after build; copied into the arena header. */\n",
         "typedef struct shm_class_s {\n",
         "    uint32_t size;      /* bytes per object */\n",
         "    uint32_t npages;    /* pages per span */\n",
         "    uint32_t nelems;    /* objects per span, reserved ones included */\n",
         "    uint32_t nreserved; /* leading objects never handed out (tiny counts) */\n",
         "    uint32_t divmul;    /* idx = (off * divmul) >> 32 for off < span bytes */\n",
         "} shm_class_t;\n\n",
         "extern const shm_class_t shm_classes[SHM_NCLASSES];\n",
         "extern const uint8_t shm_class_small[1024 / 8 + 1];    /* (size + 7) >> 3 */\n",
         "extern const uint8_t shm_class_large[(32768 - 1024) / 128 + 1]; /* (size - 897) >> 7 */\n\n",
         "/* Class of a request of 1..SHM_MAX_SMALL bytes (tiny requests not included). */\n",
         "static inline unsigned shm_size_to_class(uint64_t size)\n{\n",
         "    if (__builtin_expect(size <= 1024, 1))   /* the common sizes: fall through */\n        return shm_class_small[(size + 7) >> 3];\n",
         "    return shm_class_large[(size - 1024 + 127) >> 7];\n}\n\n",
         "#endif /* SHM_SIZECLASSES_H */\n"]
    c = [banner,
         "/* See shm/layout.h for the overview. */\n",
         '#include "shm/sizeclasses.h"\n\n',
         "/*  class   bytes/obj  pages  objects  reserved  tail waste  max waste\n"]
    prev = 0
    for i, k in enumerate(classes, 1):
        span = k['npages'] * PAGE_SIZE
        tail = (span % k['size']) / span
        mw = rounding_waste(k['size'], prev) if i < n - 1 else 0.0
        c.append(" *  %5d  %9d  %5d  %7d  %8d  %9.2f%%  %8.2f%%\n" % (
            i, k['size'], k['npages'], k['nelems'], k['nreserved'], tail * 100, mw * 100))
        prev = k['size']
    c.append(" */\n\nconst shm_class_t shm_classes[SHM_NCLASSES] = {\n")
    c.append("    [0] = { 0, 0, 0, 0, 0 },\n")
    for i, k in enumerate(classes, 1):
        c.append("    [%d] = { %d, %d, %d, %d, %du },\n" % (
            i, k['size'], k['npages'], k['nelems'], k['nreserved'], k['divmul']))
    c.append("};\n\n")

    def lookup(size):
        for i, k in enumerate(classes[:-1], 1):
            if k['size'] >= size:
                return i
        raise AssertionError(size)
    small = [lookup(max(1, i * 8)) for i in range(1024 // 8 + 1)]
    large = [lookup(1024 + i * 128) for i in range((32768 - 1024) // 128 + 1)]
    for name, tab in (("shm_class_small[1024 / 8 + 1]", small),
                      ("shm_class_large[(32768 - 1024) / 128 + 1]", large)):
        c.append("const uint8_t %s = {\n" % name)
        for j in range(0, len(tab), 16):
            c.append("    " + ", ".join(str(x) for x in tab[j:j + 16]) + ",\n")
        c.append("};\n\n")
    with open(os.path.join(outdir, "sizeclasses.h"), "w") as f:
        f.write("".join(h))
    with open(os.path.join(outdir, "sizeclasses.c"), "w") as f:
        f.write("".join(c).rstrip("\n") + "\n")


def main():
    outdir = sys.argv[1] if len(sys.argv) > 1 else "shm"
    classes = build()
    check(classes)
    emit(classes, outdir)


if __name__ == "__main__":
    main()

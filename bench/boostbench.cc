// boostbench: the spanbench workloads on Boost.Interprocess
// managed_shared_memory (rbtree_best_fit behind one process-shared mutex),
// the cross-process comparator of spand.  Same output as spanbench
// ("R boost wN size metric value", see bench/bench.h), same workload
// numbers; only those that make sense for a shared segment are offered:
// 1, 2, 3, 4, 5 (offsets through a ring in shared memory), 6, 7 and 8.
//
//   boostbench [--workloads LIST] [--sizes LIST] [--reps N] [--secs S]
//              [--quick] [--timeout S]
//
// Every measurement runs in a forked child; the segment has a name of its
// own (pid and a counter) and is removed at the end, on failure and on
// SIGINT/SIGTERM.
#include <boost/interprocess/managed_shared_memory.hpp>

#include <atomic>
#include <cerrno>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include <fcntl.h>
#include <sched.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

namespace bip = boost::interprocess;

namespace {

const size_t kBatch = 10000, kBatchBytes = 256u << 20, kRing = 1024;
const size_t kMemObjects = 1000000;
const uint64_t kScavBytes = 1ull << 30;

struct Opts {
    double secs = 0.2;
    int reps = 5;
    unsigned workloads = ~0u;
    std::vector<size_t> sizes{16, 64, 256, 1024, 4096, 16384, 262144};
    std::vector<size_t> scav_sizes{256, 262144};
    double scav_wait = 2.0;
    double timeout = 120;
} opts;

char seg_name[64];            // current segment, for the cleanup
volatile pid_t children[8];

uint64_t now_ns()
{
    timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return uint64_t(ts.tv_sec) * 1000000000u + uint64_t(ts.tv_nsec);
}

inline void escape(void *p) { __asm__ volatile("" : : "r"(p) : "memory"); }

void result(int w, size_t size, const char *metric, double v)
{
    printf("R\tboost\tw%d\t%zu\t%s\t%.6g\n", w, size, metric, v);
    fflush(stdout);
}

void skip(int w, size_t size, const char *why)
{
    printf("S\tboost\tw%d\t%zu\t%s\n", w, size, why);
    fflush(stdout);
}

[[noreturn]] void die(const char *what)
{
    fprintf(stderr, "boostbench: %s\n", what);
    fflush(stdout);
    _exit(2);
}

void on_signal(int sig)
{
    for (pid_t p : children)
        if (p > 0)
            kill(p, SIGKILL);
    if (seg_name[0])
        bip::shared_memory_object::remove(seg_name);
    _exit(128 + sig);
}

void register_child(pid_t pid)
{
    for (auto &c : children)
        if (c == 0) {
            c = pid;
            return;
        }
}

void unregister_child(pid_t pid)
{
    for (auto &c : children)
        if (c == pid)
            c = 0;
}

template <class F> pid_t spawn(F fn)
{
    fflush(stdout);
    pid_t pid = fork();
    if (pid < 0)
        die("fork failed");
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        signal(SIGINT, SIG_DFL);
        signal(SIGTERM, SIG_DFL);
        int rc = 0;
        try {
            rc = fn();
        } catch (const std::exception &e) {
            fprintf(stderr, "boostbench: %s\n", e.what());
            rc = 1;
        }
        fflush(stdout);
        _exit(rc);
    }
    register_child(pid);
    return pid;
}

int wait_child(pid_t pid, double secs)
{
    uint64_t deadline = now_ns() + uint64_t(secs * 1e9);
    int status = 0;
    for (;;) {
        pid_t r = waitpid(pid, &status, WNOHANG);
        if (r == pid)
            break;
        if (r < 0 && errno != EINTR)
            return -1;
        if (now_ns() > deadline) {
            fprintf(stderr, "boostbench: child %d killed after %.0f s\n", int(pid), secs);
            kill(pid, SIGKILL);
            waitpid(pid, &status, 0);
            unregister_child(pid);
            return -1;
        }
        usleep(2000);
    }
    unregister_child(pid);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

// Anonymous shared memory, inherited by the children forked after it.
template <class T> T *shared_new()
{
    void *p = mmap(nullptr, sizeof(T), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
        die("mmap failed");
    return new (p) T();
}

template <class T> void shared_delete(T *p)
{
    p->~T();
    munmap(p, sizeof(T));
}

struct Gate {
    std::atomic<int> ready{0}, go{0}, failed{0};
    void wait()
    {
        ready.fetch_add(1);
        while (!go.load())
            sched_yield();
    }
    bool open(int n, double secs)
    {
        uint64_t deadline = now_ns() + uint64_t(secs * 1e9);
        while (ready.load() < n && now_ns() < deadline)
            usleep(1000);
        go.store(1);
        return ready.load() >= n;
    }
};

void backoff(unsigned &spins)
{
    if (++spins < 64)
        __builtin_ia32_pause();
    else
        sched_yield();
}

// The ring of bench/bench.h (bench_ring_t), the same algorithm: each side
// publishes its index every kPublish items and before it waits, and looks at
// the other's index again only when the ring looks full or empty.
constexpr uint64_t kPublish = 8;
struct Ring {
    // the shared indices, each alone on its line: the other side polls it
    alignas(64) std::atomic<uint64_t> head{0};
    alignas(64) std::atomic<uint64_t> tail{0};
    alignas(64) uint64_t head_priv = 0;    // producer only
    uint64_t tail_seen = 0;                // producer only
    alignas(64) uint64_t tail_priv = 0;    // consumer only
    uint64_t head_seen = 0;                // consumer only
    alignas(64) uint64_t slot[kRing];
    std::atomic<int> stop{0};
    void put(uint64_t v)
    {
        uint64_t h = head_priv;
        if (h - tail_seen >= kRing) {
            unsigned spins = 0;
            head.store(h, std::memory_order_release);
            for (;;) {
                tail_seen = tail.load(std::memory_order_acquire);
                if (h - tail_seen < kRing)
                    break;
                backoff(spins);
            }
        }
        slot[h % kRing] = v;
        head_priv = ++h;
        if (h % kPublish == 0)
            head.store(h, std::memory_order_release);
    }
    void close()
    {
        head.store(head_priv, std::memory_order_release);
        stop.store(1, std::memory_order_release);
    }
    bool get(uint64_t &v)
    {
        uint64_t t = tail_priv;
        if (head_seen == t) {
            unsigned spins = 0;
            tail.store(t, std::memory_order_release);
            for (;;) {
                head_seen = head.load(std::memory_order_acquire);
                if (head_seen != t)
                    break;
                if (stop.load(std::memory_order_acquire) &&
                    (head_seen = head.load(std::memory_order_acquire)) == t)
                    return false;
                backoff(spins);
            }
        }
        v = slot[t % kRing];
        tail_priv = ++t;
        if (t % kPublish == 0)
            tail.store(t, std::memory_order_release);
        return true;
    }
};

// ---- the allocator under test ----

struct Seg {
    bip::managed_shared_memory m;
    void *alloc(size_t n)
    {
        void *p = m.allocate(n);   // throws bad_alloc when full
        *static_cast<volatile char *>(p) = 1;
        escape(p);
        return p;
    }
    void free(void *p) { m.deallocate(p); }
};

size_t segment_bytes(int w, size_t size)
{
    switch (w) {
    case 2: return kBatchBytes * 5 / 4 + (64u << 20);
    case 4: case 5: return (kRing + 64) * (size + 64) + (64u << 20);
    case 7: return (kMemObjects * (size + 64)) + (64u << 20);
    case 8: return kScavBytes * 5 / 4 + (64u << 20);
    default: return 64u << 20;
    }
}

// What the segment costs the system: its resident bytes in tmpfs.
uint64_t seg_resident()
{
    std::string path = std::string("/dev/shm/") + seg_name;
    struct stat st;
    if (stat(path.c_str(), &st) != 0)
        die("stat of the segment failed");
    return uint64_t(st.st_blocks) * 512;
}

uint64_t immediate(Seg &s, size_t size, double secs, uint64_t &ns)
{
    uint64_t ops = 0, t0 = now_ns(), end = t0 + uint64_t(secs * 1e9), t;
    do {
        for (int i = 0; i < 1024; i++)
            s.free(s.alloc(size));
        ops += 1024;
        t = now_ns();
    } while (t < end);
    ns = t - t0;
    return ops;
}

void w1(Seg &s, size_t size)
{
    uint64_t ns;
    immediate(s, size, opts.secs / 5, ns);
    uint64_t ops = immediate(s, size, opts.secs, ns);
    result(1, size, "ops", double(ops) * 1e9 / double(ns));
}

void w2(Seg &s, size_t size)
{
    size_t n = std::min(kBatch, kBatchBytes / size);
    std::vector<void *> v(n);
    uint64_t ops = 0, t0 = 0, t = 0, end = 0;
    for (int phase = 0; phase < 2; phase++) {   // warm-up, then timed
        ops = 0;
        t0 = now_ns();
        end = t0 + uint64_t((phase ? opts.secs : opts.secs / 5) * 1e9);
        do {
            for (size_t i = 0; i < n; i++)
                v[i] = s.alloc(size);
            for (size_t i = 0; i < n; i++)
                s.free(v[i]);
            ops += n;
            t = now_ns();
        } while (t < end);
    }
    result(2, size, "ops", double(ops) * 1e9 / double(t - t0));
}

void w3(Seg &s, size_t size)
{
    Gate g;
    uint64_t ops[2], ns[2];
    auto body = [&](int i) {
        uint64_t x;
        immediate(s, size, opts.secs / 5, x);
        g.wait();
        ops[i] = immediate(s, size, opts.secs, ns[i]);
    };
    std::thread a(body, 0), b(body, 1);
    g.open(2, opts.timeout);
    a.join();
    b.join();
    result(3, size, "ops", double(ops[0] + ops[1]) * 1e9 / double(std::max(ns[0], ns[1])));
}

void produce(Seg &s, Ring &r, size_t size, double secs)
{
    uint64_t end = now_ns() + uint64_t(secs * 1e9);
    try {
        do {
            for (int i = 0; i < 1024; i++)
                r.put(uint64_t(s.m.get_handle_from_address(s.alloc(size))));
        } while (now_ns() < end);
    } catch (...) {
        r.close();   // let the consumer finish
        throw;
    }
    r.close();
}

uint64_t consume(Seg &s, Ring &r)
{
    uint64_t v, n = 0;
    while (r.get(v)) {
        s.free(s.m.get_address_from_handle(bip::managed_shared_memory::handle_t(v)));
        n++;
    }
    return n;
}

// Workloads 4 and 5 as bench/wl.h runs them: a warm-up exchange through
// `warm` for a fifth of the time, untimed, then the timed one through
// `ring`, begun when both sides have met.
struct Pair {
    Ring warm, ring;
    std::atomic<int> met{0};
    void meet()
    {
        met.fetch_add(1);
        while (met.load() < 2)
            sched_yield();
    }
    void producer(Seg &s, size_t size)
    {
        try {
            produce(s, warm, size, opts.secs / 5);
        } catch (...) {
            ring.close();   // the consumer finishes both
            meet();
            throw;
        }
        meet();
        produce(s, ring, size, opts.secs);
    }
    uint64_t consumer(Seg &s, uint64_t &ns)
    {
        consume(s, warm);
        meet();
        uint64_t t0 = now_ns();
        uint64_t n = consume(s, ring);
        ns = now_ns() - t0;
        return n;
    }
};

void w4(Seg &s, size_t size)
{
    Pair *x = shared_new<Pair>();
    Gate g;
    uint64_t n = 0, ns = 0;
    std::thread c([&] {
        g.wait();
        n = x->consumer(s, ns);
    });
    g.open(1, opts.timeout);
    try {
        x->producer(s, size);
    } catch (...) {
        c.join();
        throw;
    }
    c.join();
    result(4, size, "ops", double(n) * 1e9 / double(ns));
    shared_delete(x);
}

struct Shared {
    Gate gate;
    Pair x;         // workload 5
    std::atomic<uint64_t> ops[2], ns[2];
};

// Workloads 5 and 6: two processes open the segment by name.
void two_procs(int w, size_t size)
{
    Shared *sh = shared_new<Shared>();
    pid_t pid[2];
    for (int i = 0; i < 2; i++)
        pid[i] = spawn([=]() {
            Seg s{bip::managed_shared_memory(bip::open_only, seg_name)};
            if (w == 6) {
                uint64_t ns;
                immediate(s, size, opts.secs / 5, ns);
                sh->gate.wait();
                sh->ops[i] = immediate(s, size, opts.secs, ns);
                sh->ns[i] = ns;
            } else if (i == 0) {
                sh->gate.wait();
                sh->x.producer(s, size);
            } else {
                sh->gate.wait();
                uint64_t ns;
                sh->ops[1] = sh->x.consumer(s, ns);
                sh->ns[1] = ns;
            }
            return 0;
        });
    sh->gate.open(2, opts.timeout);
    bool ok = wait_child(pid[0], opts.timeout) == 0;
    ok = wait_child(pid[1], opts.timeout) == 0 && ok;
    if (!ok)
        skip(w, size, "a worker process failed");
    else if (w == 6)
        result(6, size, "ops",
               double(sh->ops[0] + sh->ops[1]) * 1e9 / double(std::max(sh->ns[0].load(), sh->ns[1].load())));
    else
        result(5, size, "ops", double(sh->ops[1]) * 1e9 / double(sh->ns[1]));
    shared_delete(sh);
}

void w7(Seg &s, size_t size)
{
    std::vector<void *> v(kMemObjects);
    uint64_t f0 = seg_resident();
    for (auto &p : v) {
        p = s.alloc(size);
        memset(p, 1, size);
    }
    uint64_t f1 = seg_resident();
    result(7, size, "mem_bytes", double(f1 - f0));
    result(7, size, "mem_per_live", double(f1 - f0) / (double(kMemObjects) * double(size)));
    for (auto p : v)
        s.free(p);
}

void *fill(Seg &s, size_t size)
{
    void *head = nullptr;
    for (uint64_t got = 0; got < kScavBytes; got += size) {
        char *p = static_cast<char *>(s.alloc(size));
        for (size_t o = 4096; o < size; o += 4096)
            p[o] = 1;
        *reinterpret_cast<void **>(p) = head;
        head = p;
    }
    return head;
}

void drain(Seg &s, void *head)
{
    while (head) {
        void *next = *static_cast<void **>(head);
        s.free(head);
        head = next;
    }
}

// Boost never gives segment memory back: measured, not assumed.
void w8(Seg &s, size_t size)
{
    uint64_t f0 = seg_resident();
    void *list = fill(s, size);
    uint64_t f1 = seg_resident(), grown = f1 > f0 ? f1 - f0 : 0;
    drain(s, list);
    uint64_t t0 = now_ns(), end = t0 + uint64_t(opts.scav_wait * 1e9), t, t90 = 0;
    double back_at_free = grown ? double(int64_t(f1 - seg_resident())) / double(grown) : 0;
    double frac;
    do {
        usleep(10000);
        t = now_ns();
        frac = grown ? double(int64_t(f1 - seg_resident())) / double(grown) : 0;
        if (frac >= 0.9 && !t90) {
            t90 = t - t0;
            break;
        }
    } while (t < end);
    result(8, size, "grown_mb", double(grown) / 1048576.0);
    result(8, size, "back_at_free", back_at_free);
    result(8, size, "back_within_wait", frac);
    result(8, size, "t90_ms", t90 ? double(t90) / 1e6 : -1);
}

int measure(int w, size_t size)
{
    static unsigned counter;
    snprintf(seg_name, sizeof seg_name, "boostbench-%d-%u", int(getpid()), counter++);
    int rc = 0;
    {
        Seg s{bip::managed_shared_memory(bip::create_only, seg_name, segment_bytes(w, size))};
        pid_t pid = spawn([&]() {
            switch (w) {
            case 1: w1(s, size); break;
            case 2: w2(s, size); break;
            case 3: w3(s, size); break;
            case 4: w4(s, size); break;
            case 5: case 6: two_procs(w, size); break;
            case 7: w7(s, size); break;
            case 8: w8(s, size); break;
            }
            return 0;
        });
        rc = wait_child(pid, opts.timeout);
    }
    bip::shared_memory_object::remove(seg_name);
    seg_name[0] = 0;
    return rc;
}

std::vector<size_t> parse_list(const char *s)
{
    std::vector<size_t> v;
    std::string str(s);
    size_t pos = 0;
    while (pos <= str.size()) {
        size_t comma = str.find(',', pos);
        std::string t = str.substr(pos, comma == std::string::npos ? std::string::npos : comma - pos);
        char *end;
        unsigned long long x = strtoull(t.c_str(), &end, 10);
        if (*end == 'K' || *end == 'k')
            x <<= 10, end++;
        if (*end || x == 0)
            die("bad number list");
        v.push_back(size_t(x));
        if (comma == std::string::npos)
            break;
        pos = comma + 1;
    }
    return v;
}

}  // namespace

int main(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        std::string a = argv[i];
        auto next = [&]() -> const char * {
            if (i + 1 >= argc)
                die("option needs a value");
            return argv[++i];
        };
        if (a == "--workloads") {
            std::string v = next();
            if (v != "all") {
                opts.workloads = 0;
                for (size_t w : parse_list(v.c_str()))
                    opts.workloads |= 1u << w;
            }
        } else if (a == "--sizes") {
            opts.sizes = parse_list(next());
        } else if (a == "--scav-sizes") {
            opts.scav_sizes = parse_list(next());
        } else if (a == "--reps") {
            opts.reps = atoi(next());
        } else if (a == "--secs") {
            opts.secs = atof(next());
        } else if (a == "--scav-wait") {
            opts.scav_wait = atof(next());
        } else if (a == "--timeout") {
            opts.timeout = atof(next());
        } else if (a == "--quick") {
            opts.secs = 0.03;
            opts.reps = 1;
            opts.scav_sizes = {262144};
            opts.scav_wait = 1.0;
        } else {
            fprintf(stderr, "usage: boostbench [--workloads LIST] [--sizes LIST] [--reps N]\n"
                            "                  [--secs S] [--scav-sizes LIST] [--scav-wait S]\n"
                            "                  [--quick] [--timeout S]\n");
            return 2;
        }
    }
    if (opts.reps < 1 || opts.secs <= 0)
        die("bad --reps or --secs");
    setvbuf(stdout, nullptr, _IOLBF, 0);
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);
    signal(SIGHUP, on_signal);
    printf("# boostbench Boost %d.%d.%d secs=%g reps=%d\n", BOOST_VERSION / 100000,
           BOOST_VERSION / 100 % 1000, BOOST_VERSION % 100, opts.secs, opts.reps);
    int failures = 0;
    for (int w = 1; w <= 9; w++) {
        if (!(opts.workloads & (1u << w)))
            continue;
        if (w == 9) {
            skip(9, 0, "no daemon");
            continue;
        }
        std::vector<size_t> sizes = w == 7 ? std::vector<size_t>{24, 8}
                                  : w == 8 ? opts.scav_sizes : opts.sizes;
        for (int r = 0; r < opts.reps; r++)
            for (size_t size : sizes)
                if (measure(w, size) != 0) {
                    skip(w, size, "measurement failed");
                    failures++;
                }
    }
    return failures ? 1 : 0;
}

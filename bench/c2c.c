/* c2c: how long one cache line takes to go from one core to another and
 * back, for bench/RESULTS.md.  Two threads pinned to the first two CPUs
 * pass a counter back and forth through one line; prints the median round
 * trip of 9 runs of 100,000 in nanoseconds.  On a virtual machine this
 * moves with where the host runs the virtual CPUs (the cross-core
 * workloads, 4 and 5, move with it), so run-bench.sh measures it before
 * each allocator's run.  Prints "-" with fewer than two CPUs. */
#define _GNU_SOURCE
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#define ROUNDS 100000L
#define RUNS   9

static _Alignas(64) _Atomic long line;

static int pin(int cpu)
{
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    return sched_setaffinity(0, sizeof set, &set);
}

static void *echo(void *arg)
{
    (void)arg;
    if (pin(1) != 0)
        return NULL;
    for (long i = 1; i < 2 * ROUNDS * RUNS; i += 2) {
        while (atomic_load_explicit(&line, memory_order_acquire) != i)
            ;
        atomic_store_explicit(&line, i + 1, memory_order_release);
    }
    return NULL;
}

static int cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int main(void)
{
    pthread_t t;
    if (sysconf(_SC_NPROCESSORS_ONLN) < 2 || pin(0) != 0 ||
        pthread_create(&t, NULL, echo, NULL) != 0) {
        puts("-");
        return 0;
    }
    double ns[RUNS];
    long v = 0;
    for (int r = 0; r < RUNS; r++) {
        struct timespec a, b;
        clock_gettime(CLOCK_MONOTONIC, &a);
        for (long i = 0; i < ROUNDS; i++, v += 2) {
            atomic_store_explicit(&line, v + 1, memory_order_release);
            while (atomic_load_explicit(&line, memory_order_acquire) != v + 2)
                ;
        }
        clock_gettime(CLOCK_MONOTONIC, &b);
        ns[r] = ((double)(b.tv_sec - a.tv_sec) * 1e9 + (double)(b.tv_nsec - a.tv_nsec)) / ROUNDS;
    }
    pthread_join(t, NULL);
    qsort(ns, RUNS, sizeof ns[0], cmp);
    printf("%.0f\n", ns[RUNS / 2]);
    return 0;
}

/* Large blocks moved by realloc while other threads map new ones (issue 11, defect 1).
 * Two threads grow 5 MiB blocks to 24 MiB with realloc (mremap moves them) and free them;
 * two threads keep eight 5 MiB blocks alive, freeing and replacing one at a time; one
 * thread takes 1 MiB-aligned blocks from posix_memalign; one churns small blocks so that
 * arenas get mapped. Every block carries stamps that are checked before it is freed.
 * Meanwhile the main thread interrupts the growers with SIGURG every few tens of
 * microseconds, and the handler holds the grower 20 us: a grower stopped just after
 * realloc's mremap leaves the other threads time to map where its block was, which is
 * the window of the defect (without it, a loaded machine hid the defect for seconds).
 * Each thread stops after a fixed count or about 2 s, whichever comes first.
 * Prints "large race: all blocks ok" (counts on stderr). */
#define _GNU_SOURCE
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#define MIB (1u << 20)
#define MAX_ROUNDS 200000
#define SECONDS 2.0
#define HOLD_NS 20000
#define NUDGE_NS 20000

static double start;
static long rounds[6];
static atomic_long moved; /* reallocs that moved the block */

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

/* The SIGURG handler: spins (no allocation) where the grower was interrupted. */
static void hold(int sig) {
    (void)sig;
    struct timespec t0, t;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    do clock_gettime(CLOCK_MONOTONIC, &t);
    while ((t.tv_sec - t0.tv_sec) * 1000000000L + t.tv_nsec - t0.tv_nsec < HOLD_NS);
}

static int time_left(long round) {
    return round < MAX_ROUNDS && (round % 16 != 0 || now() - start < SECONDS);
}

static uint64_t stamp_of(uintptr_t origin, size_t n) { return origin * 31 + n; }

/* Stamps the first, middle and last word of the first n bytes. */
static void stamp(char *p, size_t n) {
    uint64_t s = stamp_of((uintptr_t)p, n);
    *(uint64_t *)p = s;
    *(uint64_t *)(p + n / 2) = s + 1;
    *(uint64_t *)(p + n - 8) = s + 2;
}

/* Checks the stamps `stamp(origin, n)` left, now at p (realloc may have moved them). */
static void check(const char *p, uintptr_t origin, size_t n) {
    uint64_t s = stamp_of(origin, n);
    if (*(const uint64_t *)p != s || *(const uint64_t *)(p + n / 2) != s + 1 ||
        *(const uint64_t *)(p + n - 8) != s + 2) {
        fprintf(stderr, "large race: corrupt block %p\n", (const void *)p);
        exit(2);
    }
}

static char *must(void *p) {
    if (!p) { fprintf(stderr, "large race: allocation failed\n"); exit(3); }
    return p;
}

static void *grower(void *arg) {
    long r = 0;
    for (; time_left(r); r++) {
        char *p = must(malloc(5 * MIB));
        stamp(p, 5 * MIB);
        uintptr_t origin = (uintptr_t)p;
        char *q = must(realloc(p, 24 * MIB));
        if ((uintptr_t)q != origin) atomic_fetch_add(&moved, 1);
        check(q, origin, 5 * MIB);
        stamp(q, 24 * MIB);
        check(q, (uintptr_t)q, 24 * MIB);
        free(q);
    }
    rounds[(intptr_t)arg] = r;
    return NULL;
}

static void *keeper(void *arg) {
    char *held[8] = {0};
    long r = 0;
    for (; time_left(r); r++) {
        int i = r % 8;
        if (held[i]) { check(held[i], (uintptr_t)held[i], 5 * MIB); free(held[i]); }
        held[i] = must(malloc(5 * MIB));
        stamp(held[i], 5 * MIB);
    }
    for (int i = 0; i < 8; i++)
        if (held[i]) { check(held[i], (uintptr_t)held[i], 5 * MIB); free(held[i]); }
    rounds[(intptr_t)arg] = r;
    return NULL;
}

static void *aligner(void *arg) {
    char *held[4] = {0};
    long r = 0;
    for (; time_left(r); r++) {
        int i = r % 4;
        if (held[i]) { check(held[i], (uintptr_t)held[i], 3 * MIB); free(held[i]); }
        void *p = NULL;
        if (posix_memalign(&p, MIB, 3 * MIB) != 0 || (uintptr_t)p % MIB != 0) {
            fprintf(stderr, "large race: posix_memalign failed\n");
            exit(3);
        }
        held[i] = p;
        stamp(held[i], 3 * MIB);
    }
    for (int i = 0; i < 4; i++)
        if (held[i]) { check(held[i], (uintptr_t)held[i], 3 * MIB); free(held[i]); }
    rounds[(intptr_t)arg] = r;
    return NULL;
}

static void *small(void *arg) {
    char *held[256] = {0};
    uint64_t x = 88172645463325252ull;
    long r = 0;
    for (; time_left(r); r++) {
        x ^= x << 13; x ^= x >> 7; x ^= x << 17;
        int i = x % 256;
        size_t n = 32 + (x >> 12) % 4000;
        if (held[i]) { check(held[i], (uintptr_t)held[i], 32); free(held[i]); }
        held[i] = must(malloc(n));
        stamp(held[i], 32);
    }
    for (int i = 0; i < 256; i++)
        if (held[i]) { check(held[i], (uintptr_t)held[i], 32); free(held[i]); }
    rounds[(intptr_t)arg] = r;
    return NULL;
}

int main(void) {
    void *(*roles[6])(void *) = {grower, grower, keeper, keeper, aligner, small};
    pthread_t t[6];
    signal(SIGURG, hold);
    start = now();
    for (intptr_t i = 0; i < 6; i++) pthread_create(&t[i], NULL, roles[i], (void *)i);
    struct timespec gap = {0, NUDGE_NS};
    for (long n = 0; n < 200000 && now() - start < SECONDS; n++) {
        pthread_kill(t[n % 2], SIGURG);
        nanosleep(&gap, NULL);
    }
    for (int i = 0; i < 6; i++) pthread_join(t[i], NULL);
    fprintf(stderr, "moved %ld, rounds: grow %ld %ld keep %ld %ld align %ld small %ld\n",
            atomic_load(&moved), rounds[0], rounds[1], rounds[2], rounds[3], rounds[4],
            rounds[5]);
    printf("large race: all blocks ok\n");
    return 0;
}

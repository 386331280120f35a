/* A real program's allocations, in the shape of alloc-test: one thread (or THREADS
 * independent ones) allocating with the size mix of an interpreter or a server: 70% small
 * objects of 16-64 B, 25% strings of 64-256 B, 5% buffers of 256 B-16 KiB. Lifetimes are
 * mostly short: 90% of the blocks go into a ring of 64 (they die 64 allocations later), 9%
 * into a ring of 4096 (medium-lived), and 1% replace a random entry of a long-lived table
 * of 8192 blocks (replaced slowly, so the table holds blocks of every age). One string in
 * 16 grows by `realloc` to twice its size before it dies, as text being built does.
 * Deterministic: xorshift64 seeded by the thread's index. Prints the operations per second.
 *   alloc_test [THREADS [OPS_PER_THREAD]]   (defaults 1 and 6000000) */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "run_workers.h"

enum { SHORT = 64, MEDIUM = 4096, TABLE = 8192, MAX_THREADS = 64 };

static long ops = 6000000;

static uint64_t xorshift(uint64_t *x) {
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    return *x;
}

static void *worker(void *arg) {
    uint64_t x = 0x2545f4914f6cdd1dull * ((uint64_t)(intptr_t)arg + 1);
    void **short_ring = calloc(SHORT, sizeof(void *));
    void **medium_ring = calloc(MEDIUM, sizeof(void *));
    void **table = calloc(TABLE, sizeof(void *));
    unsigned short_next = 0, medium_next = 0;
    for (long op = 0; op < ops; op++) {
        uint64_t r = xorshift(&x);
        unsigned kind = r % 100;
        r >>= 8;
        size_t size;
        if (kind < 70) size = 16 + r % 49;           /* objects */
        else if (kind < 95) size = 64 + r % 193;     /* strings */
        else size = 256 + r % (16 * 1024 - 255);     /* buffers */
        char *block = malloc(size);
        memset(block, (int)op, size < 64 ? size : 64);
        block[size - 1] = 0;
        if (kind >= 70 && kind < 95 && (r >> 16) % 16 == 0) {
            block = realloc(block, 2 * size);
            block[2 * size - 1] = 0;
        }
        unsigned lifetime = (r >> 24) % 100;
        void **slot;
        if (lifetime < 90) slot = &short_ring[short_next++ % SHORT];
        else if (lifetime < 99) slot = &medium_ring[medium_next++ % MEDIUM];
        else slot = &table[(r >> 32) % TABLE];
        free(*slot);
        *slot = block;
    }
    for (int i = 0; i < SHORT; i++) free(short_ring[i]);
    for (int i = 0; i < MEDIUM; i++) free(medium_ring[i]);
    for (int i = 0; i < TABLE; i++) free(table[i]);
    free(short_ring);
    free(medium_ring);
    free(table);
    return NULL;
}

int main(int argc, char **argv) {
    int threads = argc > 1 ? atoi(argv[1]) : 1;
    if (argc > 2) ops = atol(argv[2]);
    if (threads < 1 || threads > MAX_THREADS) threads = 1;
    run_workers("alloc_test", threads, ops, worker);
    return 0;
}

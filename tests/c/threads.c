/* Eight threads pass stamped blocks to each other through a ring of slots: most frees
 * happen on another thread than the allocation. Prints "threads: N blocks ok". */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define THREADS 8
#define ROUNDS 20000
#define SLOTS 1024

static struct { unsigned char *p; size_t n; } ring[SLOTS];
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static long checked;

static unsigned char stamp(uintptr_t p, size_t i) { return (unsigned char)((p >> 4) ^ i * 31); }

static void check_and_free(unsigned char *p, size_t n) {
    for (size_t i = 0; i < n; i += 7)
        if (p[i] != stamp((uintptr_t)p, i)) { fprintf(stderr, "corrupt block %p\n", (void *)p); exit(2); }
    free(p);
}

static void *worker(void *arg) {
    uint64_t x = (uintptr_t)arg * 0x9e3779b97f4a7c15ull + 1;
    long mine = 0;
    for (int r = 0; r < ROUNDS; r++) {
        x ^= x << 13; x ^= x >> 7; x ^= x << 17;
        size_t n = 1 + x % (x % 16 == 0 ? 200000 : 2000);
        unsigned char *p = malloc(n);
        for (size_t i = 0; i < n; i += 7) p[i] = stamp((uintptr_t)p, i);
        size_t slot = (x >> 20) % SLOTS;
        pthread_mutex_lock(&lock);
        unsigned char *old = ring[slot].p; size_t oldn = ring[slot].n;
        ring[slot].p = p; ring[slot].n = n;
        pthread_mutex_unlock(&lock);
        if (old) { check_and_free(old, oldn); mine++; }
    }
    pthread_mutex_lock(&lock); checked += mine; pthread_mutex_unlock(&lock);
    return NULL;
}

int main(void) {
    pthread_t t[THREADS];
    for (long i = 0; i < THREADS; i++) pthread_create(&t[i], NULL, worker, (void *)i);
    for (int i = 0; i < THREADS; i++) pthread_join(t[i], NULL);
    for (int s = 0; s < SLOTS; s++) if (ring[s].p) { check_and_free(ring[s].p, ring[s].n); checked++; }
    printf("threads: %ld blocks ok\n", checked);
    return checked == (long)THREADS * ROUNDS ? 0 : 1;
}

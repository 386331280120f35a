/* Passive false sharing, in the shape of Hoard's cache-scratch: the main thread allocates one
 * small object per worker, one after the other (so, from most allocators, in one cache
 * line), and hands each worker its object. A worker frees it, then ROUNDS times allocates an
 * object of the same size, writes every byte of it WRITES times and frees it. An allocator
 * that gives the freed object (or its neighbour) back to the worker makes the workers write
 * one cache line from two cores, and the line bounces between them; one that gives each
 * thread blocks of its own does not. Deterministic (no randomness needed). Prints the time.
 *   cache_scratch [THREADS [ROUNDS [WRITES [SIZE]]]]   (defaults 2, 2000, 20000 and 8) */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

enum { MAX_THREADS = 64 };

static long rounds = 2000, writes = 20000;
static size_t size = 8;

static void *worker(void *arg) {
    free(arg); /* the object the main thread allocated */
    for (long round = 0; round < rounds; round++) {
        volatile char *object = malloc(size);
        for (long w = 0; w < writes; w++)
            for (size_t i = 0; i < size; i++) object[i] = (char)(w + i);
        free((void *)object);
    }
    return NULL;
}

int main(int argc, char **argv) {
    int threads = argc > 1 ? atoi(argv[1]) : 2;
    if (argc > 2) rounds = atol(argv[2]);
    if (argc > 3) writes = atol(argv[3]);
    if (argc > 4) size = (size_t)atol(argv[4]);
    if (threads < 1 || threads > MAX_THREADS) threads = 2;
    void *objects[MAX_THREADS];
    for (int t = 0; t < threads; t++) objects[t] = malloc(size);
    pthread_t ids[MAX_THREADS];
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (int t = 0; t < threads; t++) pthread_create(&ids[t], NULL, worker, objects[t]);
    for (int t = 0; t < threads; t++) pthread_join(ids[t], NULL);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double seconds = (t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) / 1e9;
    printf("cache_scratch: %d threads, %.3f s\n", threads, seconds);
    return 0;
}

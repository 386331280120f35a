/* Detached threads that end without ever allocating (issue 11, defect 2), while another
 * thread reads the statistics (which walk every thread cache) and allocates. argv[1]:
 *   idle       20 rounds of 12 detached threads whose function does nothing;
 *   free-only  the same, each thread only freeing blocks that the main thread allocated,
 *              too large for a thread cache: the thread's cache is first touched as it
 *              exits (glibc frees other threads' TLS vectors then);
 *   big-stacks waves of detached threads with 8 MiB stacks, past glibc's 40 MiB stack
 *              cache, so that exited threads' stacks (and their TLS) get unmapped.
 * Prints "detached <mode>: N threads ok". A hang is caught by the caller's timeout. */
#define _GNU_SOURCE
#include <malloc.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "../../capi/include/ebbmalloc.h"

#define ROUNDS 20
#define PER_ROUND 12
#define BLOCKS_EACH 8

static atomic_int finished; /* threads that have run their function */
static atomic_int stop;

static void *idle(void *arg) {
    (void)arg;
    atomic_fetch_add(&finished, 1);
    return NULL;
}

static void *free_only(void *arg) {
    void **blocks = arg;
    for (int i = 0; i < BLOCKS_EACH; i++) free(blocks[i]);
    atomic_fetch_add(&finished, 1);
    return NULL;
}

/* Reads the statistics and allocates until told to stop (or a bounded count). */
static void *observer(void *arg) {
    (void)arg;
    for (long i = 0; i < 2000000 && !atomic_load(&stop); i++) {
        struct ebbmalloc_stats s;
        ebbmalloc_stats(&s);
        char *p = malloc(16 + i % 512);
        if (!p || malloc_usable_size(p) < 16 + (size_t)(i % 512)) {
            fprintf(stderr, "detached: bad block\n");
            exit(2);
        }
        p[0] = 1;
        free(p);
    }
    return NULL;
}

static void start_detached(size_t stack, void *(*fn)(void *), void *arg) {
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    if (stack) pthread_attr_setstacksize(&attr, stack);
    pthread_t t;
    int rc = pthread_create(&t, &attr, fn, arg);
    pthread_attr_destroy(&attr);
    if (rc != 0) {
        fprintf(stderr, "detached: pthread_create: %s\n", strerror(rc));
        exit(3);
    }
}

/* Waits until `count` threads have run, then a little for them to finish exiting. */
static void wait_finished(int count) {
    while (atomic_load(&finished) < count) usleep(200);
    usleep(2000);
}

int main(int argc, char **argv) {
    if (argc < 2) return 2;
    const char *mode = argv[1];
    int big = !strcmp(mode, "big-stacks"), frees = !strcmp(mode, "free-only");
    if (!big && !frees && strcmp(mode, "idle")) return 2;
    pthread_t obs;
    pthread_create(&obs, NULL, observer, NULL);
    void *blocks[PER_ROUND][BLOCKS_EACH];
    int started = 0;
    for (int round = 0; round < ROUNDS; round++) {
        for (int i = 0; i < PER_ROUND; i++) {
            if (frees)
                for (int b = 0; b < BLOCKS_EACH; b++) blocks[i][b] = malloc((160 << 10) + (b << 12));
            start_detached(big ? 8u << 20 : 0, frees ? free_only : idle, frees ? blocks[i] : NULL);
            started++;
        }
        wait_finished(started);
    }
    atomic_store(&stop, 1);
    pthread_join(obs, NULL);
    printf("detached %s: %d threads ok\n", mode, atomic_load(&finished));
    return 0;
}

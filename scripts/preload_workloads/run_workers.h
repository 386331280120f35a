/* Shared by the workloads that run N copies of one worker: starts them, waits for them,
 * and prints the operations per second of the whole run as "NAME: N threads, X Mops/s".
 * Each worker is passed its index as its argument. */
#ifndef RUN_WORKERS_H
#define RUN_WORKERS_H

#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <time.h>

static void run_workers(const char *name, int threads, long ops_per_thread,
                        void *(*worker)(void *)) {
    pthread_t ids[threads];
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (int t = 0; t < threads; t++) pthread_create(&ids[t], NULL, worker, (void *)(intptr_t)t);
    for (int t = 0; t < threads; t++) pthread_join(ids[t], NULL);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double seconds = (t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) / 1e9;
    printf("%s: %d threads, %.2f Mops/s\n", name, threads,
           threads * (double)ops_per_thread / seconds / 1e6);
}

#endif

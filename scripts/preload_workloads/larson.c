/* Server-style churn in the shape of larson: THREADS threads each keep SLOTS live blocks of
 * random sizes (8 B to 16 KiB), and each operation frees a random slot's block and puts a
 * new one there. After every round a thread swaps its whole slot array with the one left
 * by another thread, so most blocks are freed by a thread other than the one that
 * allocated them. With a third argument `sized`, blocks are freed with C23's
 * `free_sized(ptr, size)` where the allocator exports it (a weak symbol; `free` otherwise),
 * as C++'s sized delete does. Prints the operations per second.
 *   larson [THREADS [ROUNDS [sized]]]   (defaults 4 and 200) */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

enum { SLOTS = 1000, OPS_PER_ROUND = 10000, MAX_SIZE = 16 << 10 };

static int rounds = 200;
static int sized; /* free through free_sized */
static pthread_mutex_t exchange_lock = PTHREAD_MUTEX_INITIALIZER;

struct slot {
    void *block;
    size_t size;
};
static struct slot *left_behind; /* a slot array waiting for another thread */

extern void free_sized(void *, size_t) __attribute__((weak));

static void release(struct slot *slot) {
    if (sized)
        free_sized(slot->block, slot->size);
    else
        free(slot->block);
}

static unsigned long next(unsigned long *state) {
    *state = *state * 6364136223846793005UL + 1442695040888963407UL;
    return *state >> 33;
}

static void *worker(void *arg) {
    unsigned long seed = (unsigned long)(size_t)arg * 7919 + 1;
    struct slot *slots = calloc(SLOTS, sizeof *slots);
    for (int round = 0; round < rounds; round++) {
        for (int op = 0; op < OPS_PER_ROUND; op++) {
            unsigned long r = next(&seed);
            int i = r % SLOTS;
            release(&slots[i]);
            size_t size = 8 + (next(&seed) % 64 == 0 ? next(&seed) % MAX_SIZE : next(&seed) % 256);
            char *block = malloc(size);
            block[0] = (char)r;
            block[size - 1] = (char)op;
            slots[i] = (struct slot){block, size};
        }
        pthread_mutex_lock(&exchange_lock);
        struct slot *theirs = left_behind;
        left_behind = slots;
        pthread_mutex_unlock(&exchange_lock);
        slots = theirs ? theirs : calloc(SLOTS, sizeof *slots);
    }
    for (int i = 0; i < SLOTS; i++) release(&slots[i]);
    free(slots);
    return NULL;
}

int main(int argc, char **argv) {
    int threads = argc > 1 ? atoi(argv[1]) : 4;
    if (argc > 2) rounds = atoi(argv[2]);
    sized = argc > 3 && strcmp(argv[3], "sized") == 0 && free_sized != NULL;
    pthread_t *ids = malloc(threads * sizeof *ids);
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (int t = 0; t < threads; t++) pthread_create(&ids[t], NULL, worker, (void *)(size_t)t);
    for (int t = 0; t < threads; t++) pthread_join(ids[t], NULL);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    if (left_behind) {
        for (int i = 0; i < SLOTS; i++) release(&left_behind[i]);
        free(left_behind);
    }
    double seconds = (t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) / 1e9;
    printf("larson: %d threads%s, %.2f Mops/s\n", threads, sized ? " (free_sized)" : "", threads * (double)rounds * OPS_PER_ROUND / seconds / 1e6);
    free(ids);
    return 0;
}

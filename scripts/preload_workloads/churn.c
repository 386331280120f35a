/* Four threads replace random slots of their own arrays with new small blocks. */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#define SLOTS 4096
#define OPS 4000000

static void *worker(void *arg) {
    void **slots = calloc(SLOTS, sizeof *slots);
    uint64_t x = (uintptr_t)arg * 0x9e3779b97f4a7c15ull + 7;
    for (long i = 0; i < OPS; i++) {
        x ^= x << 13; x ^= x >> 7; x ^= x << 17;
        size_t s = (x >> 32) % SLOTS;
        free(slots[s]);
        slots[s] = malloc(8 + (x % 504));
        ((char *)slots[s])[0] = 1;
    }
    for (int s = 0; s < SLOTS; s++) free(slots[s]);
    free(slots);
    return NULL;
}

int main(void) {
    pthread_t t[4];
    for (long i = 0; i < 4; i++) pthread_create(&t[i], NULL, worker, (void *)i);
    for (int i = 0; i < 4; i++) pthread_join(t[i], NULL);
    puts("churn done");
    return 0;
}

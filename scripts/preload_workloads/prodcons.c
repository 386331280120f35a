/* One thread allocates batches of 64-byte blocks, another frees them: every free is a
 * cross-thread free. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

#define BATCH 256
#define BATCHES 40000
#define QUEUE 16

static void *queue[QUEUE][BATCH];
static int head, tail;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t changed = PTHREAD_COND_INITIALIZER;

static void *consumer(void *arg) {
    (void)arg;
    for (int b = 0; b < BATCHES; b++) {
        pthread_mutex_lock(&lock);
        while (head == tail) pthread_cond_wait(&changed, &lock);
        int slot = tail % QUEUE;
        pthread_mutex_unlock(&lock);
        for (int i = 0; i < BATCH; i++) free(queue[slot][i]);
        pthread_mutex_lock(&lock);
        tail++;
        pthread_cond_broadcast(&changed);
        pthread_mutex_unlock(&lock);
    }
    return NULL;
}

int main(void) {
    pthread_t c;
    pthread_create(&c, NULL, consumer, NULL);
    for (int b = 0; b < BATCHES; b++) {
        pthread_mutex_lock(&lock);
        while (head - tail == QUEUE) pthread_cond_wait(&changed, &lock);
        int slot = head % QUEUE;
        pthread_mutex_unlock(&lock);
        for (int i = 0; i < BATCH; i++) { queue[slot][i] = malloc(64); *(char *)queue[slot][i] = 1; }
        pthread_mutex_lock(&lock);
        head++;
        pthread_cond_broadcast(&changed);
        pthread_mutex_unlock(&lock);
    }
    pthread_join(c, NULL);
    puts("prodcons done");
    return 0;
}

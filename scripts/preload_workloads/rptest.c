/* Mixed sizes across threads, in the shape of rpmalloc's benchmark (rptest): THREADS threads
 * each keep a window of WINDOW live blocks. Every operation picks a random slot of the
 * window and replaces its block by a new one, so lifetimes are random (geometric, a few
 * thousand operations on average). Sizes are weighted toward small ones: 60% 8-128 B,
 * 30% 128 B-1 KiB, 10% 1-16 KiB. One replaced block in four is not freed by its thread but
 * handed to the next thread (ring order) through that thread's mailbox, a mutex-protected
 * list threaded through the blocks themselves and sent in chains of CHAIN blocks; the
 * receiver empties its mailbox every 64 operations and frees what it finds (remote frees).
 * A mailbox holds at most MAX_PENDING blocks: when a receiver is descheduled (more threads
 * than cores) its sender empties its own mailbox and yields until there is room, rather
 * than pile up tens of MiB; a thread that has finished its operations keeps emptying its
 * mailbox until every thread has. So the work is the same in every run: xorshift64 seeded
 * by the thread's index picks sizes and slots. Prints the operations per second.
 *   rptest [THREADS [OPS_PER_THREAD]]   (defaults 4 and 1500000) */
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include "run_workers.h"

enum { WINDOW = 4096, CHAIN = 32, MAX_PENDING = 2048, MAX_THREADS = 64 };

struct mailbox {
    pthread_mutex_t lock;
    void *head; /* blocks linked through their first word */
    long pending; /* blocks in the list */
    char pad[64];
};

static struct mailbox mailboxes[MAX_THREADS];
static int threads = 4;
static long ops = 1500000;
static atomic_int finished; /* threads past their last post */

static uint64_t xorshift(uint64_t *x) {
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    return *x;
}

static size_t random_size(uint64_t *x) {
    uint64_t r = xorshift(x);
    unsigned pick = r % 10;
    r >>= 8;
    if (pick < 6) return 8 + r % 121;      /* 8-128 B */
    if (pick < 9) return 129 + r % 896;    /* 129 B-1 KiB */
    return 1025 + r % (15 * 1024);         /* 1-16 KiB */
}

/* Frees a chain of blocks. */
static void free_chain(void *block) {
    while (block) {
        void *next = *(void **)block;
        free(block);
        block = next;
    }
}

/* Frees everything in `box`. */
static void drain(struct mailbox *box) {
    pthread_mutex_lock(&box->lock);
    void *block = box->head;
    box->head = NULL;
    box->pending = 0;
    pthread_mutex_unlock(&box->lock);
    free_chain(block);
}

/* Appends a chain (head..tail, `count` blocks) to `box`; while `box` is full, empties
 * `mine` and yields (its owner always empties it eventually: see the header). */
static void post(struct mailbox *box, struct mailbox *mine, void *head, void *tail, long count) {
    for (;;) {
        pthread_mutex_lock(&box->lock);
        if (box->pending < MAX_PENDING) {
            *(void **)tail = box->head;
            box->head = head;
            box->pending += count;
            pthread_mutex_unlock(&box->lock);
            return;
        }
        pthread_mutex_unlock(&box->lock);
        drain(mine);
        sched_yield();
    }
}

static void *worker(void *arg) {
    int self = (int)(intptr_t)arg;
    struct mailbox *mine = &mailboxes[self], *next = &mailboxes[(self + 1) % threads];
    uint64_t x = 0x9e3779b97f4a7c15ull * (uint64_t)(self + 1);
    void **window = calloc(WINDOW, sizeof *window);
    void *chain = NULL, *chain_tail = NULL;
    int chained = 0;
    for (long op = 0; op < ops; op++) {
        uint64_t r = xorshift(&x);
        void **slot = &window[r % WINDOW];
        if (*slot) {
            if ((r >> 40) % 4 == 0) { /* handed over: freed by the next thread */
                *(void **)*slot = chain;
                if (!chain) chain_tail = *slot;
                chain = *slot;
                if (++chained == CHAIN) {
                    post(next, mine, chain, chain_tail, chained);
                    chain = NULL;
                    chained = 0;
                }
            } else {
                free(*slot);
            }
        }
        size_t size = random_size(&x);
        char *block = malloc(size);
        block[0] = (char)op;
        block[size - 1] = (char)r;
        *slot = block;
        if (op % 64 == 0) drain(mine);
    }
    if (chain) post(next, mine, chain, chain_tail, chained);
    atomic_fetch_add(&finished, 1);
    while (atomic_load(&finished) < threads) {
        drain(mine);
        sched_yield();
    }
    drain(mine);
    for (int i = 0; i < WINDOW; i++) free(window[i]);
    free(window);
    return NULL;
}

int main(int argc, char **argv) {
    if (argc > 1) threads = atoi(argv[1]);
    if (argc > 2) ops = atol(argv[2]);
    if (threads < 1 || threads > MAX_THREADS) threads = 4;
    for (int t = 0; t < threads; t++) pthread_mutex_init(&mailboxes[t].lock, NULL);
    run_workers("rptest", threads, ops, worker);
    return 0;
}

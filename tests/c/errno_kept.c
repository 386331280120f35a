/* Successful allocation calls leave errno as they found it (issue 11, defect 3): errno is
 * set to a mark before each call and checked after it. The calls include growing a large
 * block whose neighbouring address space is taken (an in-place mremap fails inside),
 * freeing large blocks, malloc_trim and a new thread's first calls. Built without the
 * library, so that the same program runs under glibc and preloaded, with the same output:
 * one line per call that changed errno, then "errno: N calls, M changed errno". */
#define _GNU_SOURCE
#include <errno.h>
#include <malloc.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MARK 12345
#define MIB ((size_t)1 << 20)

static int calls, changed;

/* Runs `call` with errno set to MARK and reports if errno is not MARK after it. */
#define KEEP(call) do {                                                       \
        errno = MARK;                                                         \
        call;                                                                 \
        int seen = errno;                                                     \
        calls++;                                                              \
        if (seen != MARK) {                                                   \
            changed++;                                                        \
            printf("errno changed by %s (line %d): %d\n", #call, __LINE__, seen); \
        }                                                                     \
    } while (0)

static void *must(void *p) {
    if (!p) { printf("allocation failed\n"); exit(2); }
    return p;
}

/* Small and large blocks, every allocation function, and realloc in every direction. */
static void every_function(void) {
    void *p;
    size_t usable;
    int rc;
    for (size_t n = 1; n <= 64 * MIB; n *= 4) {
        KEEP(p = must(malloc(n)));
        memset(p, 1, n < 4096 ? n : 4096);
        KEEP(free(p));
        KEEP(p = must(calloc(n, 1)));
        KEEP(free(p));
    }
    size_t aligns[] = {16, 64, 4096, 64 << 10, MIB};
    for (int i = 0; i < 5; i++) {
        KEEP(rc = posix_memalign(&p, aligns[i], 3 * aligns[i] + 8));
        if (rc) { printf("posix_memalign failed\n"); exit(2); }
        KEEP(free(p));
        KEEP(p = must(aligned_alloc(aligns[i], 2 * aligns[i])));
        KEEP(free(p));
        KEEP(p = must(memalign(aligns[i], 100)));
        KEEP(free(p));
    }
    KEEP(p = must(valloc(100)));
    KEEP(free(p));
    KEEP(p = must(pvalloc(100)));
    KEEP(free(p));
    KEEP(p = must(reallocarray(NULL, 1000, 8)));
    KEEP(free(p));
    /* realloc: small grow and shrink, small to large, large grow and shrink, back small. */
    size_t sizes[] = {8, 100, 40, 5000, 300 << 10, 2 * MIB, 9 * MIB, 3 * MIB, 700, 16};
    KEEP(p = must(realloc(NULL, 4)));
    for (int i = 0; i < 10; i++) {
        KEEP(p = must(realloc(p, sizes[i])));
        KEEP(usable = malloc_usable_size(p));
        if (usable < sizes[i]) { printf("malloc_usable_size too small\n"); exit(2); }
    }
    KEEP(free(p));
    KEEP(malloc_trim(0));
}

/* Large blocks side by side: growing one fourfold finds its neighbour's pages in use. */
static void grow_between_neighbours(void) {
    void *held[8];
    for (int i = 0; i < 8; i++) {
        KEEP(held[i] = must(malloc(8 * MIB)));
        memset(held[i], 2, 4096);
    }
    for (int i = 0; i < 8; i++) KEEP(held[i] = must(realloc(held[i], 32 * MIB)));
    for (int i = 0; i < 8; i++) KEEP(held[i] = must(realloc(held[i], 4 * MIB)));
    for (int i = 0; i < 8; i++) KEEP(free(held[i]));
    KEEP(malloc_trim(0));
}

static void *in_new_thread(void *arg) {
    (void)arg;
    every_function();
    return NULL;
}

int main(void) {
    every_function();
    grow_between_neighbours();
    pthread_t t;
    pthread_create(&t, NULL, in_new_thread, NULL);
    pthread_join(t, NULL);
    every_function();
    printf("errno: %d calls, %d changed errno\n", calls, changed);
    return changed != 0;
}

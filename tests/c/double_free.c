/* Double frees of small blocks, which must abort with "ebbmalloc: double free of 0x..."
 * in every build (issue 11, defect 5). One case per run, chosen by argv[1]:
 *   small N   malloc(N), free, free again;
 *   threads   malloc in main, free in one thread, free again in another (joined between);
 *   batch     5,000 blocks of 64 B freed (the cache flushes them to the central lists in
 *             batches), then the first of them freed again.
 * Pointers are volatile so that the compiler keeps every call. Reaching the end prints
 * "double free not detected" and exits 0. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void *free_it(void *p) {
    free(p);
    return NULL;
}

static void free_in_thread(void *p) {
    pthread_t t;
    pthread_create(&t, NULL, free_it, p);
    pthread_join(t, NULL);
}

int main(int argc, char **argv) {
    if (argc < 2) return 2;
    if (!strcmp(argv[1], "small") && argc == 3) {
        char *volatile p = malloc(strtoul(argv[2], NULL, 10));
        p[0] = 1;
        free(p);
        free(p);
    } else if (!strcmp(argv[1], "threads")) {
        char *volatile p = malloc(48);
        p[0] = 1;
        free_in_thread(p);
        free_in_thread(p);
    } else if (!strcmp(argv[1], "batch")) {
        enum { COUNT = 5000 };
        static char *volatile blocks[COUNT];
        for (int i = 0; i < COUNT; i++) {
            blocks[i] = malloc(64);
            blocks[i][0] = 1;
        }
        for (int i = 0; i < COUNT; i++) free(blocks[i]);
        free(blocks[0]);
    } else {
        return 2;
    }
    printf("double free not detected\n");
    return 0;
}

/* Large blocks freed and reused in a loop: 20 live blocks of 5-25 MiB; each round frees one
 * at random and allocates a new one of a random size, writing every page of it. Prints the
 * time, minor page faults and VmRSS 1 s after everything is freed.
 *   large_reuse [ROUNDS [WAIT_SECONDS]]   (defaults 400 and 1)
 * Used by scripts/preload-bench.sh and tests/preload.rs. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

static long rss_kib(void) {
    FILE *f = fopen("/proc/self/status", "r");
    char line[256]; long kib = -1;
    while (f && fgets(line, sizeof line, f)) if (sscanf(line, "VmRSS: %ld", &kib) == 1) break;
    if (f) fclose(f);
    return kib;
}

int main(int argc, char **argv) {
    int rounds = argc > 1 ? atoi(argv[1]) : 400;
    int wait = argc > 2 ? atoi(argv[2]) : 1;
    enum { LIVE = 20 };
    char *live[LIVE] = {0};
    unsigned long seed = 12345;
    long baseline = rss_kib();
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (int r = 0; r < rounds + LIVE; r++) {
        int i = r < LIVE ? r : (int)((seed = seed * 6364136223846793005UL + 1442695040888963407UL) >> 33) % LIVE;
        free(live[i]);
        seed = seed * 6364136223846793005UL + 1442695040888963407UL;
        size_t size = (5UL << 20) + (seed >> 33) % (20UL << 20);
        live[i] = malloc(size);
        memset(live[i], r, size);
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    for (int i = 0; i < LIVE; i++) free(live[i]);
    struct rusage usage;
    getrusage(RUSAGE_SELF, &usage);
    sleep(wait);
    printf("large reuse: %.2f s, %ld minor faults, VmRSS baseline %ld KiB, %d s after the frees %ld KiB\n",
           (t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) / 1e9, usage.ru_minflt, baseline, wait, rss_kib());
    return 0;
}

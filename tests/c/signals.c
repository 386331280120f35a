/* The allocator's own threads never take the program's signals (issue 11, defect 4). The
 * program churns ~200 MiB of 64-byte blocks (which starts the background trimmer), then
 * blocks SIGUSR1 in its only thread, installs a handler that counts, and 2,000 times
 * sends itself SIGUSR1, lets it pend for 100 us, and takes it with sigtimedwait. A signal handled on another thread
 * instead makes sigtimedwait time out; the loop stops at the first time-out. Prints the
 * handler's count, what sigtimedwait took, and the blocked-signal mask (SigBlk in
 * /proc/self/task/<tid>/status) of every thread but the main one. */
#define _GNU_SOURCE
#include <dirent.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define BLOCKS (200 << 20) / 64
#define SIGNALS 2000

static atomic_int handled;

static void on_signal(int sig) {
    (void)sig;
    atomic_fetch_add(&handled, 1);
}

/* Copies the first line of `path` that starts with `key` (without it) into out. */
static void read_field(const char *path, const char *key, char *out, size_t size) {
    snprintf(out, size, "?");
    FILE *f = fopen(path, "r");
    if (!f) return;
    char line[256];
    while (fgets(line, sizeof line, f)) {
        if (!strncmp(line, key, strlen(key))) {
            char *value = line + strlen(key);
            value += strspn(value, " \t");
            value[strcspn(value, "\n")] = 0;
            snprintf(out, size, "%s", value);
            break;
        }
    }
    fclose(f);
}

static void print_other_threads(void) {
    DIR *tasks = opendir("/proc/self/task");
    if (!tasks) { printf("cannot read /proc/self/task\n"); return; }
    struct dirent *e;
    int others = 0;
    while ((e = readdir(tasks))) {
        if (e->d_name[0] == '.' || atoi(e->d_name) == getpid()) continue;
        char path[320], name[64], mask[64];
        snprintf(path, sizeof path, "/proc/self/task/%s/comm", e->d_name);
        read_field(path, "", name, sizeof name);
        snprintf(path, sizeof path, "/proc/self/task/%s/status", e->d_name);
        read_field(path, "SigBlk:", mask, sizeof mask);
        printf("thread %s SigBlk %s\n", name, mask);
        others++;
    }
    closedir(tasks);
    printf("other threads: %d\n", others);
}

int main(void) {
    void **blocks = malloc(BLOCKS * sizeof *blocks);
    if (!blocks) return 2;
    for (int round = 0; round < 2; round++) {
        for (long i = 0; i < BLOCKS / 2; i++) {
            blocks[i] = malloc(64);
            if (!blocks[i]) return 2;
            memset(blocks[i], 1, 64);
        }
        for (long i = 0; i < BLOCKS / 2; i++) free(blocks[i]);
    }
    free(blocks);
    usleep(100 * 1000);

    sigset_t usr1;
    sigemptyset(&usr1);
    sigaddset(&usr1, SIGUSR1);
    pthread_sigmask(SIG_BLOCK, &usr1, NULL);
    struct sigaction action;
    memset(&action, 0, sizeof action);
    action.sa_handler = on_signal;
    sigaction(SIGUSR1, &action, NULL);

    int taken = 0;
    for (int i = 0; i < SIGNALS; i++) {
        kill(getpid(), SIGUSR1);
        usleep(100); /* leaves the signal pending a moment, for any thread to take */
        struct timespec limit = {1, 0};
        if (sigtimedwait(&usr1, NULL, &limit) != SIGUSR1) break;
        taken++;
    }
    printf("handler ran %d times\n", atomic_load(&handled));
    printf("sigtimedwait took %d of %d\n", taken, SIGNALS);
    print_other_threads();
    return 0;
}

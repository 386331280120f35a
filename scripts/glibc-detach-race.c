// glibc's pthread_detach racing the thread's own exit, with no allocator of ours involved:
// why the fuzz harness never detaches a thread that has started (fuzz/logic/src/helpers.rs).
//
// glibc 2.36 (Debian 12) detaches in two steps: a compare-and-swap marks the thread
// detached, then it reads the thread's descriptor to see whether the thread has exited
// already. A thread that exits between the two steps sees itself detached and frees its own
// stack (descriptor included) into glibc's stack cache; when that cache is over its limit
// (40 MiB), the exit or start of another thread unmaps it, and the detaching thread's read
// faults in `___pthread_detach`. Here the child signals its parent (whose handler sleeps,
// like the harness's preempters) to hold it inside that window, while other threads end in
// bursts to keep the stack cache over its limit.
//
//   gcc -O2 -g -pthread scripts/glibc-detach-race.c -o /tmp/detach-race
//   /tmp/detach-race     # SIGSEGV in ___pthread_detach within minutes on glibc 2.36
//
// On the development VM (2 cores, loaded) two runs faulted, after about 650,000 and
// 1,300,000 rounds (a few minutes each).
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

static pthread_t parent;

static void sleep_ns(long ns) {
    struct timespec t = {0, ns};
    nanosleep(&t, NULL);
}

// The parent's handler: holds it where the signal found it for 50 us.
static void hold(int signal) {
    (void)signal;
    int saved = errno;
    sleep_ns(50000);
    errno = saved;
}

// The detached child: signals its parent a few times, then exits.
static void *signal_parent(void *count) {
    for (long i = 0; i < (long)count; i++) {
        if (i % 4 == 3)
            sleep_ns(10000);
        pthread_kill(parent, SIGURG);
    }
    return NULL;
}

static void *end_soon(void *arg) {
    sleep_ns(2000000);
    return arg;
}

// Starts 30 threads (created detached) that end together, again and again: their stacks
// push glibc's stack cache over its limit.
static void *end_in_bursts(void *arg) {
    pthread_attr_t attributes;
    pthread_attr_init(&attributes);
    pthread_attr_setstacksize(&attributes, 2 << 20);
    pthread_attr_setdetachstate(&attributes, PTHREAD_CREATE_DETACHED);
    for (;;) {
        for (int i = 0; i < 30; i++) {
            pthread_t thread;
            if (pthread_create(&thread, &attributes, end_soon, NULL) != 0)
                usleep(100);
        }
        usleep(1000);
    }
    return arg;
}

int main(int argc, char **argv) {
    long rounds = argc > 1 ? atol(argv[1]) : 30000000;
    struct sigaction action = {0};
    action.sa_handler = hold;
    action.sa_flags = SA_RESTART;
    sigaction(SIGURG, &action, NULL);
    parent = pthread_self();
    for (int i = 0; i < 2; i++) {
        pthread_t thread;
        pthread_create(&thread, NULL, end_in_bursts, NULL);
    }
    pthread_attr_t attributes;
    pthread_attr_init(&attributes);
    pthread_attr_setstacksize(&attributes, 2 << 20);
    for (long round = 0; round < rounds; round++) {
        pthread_t child;
        if (pthread_create(&child, &attributes, signal_parent, (void *)(long)(rand() % 21)) != 0)
            continue;
        pthread_detach(child);
        if (round % 100000 == 0)
            fprintf(stderr, "round %ld\n", round);
    }
    fprintf(stderr, "%ld rounds, no fault\n", rounds);
    return 0;
}

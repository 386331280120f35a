/* Fork from a process whose threads allocate, then exec in the child; twenty times. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

static volatile int stop;

static void *churn(void *arg) {
    (void)arg;
    void *held[64] = {0};
    unsigned x = 1;
    while (!stop) {
        x = x * 1103515245 + 12345;
        unsigned i = (x >> 8) % 64;
        free(held[i]);
        held[i] = malloc(1 + (x >> 4) % 5000);
    }
    for (int i = 0; i < 64; i++) free(held[i]);
    return NULL;
}

int main(void) {
    pthread_t t[4];
    for (int i = 0; i < 4; i++) pthread_create(&t[i], NULL, churn, NULL);
    int ok = 0;
    for (int round = 0; round < 20; round++) {
        pid_t pid = fork();
        if (pid == 0) {
            void *p = malloc(100);
            free(p);
            execl("/bin/echo", "echo", "child", (char *)NULL);
            _exit(127);
        }
        int status = 0;
        waitpid(pid, &status, 0);
        if (WIFEXITED(status) && WEXITSTATUS(status) == 0) ok++;
    }
    stop = 1;
    for (int i = 0; i < 4; i++) pthread_join(t[i], NULL);
    printf("fork+exec: %d of 20 ok\n", ok);
    return ok == 20 ? 0 : 1;
}

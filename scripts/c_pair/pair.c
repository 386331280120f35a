/* N malloc + write + free pairs of SIZE bytes: the C path's fast path, for callgrind
 * (scripts/c-pair-instructions.sh). The pointer goes through a volatile so that the
 * compiler keeps every call. */
#include <stdlib.h>
#include <stdio.h>
int main(int argc, char **argv) {
    long n = atol(argv[1]); size_t size = argc > 2 ? (size_t)atol(argv[2]) : 64;
    char *volatile sink;
    for (long i = 0; i < n; i++) { char *p = malloc(size); p[0] = 1; sink = p; free(p); }
    (void)sink; return 0;
}

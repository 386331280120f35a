/* One misuse per run, chosen by argv[1]; each must abort with a clear message. The
 * pointers are volatile so that the compiler cannot drop the allocations. */
#include <stdlib.h>
#include <string.h>

int main(int argc, char **argv) {
    if (argc < 2) return 2;
    if (!strcmp(argv[1], "stack")) { int x; free(&x); }
    if (!strcmp(argv[1], "interior")) { char *volatile p = malloc(64); p[0] = 1; free(p + 8); }
    if (!strcmp(argv[1], "large-double")) {
        char *volatile p = malloc(2 << 20);
        p[0] = 1;
        free(p);
        free(p);
    }
    if (!strcmp(argv[1], "realloc-foreign")) { static char buf[64]; realloc(buf, 128); }
    return 0;
}

/* glibc's introspection calls and __libc_* names, answered by ebbmalloc (issue 13, part 6):
 * mallinfo2/mallinfo agree with ebbmalloc_stats, mallopt accepts glibc's parameters,
 * malloc_info writes XML with our figures, malloc_stats prints our table, and blocks from
 * __libc_malloc and friends are ours (our free takes them; glibc's heap is never touched).
 * Prints "introspection: N passed, 0 failed" and exits 0, or names each failure. */
#define _GNU_SOURCE
#include <errno.h>
#include <malloc.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "../../capi/include/ebbmalloc.h"

/* mallinfo is deprecated in glibc (its int fields wrap); it is still exported and tested. */
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"

static int passed, failed;
#define CHECK(cond) do { if (cond) passed++; else { failed++; \
    fprintf(stderr, "FAILED %s:%d: %s\n", __FILE__, __LINE__, #cond); } } while (0)

extern void *__libc_malloc(size_t);
extern void *__libc_calloc(size_t, size_t);
extern void *__libc_realloc(void *, size_t);
extern void __libc_free(void *);
extern void *__libc_memalign(size_t, size_t);
extern void *__libc_valloc(size_t);
extern void *__libc_pvalloc(size_t);
extern int __posix_memalign(void **, size_t, size_t);

int main(void) {
    /* Some live small blocks and one live large block. */
    enum { SMALL = 1000 };
    static void *small[SMALL];
    for (int i = 0; i < SMALL; i++) small[i] = malloc(48 + i % 200);
    void *large = malloc(3 << 20);
    memset(large, 1, 3 << 20);

    struct ebbmalloc_stats stats;
    ebbmalloc_stats(&stats);
    struct mallinfo2 info = mallinfo2();
    struct mallinfo old = mallinfo();
    size_t small_live = 0, cached = 0, cached_bytes = 0;
    for (int c = 0; c < EBBMALLOC_CLASS_COUNT; c++) {
        small_live += stats.classes[c].live_blocks * stats.classes[c].block_size;
        cached += stats.classes[c].cached_blocks;
        cached_bytes += stats.classes[c].cached_blocks * stats.classes[c].block_size;
    }
    CHECK(info.uordblks == small_live);
    CHECK(info.uordblks >= 48 * SMALL);
    CHECK(info.hblkhd == stats.allocated_bytes - small_live);
    CHECK(info.hblkhd >= 3 << 20);
    CHECK(info.ordblks == cached && info.fordblks == cached_bytes);
    CHECK(info.arena > 0 && info.arena <= stats.mapped_bytes);
    CHECK(info.smblks == 0 && info.fsmblks == 0 && info.usmblks == 0);
    CHECK(old.uordblks == (int)info.uordblks && old.hblkhd == (int)info.hblkhd);

    /* mallopt: glibc's parameters are accepted (and ignored). */
    CHECK(mallopt(M_MMAP_THRESHOLD, 1 << 20) == 1);
    CHECK(mallopt(M_TRIM_THRESHOLD, 1 << 20) == 1);
    CHECK(mallopt(M_ARENA_MAX, 2) == 1);
    CHECK(mallopt(M_PERTURB, 0) == 1);

    /* malloc_info: XML with our figures; options other than 0 are EINVAL. */
    char *xml = NULL;
    size_t xml_len = 0;
    FILE *stream = open_memstream(&xml, &xml_len);
    CHECK(malloc_info(0, stream) == 0);
    fclose(stream);
    CHECK(xml && strncmp(xml, "<malloc version=\"ebbmalloc-1\">", 29) == 0);
    CHECK(xml && strstr(xml, "</malloc>\n") != NULL);
    char mmap_total[96];
    snprintf(mmap_total, sizeof mmap_total, "<total type=\"mmap\" count=\"0\" size=\"%zu\"/>",
             info.hblkhd);
    CHECK(xml && strstr(xml, mmap_total) != NULL);
    free(xml);
    errno = 0;
    CHECK(malloc_info(1, stdout) == -1 && errno == EINVAL);

    /* malloc_stats: our table on stderr (the test reads it). */
    malloc_stats();

    /* __libc_* names are ours: our free and malloc_usable_size take their blocks. */
    void *a = __libc_malloc(100);
    CHECK(a && malloc_usable_size(a) >= 100);
    free(a);
    unsigned char *z = __libc_calloc(10, 10);
    int zero = 1;
    for (int i = 0; z && i < 100; i++) zero &= z[i] == 0;
    CHECK(z && zero);
    z = __libc_realloc(z, 5000);
    CHECK(z && malloc_usable_size(z) >= 5000);
    __libc_free(z);
    void *m = __libc_memalign(4096, 100);
    CHECK(m && ((uintptr_t)m & 4095) == 0);
    free(m);
    void *v = __libc_valloc(10);
    CHECK(v && ((uintptr_t)v & 4095) == 0);
    free(v);
    void *pv = __libc_pvalloc(10);
    CHECK(pv && ((uintptr_t)pv & 4095) == 0 && malloc_usable_size(pv) >= 4096);
    free(pv);
    void *pm = NULL;
    CHECK(__posix_memalign(&pm, 256, 1000) == 0 && pm && ((uintptr_t)pm & 255) == 0);
    __libc_free(pm);
    void *g = malloc(64);
    __libc_free(g); /* a block of ours through glibc's name */

    for (int i = 0; i < SMALL; i++) free(small[i]);
    free(large);
    printf("introspection: %d passed, %d failed\n", passed, failed);
    return failed != 0;
}

/* Edge cases of every function libebbmalloc.so exports, with glibc's documented semantics.
 * Prints "capi edge cases: N passed, 0 failed" and exits 0, or names each failure. */
#define _GNU_SOURCE
#include <errno.h>
#include <malloc.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "../../capi/include/ebbmalloc.h"

static int passed, failed;
#define CHECK(cond) do { if (cond) passed++; else { failed++; \
    fprintf(stderr, "FAILED %s:%d: %s\n", __FILE__, __LINE__, #cond); } } while (0)

static int all_bytes(const unsigned char *p, size_t n, unsigned char v) {
    for (size_t i = 0; i < n; i++) if (p[i] != v) return 0;
    return 1;
}

int main(void) {
    /* malloc(0): unique, non-null, freeable. */
    void *z1 = malloc(0), *z2 = malloc(0);
    CHECK(z1 && z2 && z1 != z2);
    free(z1); free(z2);

    /* Exhaustion and overflow: NULL and ENOMEM. */
    errno = 0; CHECK(malloc(SIZE_MAX) == NULL && errno == ENOMEM);
    errno = 0; CHECK(malloc(SIZE_MAX / 2) == NULL && errno == ENOMEM);
    errno = 0; CHECK(calloc(SIZE_MAX / 2, 3) == NULL && errno == ENOMEM);
    errno = 0; CHECK(reallocarray(NULL, SIZE_MAX / 2, 3) == NULL && errno == ENOMEM);

    /* calloc zeroes, also memory that was used before. */
    for (size_t n = 1; n <= (4u << 20); n *= 3) {
        unsigned char *p = malloc(n);
        memset(p, 0xab, n);
        free(p);
        unsigned char *q = calloc(n, 1);
        CHECK(q && all_bytes(q, n, 0));
        free(q);
    }

    /* realloc: NULL is malloc; 0 frees and returns NULL; contents kept across sizes. */
    char *r = realloc(NULL, 10);
    CHECK(r != NULL);
    strcpy(r, "ebbmalloc");
    size_t sizes[] = {8, 24, 100, 4096, 70000, 200000, 4u << 20, 150000, 1000, 12};
    size_t valid = 9; /* bytes of "ebbmalloc" every block since has kept */
    for (size_t i = 0; i < sizeof sizes / sizeof *sizes; i++) {
        r = realloc(r, sizes[i]);
        CHECK(r != NULL);
        valid = valid < sizes[i] ? valid : sizes[i];
        CHECK(memcmp(r, "ebbmalloc", valid) == 0);
    }
    CHECK(realloc(r, 0) == NULL);

    /* posix_memalign: good alignments work; bad ones are EINVAL and leave errno. */
    for (size_t align = 8; align <= (1u << 20); align *= 2) {
        void *p = NULL;
        CHECK(posix_memalign(&p, align, 100) == 0 && p && ((uintptr_t)p % align) == 0);
        CHECK(malloc_usable_size(p) >= 100);
        memset(p, 1, 100);
        free(p);
    }
    size_t bad[] = {0, 3, 4, 24};
    for (size_t i = 0; i < 4; i++) {
        void *p = (void *)1;
        errno = 1234;
        CHECK(posix_memalign(&p, bad[i], 64) == EINVAL && errno == 1234);
    }

    /* aligned_alloc, memalign, valloc, pvalloc. */
    errno = 0; CHECK(aligned_alloc(3, 64) == NULL && errno == EINVAL);
    void *a = aligned_alloc(4096, 5000);
    CHECK(a && ((uintptr_t)a % 4096) == 0); free(a);
    void *m = memalign(48, 100);
    CHECK(m && ((uintptr_t)m % 64) == 0); free(m);
    void *v = valloc(10);
    CHECK(v && ((uintptr_t)v % 4096) == 0); free(v);
    void *pv = pvalloc(1);
    CHECK(pv && ((uintptr_t)pv % 4096) == 0 && malloc_usable_size(pv) >= 4096); free(pv);

    /* malloc_usable_size: 0 for NULL, at least the request, all of it writable. */
    CHECK(malloc_usable_size(NULL) == 0);
    for (size_t n = 1; n < (3u << 20); n = n * 2 + 7) {
        unsigned char *p = malloc(n);
        size_t usable = malloc_usable_size(p);
        CHECK(usable >= n);
        memset(p, 0x5a, usable);
        free(p);
    }
    /* 16-byte alignment above 8 bytes (max_align_t). */
    for (size_t n = 9; n < 300; n++) {
        void *p = malloc(n);
        CHECK(((uintptr_t)p % 16) == 0);
        free(p);
    }

    free(NULL);
    free_sized(malloc(40), 40);
    void *fa = aligned_alloc(256, 512);
    free_aligned_sized(fa, 256, 512);

    int t = malloc_trim(0);
    CHECK(t == 0 || t == 1);
    ebbmalloc_trim();
    void *big = malloc(1u << 20);
    memset(big, 1, 1u << 20);
    struct ebbmalloc_stats s;
    ebbmalloc_stats(&s);
    CHECK(s.allocated_bytes >= (1u << 20) && s.mapped_bytes >= s.allocated_bytes);
    CHECK(s.large_cached_bytes <= s.mapped_bytes);
    /* The per-class figures, smallest class (16 bytes) first, largest (128 KiB) last. */
    CHECK(s.classes[0].block_size == 16);
    CHECK(s.classes[EBBMALLOC_CLASS_COUNT - 1].block_size == 128u << 10);
    free(big);
    ebbmalloc_stats_print();

    printf("capi edge cases: %d passed, %d failed\n", passed, failed);
    return failed != 0;
}

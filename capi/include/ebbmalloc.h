/* ebbmalloc: a thread-caching allocator whose footprint shrinks back.
 *
 * libebbmalloc.so exports the standard allocation functions (malloc, free, calloc,
 * realloc, reallocarray, posix_memalign, aligned_alloc, memalign, valloc, pvalloc,
 * malloc_usable_size, free_sized, free_aligned_sized, malloc_trim) with glibc's semantics,
 * and the functions below. Build: cargo build --release -p ebbmalloc-capi
 * Use: LD_PRELOAD=target/release/libebbmalloc.so program, or link with -lebbmalloc. */
#ifndef EBBMALLOC_H
#define EBBMALLOC_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

struct ebbmalloc_stats {
    size_t allocated_bytes;  /* bytes held by the program */
    size_t active_bytes;     /* bytes in pools and large mappings in use */
    size_t resident_bytes;   /* bytes resident by ebbmalloc's accounting */
    size_t mapped_bytes;     /* address space mapped */
    size_t retained_bytes;   /* mapped but given back to the OS */
    size_t arenas_full;
    size_t arenas_partial;
    size_t arenas_empty;
    size_t arenas_released;
    uint64_t trimmed_bytes;  /* given back by trimming since the start */
    uint64_t trim_passes;
};

/* Runs a full trimming pass now; returns the bytes given back to the OS. */
size_t ebbmalloc_trim(void);
/* Fills *out with the current statistics. */
void ebbmalloc_stats(struct ebbmalloc_stats *out);
/* Prints the statistics table to stderr. */
void ebbmalloc_stats_print(void);

/* C23 sized deallocation, for C libraries older than C23. */
void free_sized(void *ptr, size_t size);
void free_aligned_sized(void *ptr, size_t alignment, size_t size);

#ifdef __cplusplus
}
#endif

#endif /* EBBMALLOC_H */

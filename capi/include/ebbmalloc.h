/* ebbmalloc: a thread-caching allocator whose footprint shrinks back.
 *
 * libebbmalloc.so exports the standard allocation functions (malloc, free, calloc,
 * realloc, reallocarray, posix_memalign, aligned_alloc, memalign, valloc, pvalloc,
 * malloc_usable_size, free_sized, free_aligned_sized, malloc_trim) with glibc's semantics;
 * glibc's introspection calls (declared in <malloc.h>): mallinfo2 and mallinfo with
 * ebbmalloc's figures, malloc_stats (ebbmalloc's table on stderr), malloc_info (XML with
 * ebbmalloc's figures), mallopt (every parameter accepted and ignored, returns 1); glibc's
 * internal names __libc_malloc, __libc_calloc, __libc_realloc, __libc_free,
 * __libc_memalign, __libc_valloc, __libc_pvalloc and __posix_memalign, so that code calling
 * them gets ebbmalloc's blocks; C++'s sized operator delete and delete[] (_ZdlPvm,
 * _ZdaPvm), which free by size; and the functions below.
 * Build: cargo build --release -p ebbmalloc-capi
 * Use: LD_PRELOAD=target/release/libebbmalloc.so program, or link with -lebbmalloc. */
#ifndef EBBMALLOC_H
#define EBBMALLOC_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The number of size classes, the length of ebbmalloc_stats.classes. It belongs to this
 * version of ebbmalloc (the struct's size follows it): compile against the header of the
 * libebbmalloc.so you run with. */
#define EBBMALLOC_CLASS_COUNT 51

/* The figures of one size class. */
struct ebbmalloc_class_stats {
    size_t block_size;     /* block size of the class in bytes */
    size_t live_blocks;    /* blocks held by the program */
    size_t cached_blocks;  /* blocks in thread caches and central transfer caches */
    size_t pools;          /* pools serving the class */
};

/* The fields of the Rust ebbmalloc::Stats, in its order: the library hands out that
 * #[repr(C)] struct itself (tests/c_stats_header.rs checks this declaration against it).
 * Byte figures are from
 * ebbmalloc's own accounting of page states. */
struct ebbmalloc_stats {
    size_t allocated_bytes;     /* bytes in blocks held by the program */
    size_t active_bytes;        /* bytes in pools' pages and large mappings in use */
    size_t resident_bytes;      /* bytes resident by ebbmalloc's accounting */
    size_t mapped_bytes;        /* address space mapped */
    size_t retained_bytes;      /* mapped but given back to the OS */
    size_t arenas_full;         /* arenas with every page in pools */
    size_t arenas_partial;      /* arenas with some pages in pools and some free */
    size_t arenas_empty;        /* arenas with no pool, some free pages still resident */
    size_t arenas_released;     /* arenas with no pool, every page released */
    size_t large_cached_bytes;  /* bytes in cached large mappings */
    uint64_t trimmed_bytes;     /* given back by trimming since the start */
    uint64_t trim_passes;       /* trimming passes since the start */
    uint64_t caches_reclaimed;  /* idle threads' caches taken back by the trimmer */
    struct ebbmalloc_class_stats classes[EBBMALLOC_CLASS_COUNT]; /* smallest class first */
};

/* Runs a full trimming pass now; returns the bytes given back to the OS. */
size_t ebbmalloc_trim(void);
/* Fills *out with the current statistics. */
void ebbmalloc_stats(struct ebbmalloc_stats *out);
/* Prints the statistics table to stderr. */
void ebbmalloc_stats_print(void);

/* Heap profiling (also switched on by EBBMALLOC_PROF=1; interval EBBMALLOC_PROF_SAMPLE).
 * ebbmalloc_prof_dump writes the sampled heap to `path` in the text format pprof reads
 * ("heap_v2", then MAPPED_LIBRARIES): `pprof -top program path`. 0, or -1 with errno. */
void ebbmalloc_prof_set_active(int active);
int ebbmalloc_prof_dump(const char *path);

/* C23 sized deallocation, for C libraries older than C23. */
void free_sized(void *ptr, size_t size);
void free_aligned_sized(void *ptr, size_t alignment, size_t size);

#ifdef __cplusplus
}
#endif

#endif /* EBBMALLOC_H */

#ifndef C_ALLOCATION_COUNTER_H
#define C_ALLOCATION_COUNTER_H
#include <stdint.h>

/* Heap allocations made by the whole process since it started (malloc, calloc, realloc,
 * posix_memalign, aligned_alloc, memalign), counted by wrappers around glibc's allocator that
 * the benchmark executable links in. Only the benchmark links this target. */
uint64_t allocation_count(void);

#endif

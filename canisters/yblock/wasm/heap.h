/* The canister's heap allocator over wasm linear memory (freestanding: there is no libc).
 *
 * The heap is what the IC counts as the canister's wasm memory, and it grows only through
 * memory.grow, which fails at the canister's wasm_memory_limit: icl_alloc then returns NULL and
 * the caller refuses the request with a clear error instead of trapping. A trap rolls the whole
 * heap back, the allocator's own state included, so no message can leak memory by failing. */
#ifndef ICL_HEAP_H
#define ICL_HEAP_H

#include <stddef.h>
#include <stdint.h>

void *icl_alloc(size_t size); /* 16-byte aligned; NULL when memory cannot grow */
void icl_free(void *p);       /* NULL is ignored */
size_t icl_heap_bytes(void);  /* the wasm memory's size, as the IC meters it */

#endif

/* First-fit allocator with an address-ordered free list, coalesced on free.
 *
 * The yblock allocates few, large blocks (the shard's bytes, one KV cache per session, a scratch
 * area per message), so a plain list is short and fragmentation stays low; every block carries a
 * 16-byte header so that SIMD loads of the data stay aligned. */
#include "heap.h"

#define ALIGN 16u
#define HEADER 16u
#define WASM_PAGE 65536u

typedef struct block {
    size_t size; /* bytes, header included */
    struct block *next; /* in the free list */
} block;

extern unsigned char __heap_base;
static block *free_list;
static uintptr_t heap_end; /* first byte past the memory handed to the allocator */

static size_t round_up(size_t n, size_t to) { return (n + to - 1) / to * to; }

static void insert_free(block *b) {
    block **link = &free_list;
    while (*link && *link < b) link = &(*link)->next;
    b->next = *link;
    *link = b;
    if (b->next && (uintptr_t)b + b->size == (uintptr_t)b->next) { /* merge with the next block */
        b->size += b->next->size;
        b->next = b->next->next;
    }
    if (link != &free_list) { /* merge with the previous block */
        block *prev = (block *)((char *)link - offsetof(block, next));
        if ((uintptr_t)prev + prev->size == (uintptr_t)b) {
            prev->size += b->size;
            prev->next = b->next;
        }
    }
}

/* The allocator keeps below the last page of wasm32's 4 GiB, so addresses and sizes fit in 32 bits. */
#define HEAP_LIMIT ((1ull << 32) - WASM_PAGE)

static int grow(size_t need) {
    if (!heap_end) heap_end = round_up((uintptr_t)&__heap_base, ALIGN);
    uint64_t memory_end = (uint64_t)__builtin_wasm_memory_size(0) * WASM_PAGE, want = (uint64_t)heap_end + need;
    if (want > HEAP_LIMIT) return 0;
    if (want > memory_end) {
        size_t pages = (size_t)((want - memory_end + WASM_PAGE - 1) / WASM_PAGE);
        if (__builtin_wasm_memory_grow(0, pages) == (size_t)-1) return 0;
        memory_end += (uint64_t)pages * WASM_PAGE;
    }
    block *b = (block *)heap_end;
    b->size = (size_t)(memory_end - heap_end);
    heap_end = (uintptr_t)memory_end;
    insert_free(b);
    return 1;
}

void *icl_alloc(size_t size) {
    if (size > SIZE_MAX / 2) return NULL;
    size_t need = round_up(size + HEADER, ALIGN);
    for (int attempt = 0; attempt < 2; attempt++) {
        for (block **link = &free_list; *link; link = &(*link)->next) {
            block *b = *link;
            if (b->size < need) continue;
            if (b->size - need >= HEADER + ALIGN) { /* split: the rest stays free */
                block *rest = (block *)((char *)b + need);
                rest->size = b->size - need;
                rest->next = b->next;
                *link = rest;
                b->size = need;
            } else {
                *link = b->next;
            }
            return (char *)b + HEADER;
        }
        /* Grow by what is missing beyond a free block that ends at the memory's end. */
        size_t tail = 0;
        for (block *b = free_list; b; b = b->next)
            if ((uintptr_t)b + b->size == heap_end) tail = b->size;
        if (!grow(need - tail)) return NULL;
    }
    return NULL;
}

void icl_free(void *p) {
    if (p) insert_free((block *)((char *)p - HEADER));
}

size_t icl_heap_bytes(void) { return (size_t)__builtin_wasm_memory_size(0) * WASM_PAGE; }

/* The compiler lowers struct copies and loops to these; bulk memory makes them single instructions. */
void *memcpy(void *restrict dst, const void *restrict src, size_t n) {
    __builtin_memcpy(dst, src, n);
    return dst;
}
void *memmove(void *dst, const void *src, size_t n) {
    __builtin_memmove(dst, src, n);
    return dst;
}
void *memset(void *dst, int c, size_t n) {
    __builtin_memset(dst, c, n);
    return dst;
}

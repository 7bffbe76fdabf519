/* A wasm32 module around the yblock's model compute (canisters/yblock/wasm/model.c), for running
   it outside a canister: tests compare it with the native build, and benchmarks meter its ops.
   The host places the shard file, KV caches and activations in this module's memory with
   driver_alloc, then calls the exported model.h functions through the wrappers below. */
#include "../canisters/yblock/wasm/model.h"

#define PAGE 65536

extern unsigned char __heap_base;
static uintptr_t heap_top; /* bump allocator: a driver run never frees */

void *driver_alloc(size_t n) {
    if (!heap_top) heap_top = (uintptr_t)&__heap_base;
    uintptr_t start = (heap_top + 63) & ~(uintptr_t)63;
    uintptr_t end = start + n;
    uintptr_t have = __builtin_wasm_memory_size(0) * PAGE;
    if (end > have && __builtin_wasm_memory_grow(0, (end - have + PAGE - 1) / PAGE) == (size_t)-1) return 0;
    heap_top = end;
    return (void *)start;
}

int driver_parse(const uint8_t *gguf, size_t len, int n_ctx, icl_shard **out, char *err, size_t err_cap) {
    return icl_shard_parse(gguf, len, n_ctx, driver_alloc, out, err, err_cap);
}

/* The info fields tests need, as plain exports (no struct crossing the boundary). */
int driver_output_rows(const icl_shard *s) {
    icl_shard_info info;
    icl_shard_get_info(s, &info);
    return info.has_output ? info.output_stop - info.output_start : 0;
}

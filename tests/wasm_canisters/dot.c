// A test canister in C: an int8 dot product in wasm simd128 over its argument, a heap table it
// updates, and a method that writes that table and then traps (which must leave no trace).
#include <stdint.h>
#include <wasm_simd128.h>

#define IMPORT(name) __attribute__((import_module("ic0"), import_name(name)))
#define EXPORT(name) __attribute__((export_name(name)))

IMPORT("msg_arg_data_size") uint32_t ic0_msg_arg_data_size(void);
IMPORT("msg_arg_data_copy") void ic0_msg_arg_data_copy(void *dst, uint32_t offset, uint32_t size);
IMPORT("msg_reply_data_append") void ic0_msg_reply_data_append(const void *src, uint32_t size);
IMPORT("msg_reply") void ic0_msg_reply(void);
IMPORT("trap") void ic0_trap(const void *src, uint32_t size);

static int8_t input[1 << 16];
static uint32_t table[1 << 18];  // 1 MiB of heap
static uint32_t calls;

// The argument is two int8 vectors of equal length (a multiple of 16), one after the other.
static int32_t dot(uint32_t n) {
    const int8_t *a = input, *b = input + n;
    v128_t acc = wasm_i32x4_splat(0);
    for (uint32_t i = 0; i < n; i += 16) {
        v128_t x = wasm_v128_load(a + i), y = wasm_v128_load(b + i);
        acc = wasm_i32x4_add(acc, wasm_i32x4_dot_i16x8(wasm_i16x8_extend_low_i8x16(x), wasm_i16x8_extend_low_i8x16(y)));
        acc = wasm_i32x4_add(acc, wasm_i32x4_dot_i16x8(wasm_i16x8_extend_high_i8x16(x), wasm_i16x8_extend_high_i8x16(y)));
    }
    return wasm_i32x4_extract_lane(acc, 0) + wasm_i32x4_extract_lane(acc, 1) + wasm_i32x4_extract_lane(acc, 2)
           + wasm_i32x4_extract_lane(acc, 3);
}

static uint32_t read_arg(void) {
    uint32_t size = ic0_msg_arg_data_size();
    if (size > sizeof input) ic0_trap("argument too large", 18);
    ic0_msg_arg_data_copy(input, 0, size);
    return size;
}

EXPORT("canister_update dot") void canister_update_dot(void) {
    int32_t result = dot(read_arg() / 2);
    calls += 1;
    ic0_msg_reply_data_append(&result, sizeof result);
    ic0_msg_reply();
}

// Writes every 1024th word of the table (256 pages), counts the call, then traps.
EXPORT("canister_update scribble_then_trap") void canister_update_scribble_then_trap(void) {
    for (uint32_t i = 0; i < sizeof table / sizeof table[0]; i += 1024) table[i] = i + 1;
    calls += 1;
    ic0_trap("scribbled", 9);
}

EXPORT("canister_query state") void canister_query_state(void) {
    uint32_t sum = calls;
    for (uint32_t i = 0; i < sizeof table / sizeof table[0]; i++) sum += table[i];
    ic0_msg_reply_data_append(&sum, sizeof sum);
    ic0_msg_reply();
}

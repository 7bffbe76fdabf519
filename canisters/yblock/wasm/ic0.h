/* The System API imports the yblock uses, as the IC interface specification names them (module
 * "ic0"). Nothing else is imported: the IC refuses modules with other imports. */
#ifndef ICL_IC0_H
#define ICL_IC0_H

#include <stdint.h>

#define IC0(name) __attribute__((import_module("ic0"), import_name(#name)))

IC0(msg_arg_data_size) uint32_t ic0_msg_arg_data_size(void);
IC0(msg_arg_data_copy) void ic0_msg_arg_data_copy(uintptr_t dst, uint32_t offset, uint32_t size);
IC0(msg_caller_size) uint32_t ic0_msg_caller_size(void);
IC0(msg_caller_copy) void ic0_msg_caller_copy(uintptr_t dst, uint32_t offset, uint32_t size);
IC0(msg_reply_data_append) void ic0_msg_reply_data_append(uintptr_t src, uint32_t size);
IC0(msg_reply) void ic0_msg_reply(void);
IC0(canister_self_size) uint32_t ic0_canister_self_size(void);
IC0(canister_self_copy) void ic0_canister_self_copy(uintptr_t dst, uint32_t offset, uint32_t size);
IC0(is_controller) uint32_t ic0_is_controller(uintptr_t src, uint32_t size);
IC0(stable64_size) uint64_t ic0_stable64_size(void);
IC0(stable64_grow) int64_t ic0_stable64_grow(uint64_t new_pages);
IC0(stable64_read) void ic0_stable64_read(uint64_t dst, uint64_t offset, uint64_t size);
IC0(stable64_write) void ic0_stable64_write(uint64_t offset, uint64_t src, uint64_t size);
IC0(performance_counter) uint64_t ic0_performance_counter(uint32_t counter_type);
IC0(trap) __attribute__((noreturn)) void ic0_trap(uintptr_t src, uint32_t size);

#undef IC0
#endif

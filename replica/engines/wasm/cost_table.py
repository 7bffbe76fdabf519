"""The IC's instruction cost table: what each wasm instruction adds to a canister's instruction
count.

Transcribed from `instruction_to_cost` in dfinity/ic rs/embedders/src/wasm_utils/instrumentation.rs
at commit a96918e66635bc5f73f79386ff6a8426abe9283e (read from the humandebri/ic copy of dfinity/ic's
history). Instructions are named by their WebAssembly text-format mnemonic. Every instruction
not listed costs 1, the table's default arm; atomics have no entry there either, and the IC
refuses them. Loads and stores cost 1 in a wasm32 module and 2 in a wasm64 (memory64) module.

The dynamic part of bulk memory and table operations (one instruction per byte or element) is
charged at run time by the instrumentation, not here.
"""

from __future__ import annotations

DEFAULT_COST = 1

_COSTS_BY_GROUP: dict[int, str] = {
    # Block delimiters mostly signal the start/end of code blocks.
    0: "block else end loop",
    2: """
        f32.add f32.sub f32.mul f32.ceil f32.floor f32.trunc f32.nearest
        f64.add f64.sub f64.mul f64.ceil f64.floor f64.trunc f64.nearest
        f32.copysign global.get global.set if br br_if br_table
        i8x16.lt_u i8x16.gt_u i16x8.lt_u i16x8.gt_u i32x4.lt_u i32x4.gt_u i8x16.shr_u
        i16x8.extadd_pairwise_i8x16_u i16x8.shl i16x8.shr_s i16x8.shr_u
        i16x8.extmul_high_i8x16_s i16x8.extmul_high_i8x16_u
        i32x4.shl i32x4.shr_s i32x4.shr_u i32x4.mul
        i32x4.extmul_low_i16x8_s i32x4.extmul_high_i16x8_s i32x4.extmul_low_i16x8_u i32x4.extmul_high_i16x8_u
        i64x2.shl i64x2.shr_u
        f32x4.ceil f32x4.floor f32x4.trunc f32x4.nearest f32x4.abs f32x4.neg f32x4.add f32x4.sub f32x4.mul
        f64x2.ceil f64x2.floor f64x2.trunc f64x2.nearest f64x2.abs f64x2.neg f64x2.add f64x2.sub f64x2.mul
        i32x4.trunc_sat_f32x4_s i32x4.trunc_sat_f64x2_s_zero
    """,
    3: """
        f32.div f64.copysign
        f32.eq f32.ne f32.lt f32.gt f32.le f32.ge f64.eq f64.ne f64.lt f64.gt f64.le f64.ge
        f32.convert_i32_s f64.convert_i64_s f32.convert_i64_s f64.convert_i32_s
        return_call i8x16.shuffle i8x16.popcnt i8x16.shl i8x16.shr_s
        i32x4.extadd_pairwise_i16x8_u i64x2.shr_s i32x4.trunc_sat_f64x2_u_zero
    """,
    4: "i64x2.mul f32x4.min f32x4.max f64x2.min i32x4.trunc_sat_f32x4_u f32x4.convert_i32x4_u",
    5: "f64.div f32.sqrt table.get table.set ref.is_null call f32x4.sqrt f64x2.max",
    8: "f64.sqrt",
    10: """
        i32.div_s i32.div_u i32.rem_s i32.rem_u i64.div_s i64.div_u i64.rem_s i64.rem_u
        call_indirect f32x4.div
    """,
    12: "f64x2.div",
    14: "f64x2.sqrt",
    16: "f64.convert_i32_u f32.convert_i64_u f32.convert_i32_u f64.convert_i64_u",
    18: "f32.min f32.max f64.min f64.max",
    20: """
        i64.trunc_sat_f32_s i64.trunc_sat_f32_u i64.trunc_sat_f64_s i64.trunc_sat_f64_u
        i32.trunc_sat_f32_s i32.trunc_sat_f32_u i32.trunc_sat_f64_s i32.trunc_sat_f64_u
        i32.trunc_f32_s i32.trunc_f32_u i32.trunc_f64_s i32.trunc_f64_u
        i64.trunc_f32_s i64.trunc_f32_u i64.trunc_f64_s i64.trunc_f64_u
        memory.size
    """,
    60: "return_call_indirect",
    100: "table.size memory.fill memory.copy table.fill table.copy memory.init table.init",
    130: "ref.func",
    300: "memory.grow table.grow data.drop elem.drop",
}

# Memory accesses: 1 in wasm32, 2 in wasm64.
MEMORY_ACCESSES = frozenset("""
    i32.load i64.load f32.load f64.load i32.load8_s i32.load8_u i32.load16_s i32.load16_u
    i64.load8_s i64.load8_u i64.load16_s i64.load16_u i64.load32_s i64.load32_u
    i32.store i64.store f32.store f64.store i32.store8 i32.store16 i64.store8 i64.store16 i64.store32
    v128.load v128.load8x8_s v128.load8x8_u v128.load16x4_s v128.load16x4_u v128.load32x2_s
    v128.load32x2_u v128.load8_splat v128.load16_splat v128.load32_splat v128.load64_splat
    v128.load32_zero v128.load64_zero v128.store v128.load8_lane v128.load16_lane v128.load32_lane
    v128.load64_lane v128.store8_lane v128.store16_lane v128.store32_lane v128.store64_lane
""".split())

WASM32_COSTS: dict[str, int] = {name: cost for cost, names in _COSTS_BY_GROUP.items() for name in names.split()}
WASM64_COSTS: dict[str, int] = {**WASM32_COSTS, **{name: 2 for name in MEMORY_ACCESSES}}


def instruction_cost(name: str, memory64: bool) -> int:
    """What one execution of instruction `name` (a text-format mnemonic) costs on the IC."""
    return (WASM64_COSTS if memory64 else WASM32_COSTS).get(name, DEFAULT_COST)

"""The IC's instrumentation and module validation (replica/engines/wasm/instrument.py,
validation.py, wasm_binary.py, cost_table.py), run in wasmtime.

Expected instruction counts are written out term by term from the IC's cost table, so a wrong
table entry or a block boundary in the wrong place changes a number here.
"""

from __future__ import annotations

import random
import subprocess
import sys

import pytest
import wasmtime

from replica.engines.wasm import wasm_binary as wb
from replica.engines.wasm.instrument import (
    COUNTER_EXPORT,
    START_EXPORT,
    WRITE_BITMAP_EXPORT,
    InstrumentationError,
    instrument,
)
from replica.engines.wasm.validation import InvalidWasm, validate
from tests.toolchains import compile_motoko, require_module

BUDGET = 10**12


class OutOfInstructions(Exception):
    pass


class Run:
    """An instrumented module in wasmtime, with the host side of the injected imports: the
    counter, out_of_instructions, try_grow_wasm_memory and the write barrier's host half."""

    def __init__(self, wat_or_wasm: str | bytes, write_barrier: bool = False):
        wasm = wasmtime.wat2wasm(wat_or_wasm) if isinstance(wat_or_wasm, str) else wat_or_wasm
        self.out = instrument(wasm, write_barrier=write_barrier)
        config = wasmtime.Config()
        config.wasm_multi_memory = True
        config.wasm_memory64 = True
        self.store = wasmtime.Store(wasmtime.Engine(config))
        module = wasmtime.Module(self.store.engine, self.out.wasm)
        self.first_writes: list[tuple[int, int]] = []
        self.grows: list[tuple[int, int]] = []
        pointer = wasmtime.ValType.i64() if self.out.memory64 else wasmtime.ValType.i32()
        i64 = wasmtime.ValType.i64()
        host = {
            "out_of_instructions": wasmtime.Func(self.store, wasmtime.FuncType([], []), self._out_of_instructions),
            "try_grow_wasm_memory": wasmtime.Func(self.store, wasmtime.FuncType([pointer, pointer], [pointer]),
                                                  self._try_grow),
            "first_write_range": wasmtime.Func(self.store, wasmtime.FuncType([i64, i64], []), self._first_write),
        }
        imports = []
        for item in module.imports:
            if item.module == "__":
                imports.append(host[item.name])
            else:  # a System API import: these tests never call one
                imports.append(wasmtime.Func(self.store, item.type, self._unexpected(item.name)))
        self.instance = wasmtime.Instance(self.store, module, imports)
        self.exports = self.instance.exports(self.store)
        self.counter = self.exports[COUNTER_EXPORT]

    @staticmethod
    def _unexpected(name):
        def call(*_):
            raise AssertionError(f"the test module called ic0.{name}")
        return call

    def _out_of_instructions(self):
        raise OutOfInstructions()

    def _try_grow(self, result, pages):
        self.grows.append((result, pages))
        return result

    def _first_write(self, address, length):
        self.first_writes.append((address, length))
        bitmap = self.exports[WRITE_BITMAP_EXPORT]
        for page in range(address // 4096, (address + length - 1) // 4096 + 1):
            bitmap.data_ptr(self.store)[page] = 1

    def clear_bitmap(self):
        bitmap = self.exports[WRITE_BITMAP_EXPORT]
        pointer = bitmap.data_ptr(self.store)
        for index in range(bitmap.data_len(self.store)):
            pointer[index] = 0

    def call(self, name, *args, budget=BUDGET):
        """(result, instructions the IC would charge)."""
        self.counter.set_value(self.store, wasmtime.Val.i64(budget))
        result = self.exports[name](self.store, *args)
        return result, budget - self.counter.value(self.store)


MIX = """
(module
  (memory 1)
  (func $triple (param i32) (result i32)
    local.get 0 i32.const 3 i32.mul)
  (func (export "mix") (param $n i32) (result i32) (local $acc i32) (local $f f64)
    i32.const 100 i32.const 7 i32.div_u local.set $acc
    f64.const 2.0 f64.sqrt local.set $f
    (loop $again
      local.get $acc local.get $n call $triple i32.add local.set $acc
      local.get $n i32.const 1 i32.sub local.tee $n
      br_if $again)
    i32.const 0 i32.const 255 i32.const 1000 memory.fill
    local.get $acc)
  (func (export "branch") (param i32) (result i32)
    local.get 0
    if (result i32)
      i32.const 10
    else
      i32.const 20 i32.const 2 i32.rem_s
    end)
  (func (export "spin") (loop $forever br $forever))
  (func (export "grow") (param i32) (result i32) local.get 0 memory.grow)
)
"""


def test_straight_line_loop_call_and_fill_cost_what_the_ic_table_says():
    run = Run(MIX)
    n = 7
    result, used = run.call("mix", n)
    assert result == 14 + 3 * sum(range(1, n + 1))
    entry = (1  # every function entry
             + 1 + 1 + 10 + 1  # i32.const, i32.const, i32.div_u, local.set
             + 1 + 8 + 1  # f64.const, f64.sqrt, local.set
             + 0)  # loop
    loop_body = (1 + 1 + 5 + 1 + 1  # local.get, local.get, call, i32.add, local.set
                 + 1 + 1 + 1 + 1 + 2)  # local.get, i32.const, i32.sub, local.tee, br_if
    triple = 1 + 1 + 1 + 1 + 0  # entry, local.get, i32.const, i32.mul, end
    after_loop = (0  # end of the loop
                  + 1 + 1 + 1 + 100  # three i32.const, memory.fill
                  + 1 + 0)  # local.get, end
    fill_bytes = 1000  # memory.fill's length, charged at run time
    assert used == entry + n * (loop_body + triple) + after_loop + fill_bytes


def test_if_else_charges_only_the_branch_taken():
    run = Run(MIX)
    head = 1 + 1 + 2  # entry, local.get, if
    assert run.call("branch", 1) == (10, head + 1 + 0)  # i32.const, else
    assert run.call("branch", 0) == (0, head + 1 + 1 + 10 + 0)  # i32.const, i32.const, i32.rem_s, end


def test_memory_grow_costs_300_and_reports_to_the_host():
    run = Run(MIX)
    assert run.call("grow", 2) == (1, 1 + 1 + 300 + 0)  # entry, local.get, memory.grow, end
    assert run.grows == [(1, 2)]  # the grow's result (old size) and its argument


def test_an_infinite_loop_traps_out_of_instructions():
    run = Run(MIX)
    with pytest.raises(OutOfInstructions):
        run.call("spin", budget=1_000_000)
    # The loop header checks the counter on every iteration: it stops at the first check below
    # zero, within one iteration (br costs 2) of the budget.
    assert -2 <= run.counter.value(run.store) < 0


SIMD = """
(module
  (func (export "simd") (result i32)
    v128.const i32x4 1 2 3 4
    v128.const i32x4 5 6 7 8
    i32x4.dot_i16x8_s
    v128.const i32x4 9 9 9 9
    i64x2.mul
    f64x2.sqrt
    i8x16.popcnt
    v128.const i32x4 0 0 0 0
    i8x16.shuffle 0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15
    i32x4.extract_lane 0))
"""


def test_simd_costs():
    _, used = Run(SIMD).call("simd")
    assert used == (1  # entry
                    + 1 + 1 + 1  # v128.const, v128.const, i32x4.dot_i16x8_s
                    + 1 + 4  # v128.const, i64x2.mul
                    + 14 + 3  # f64x2.sqrt, i8x16.popcnt
                    + 1 + 3  # v128.const, i8x16.shuffle
                    + 1 + 0)  # i32x4.extract_lane, end


MEMORY64 = """
(module
  (memory i64 1)
  (func (export "m64") (result i64)
    i64.const 16 i64.const 42 i64.store
    i64.const 5000 i32.const 0 i64.const 300 memory.fill
    i64.const 0 v128.load i64x2.extract_lane 0 drop
    i64.const 1 memory.grow drop
    i64.const 16 i64.load))
"""


def test_memory64_loads_and_stores_cost_two_and_lengths_are_i64():
    run = Run(MEMORY64)
    assert run.out.memory64
    result, used = run.call("m64")
    assert result == 42
    assert used == (1  # entry
                    + 1 + 1 + 2  # i64.const, i64.const, i64.store (2 in wasm64)
                    + 1 + 1 + 1 + 100 + 300  # three consts, memory.fill, its 300 bytes
                    + 1 + 2 + 1 + 1  # i64.const, v128.load (2 in wasm64), i64x2.extract_lane, drop
                    + 1 + 300 + 1  # i64.const, memory.grow, drop
                    + 1 + 2 + 0)  # i64.const, i64.load, end
    assert run.grows == [(1, 1)]
    barrier = Run(MEMORY64, write_barrier=True)
    assert barrier.call("m64") == (42, used)
    assert barrier.first_writes == [(16, 8), (5000, 300)]  # pages 0 and 1


def test_bulk_charge_saturates_and_traps_when_the_length_exceeds_the_budget():
    run = Run(MIX)
    with pytest.raises(OutOfInstructions):
        run.call("mix", 1, budget=500)  # the 1000-byte fill does not fit in what is left


def test_start_function_becomes_canister_start_and_runs_metered():
    wat = """(module (global $g (mut i32) (i32.const 0))
               (func $init i32.const 5 global.set $g) (start $init))"""
    run = Run(wat)
    assert START_EXPORT in run.exports
    assert run.exports["__persistent_mutable_global_0"].value(run.store) == 0  # not run at instantiation
    assert run.call(START_EXPORT) == (None, 1 + 1 + 2 + 0)  # entry, i32.const, global.set, end
    assert run.exports["__persistent_mutable_global_0"].value(run.store) == 5


BARRIER = """
(module
  (memory 4)
  (func (export "writes") (param $a i32)
    local.get $a i32.const 1 i32.store
    local.get $a i32.const 2 i32.store offset=8
    local.get $a i32.const 8192 i32.add i64.const 3 i64.store
    local.get $a i32.const 4096 i32.add v128.const i32x4 1 2 3 4 v128.store)
  (func (export "straddle") (i32.const 4094) (i32.const 0x01020304) (i32.store))
  (func (export "fill") (memory.fill (i32.const 100) (i32.const 9) (i32.const 9000)))
  (func (export "copy") (memory.copy (i32.const 40000) (i32.const 0) (i32.const 10)))
  (func (export "read") (param i32) (result i32) (i32.load (local.get 0)))
  (func (export "near_edge")
    (i32.store (i32.const 4000) (i32.const 1))
    (i32.store (i32.const 4090) (i32.const 2))
    (i32.store (i32.const 4094) (i32.const 3)))
)
"""


def test_write_barrier_reports_each_page_once_per_execution():
    run = Run(BARRIER, write_barrier=True)
    _, used = run.call("writes", 100)
    # Pages 0, 2 and 1, once each: the second store to page 0 finds it marked.
    assert run.first_writes == [(100, 4), (8292, 8), (4196, 16)]
    plain = Run(BARRIER)
    assert plain.call("writes", 100)[1] == used  # the barrier's own instructions are not charged
    run.call("writes", 100)
    assert len(run.first_writes) == 3  # same execution state: all marked
    run.clear_bitmap()  # a new execution
    run.call("writes", 100)
    assert len(run.first_writes) == 6
    assert run.call("read", 108)[0] == 2


def test_a_store_leaving_the_last_marked_page_is_checked_again():
    run = Run(BARRIER, write_barrier=True)
    run.call("near_edge")
    # 4000 marks page 0; 4090 is inside it (no bitmap read); 4094 reaches into page 1
    assert run.first_writes == [(4000, 4), (4094, 4)]


def test_write_barrier_covers_page_straddling_stores_and_bulk_writes():
    run = Run(BARRIER, write_barrier=True)
    run.call("straddle")
    assert run.first_writes == [(4094, 4)]  # the host marks pages 0 and 1
    run.call("fill")
    assert run.first_writes[1:] == [(100, 9000)]  # pages 0-2: page 2 was not marked
    run.call("copy")
    assert run.first_writes[2:] == [(40000, 10)]
    run.call("copy")
    assert len(run.first_writes) == 3  # marked now: no call


def test_stores_to_another_memory_pass_the_barrier_unmarked():
    wat = """(module (memory 1) (memory $second 1)
      (func (export "w") (i32.store $second (i32.const 0) (i32.const 5)) (i32.store (i32.const 8) (i32.const 6))))"""
    run = Run(wat, write_barrier=True)
    assert run.call("w") == (None, 1 + 3 * 2 + 0)  # entry; per store 2 i32.const + i32.store; end
    assert run.first_writes == [(8, 4)]  # only the heap (memory 0) is journalled


def test_function_indices_shift_past_the_added_imports_everywhere():
    """Calls, exports, element segments (both forms) and ref.func in globals still reach the
    functions they named before the instrumentation added its imports."""
    wat = """(module
      (import "ic0" "msg_reply" (func $reply))
      (type $t (func (result i32)))
      (table 4 funcref)
      (elem (i32.const 0) $one $two)
      (elem (i32.const 2) funcref (ref.func $three))
      (global $g funcref (ref.func $two))
      (func $one (result i32) i32.const 1)
      (func $two (result i32) i32.const 2)
      (func $three (result i32) i32.const 3)
      (func (export "pick") (param i32) (result i32) (call_indirect (type $t) (local.get 0)))
      (func (export "copy_table") (table.copy (i32.const 1) (i32.const 2) (i32.const 2)))
      (func (export "direct") (result i32) (call $three)))"""
    run = Run(wat)
    assert [run.call("pick", i)[0] for i in range(3)] == [1, 2, 3]
    _, used = run.call("pick", 0)
    assert used == (1 + 1 + 10 + 0) + (1 + 1 + 0)  # pick: entry, local.get, call_indirect; one: entry, i32.const
    assert run.call("direct") == (3, (1 + 5 + 0) + (1 + 1 + 0))
    # table.copy charges 100 and then its length, 2 elements (validation refuses table.copy, as the
    # IC does; the instrumentation still charges it as the IC's would)
    assert run.call("copy_table") == (None, 1 + 1 + 1 + 1 + 100 + 2 + 0)
    assert run.call("pick", 1)[0] == 3


def test_backtraces_still_name_functions():
    run = Run("""(module (import "ic0" "trap" (func $trap (param i32 i32)))
      (func $inner (param $x i32) (local $y i32) unreachable)
      (func $outer (export "go") i32.const 1 call $inner))""")
    with pytest.raises(wasmtime.Trap) as trap:
        run.call("go")
    assert "!inner" in str(trap.value) and "!outer" in str(trap.value)


def test_decoder_names_every_opcode_as_wat_does():
    """Each mnemonic of the tables, assembled by wasmtime's WAT parser (which encodes without
    type-checking), decodes to itself, immediates included."""
    written = {"v128.const": "v128.const i32x4 0 0 0 0", "i8x16.shuffle": "i8x16.shuffle" + " 0" * 16,
               "block": "block end", "loop": "loop end", "if": "if end", "br_table": "br_table 0 0",
               "select": "select (result i32)", "i32.const": "i32.const -5", "i64.const": "i64.const -5",
               "f32.const": "f32.const 1.5", "f64.const": "f64.const 1.5", "ref.null": "ref.null func",
               "call_indirect": "call_indirect (type 0)", "return_call_indirect": "return_call_indirect (type 0)",
               "memory.init": "memory.init 0", "table.init": "table.init 0"}
    checked = 0
    for table in (wb.OPCODES, wb.FC_OPCODES, wb.FD_OPCODES):
        for name, kind in table.values():
            if name in ("else", "end"):
                continue  # only inside the block forms above
            if name in written:
                text = written[name]
            elif kind == wb.LANE:
                text = f"{name} 1"
            elif kind == wb.MEMARG_LANE:
                text = f"{name} offset=3 1"
            elif kind in (wb.INDEX, wb.TWO_INDEXES) and name not in ("memory.size", "memory.grow", "memory.fill",
                                                                     "memory.copy", "table.copy"):
                text = f"{name} 0"
            else:
                text = name
            wasm = wasmtime.wat2wasm('(module (type (func)) (memory 1) (table 1 funcref) (data "") (elem func) '
                                     f"(func {text}))")
            names = wb.decode_body(wb.parse_module(wasm).bodies[0]).names
            assert names[0] == name and names[-1] == "end", text
            checked += 1
    assert checked == len(wb.OPCODES) + len(wb.FC_OPCODES) + len(wb.FD_OPCODES) - 2


def test_wat_samples_round_trip_byte_for_byte():
    for text in (MIX, SIMD, MEMORY64, BARRIER):
        wasm = wasmtime.wat2wasm(text)
        module = wb.parse_module(wasm)
        assert module.encode() == wasm
        for body in module.bodies:
            decoded = wb.decode_body(body)
            assert decoded.starts[-1] == len(decoded.code)  # every instruction accounted for
        # the writer re-encodes what the reader decoded (wat2wasm writes minimal LEB128s)
        assert wb.encode_vector([t.encode() for t in module.types]) == module.section(wb.TYPE).payload
        if module.memories:  # SIMD declares none
            assert wb.encode_vector([m.encode() for m in module.memories]) == module.section(wb.MEMORY).payload


def test_round_trip_and_instrumentation_of_a_zig_built_c_module_with_simd(tmp_path):
    require_module("ziglang", "pip install ziglang")
    source = tmp_path / "kernel.c"
    source.write_text("""
        #include <wasm_simd128.h>
        #include <stdint.h>
        static int16_t buf[4096];
        __attribute__((export_name("dot"))) int32_t dot(int n) {
          v128_t acc = wasm_i32x4_splat(0);
          for (int i = 0; i < n && i < 4096; i++) buf[i] = (int16_t)(i * 3);
          for (int i = 0; i + 8 <= n && i + 8 <= 4096; i += 8)
            acc = wasm_i32x4_add(acc, wasm_i32x4_dot_i16x8(wasm_v128_load(buf + i), wasm_v128_load(buf + i)));
          return wasm_i32x4_extract_lane(acc, 0) + wasm_i32x4_extract_lane(acc, 1)
               + wasm_i32x4_extract_lane(acc, 2) + wasm_i32x4_extract_lane(acc, 3);
        }""")
    output = tmp_path / "kernel.wasm"
    subprocess.run([sys.executable, "-m", "ziglang", "cc", "-target", "wasm32-freestanding",
                    "-mcpu=generic+simd128+bulk_memory", "-O2", "-nostdlib", "-Wl,--no-entry", "-o", str(output),
                    str(source)], check=True, capture_output=True)
    wasm = output.read_bytes()
    module = wb.parse_module(wasm)
    assert module.encode() == wasm
    names = {name for body in module.bodies for name in wb.decode_body(body).names}
    assert {"i32x4.dot_i16x8_s", "v128.load", "i32x4.extract_lane"} <= names
    plain = Run(wasm)
    barrier = Run(wasm, write_barrier=True)
    expected = sum(i * 3 * i * 3 for i in range(64))
    assert plain.call("dot", 64)[0] == barrier.call("dot", 64)[0] == expected
    assert plain.call("dot", 64)[1] == barrier.call("dot", 64)[1] > 64 * 5
    assert len(barrier.first_writes) == 1  # buf's 128 bytes on one page


def test_moc_modules_round_trip_validate_and_instrument():
    modules = compile_motoko(["counter", "stable_store"])
    for name, wasm in modules.items():
        module = wb.parse_module(wasm)
        assert module.encode() == wasm, name
        info = validate(wasm)
        assert info.memory64
        assert "inc" in info.methods["update"] or "bump" in info.methods["update"]
        assert info.metadata["candid:service"].public
        assert {"canister_init", "canister_pre_upgrade", "canister_post_upgrade"} <= info.system_methods
        out = instrument(wasm, write_barrier=True)
        config = wasmtime.Config()
        config.wasm_multi_memory = True
        config.wasm_memory64 = True
        compiled = wasmtime.Module(wasmtime.Engine(config), out.wasm)
        exports = {e.name for e in compiled.exports}
        assert {COUNTER_EXPORT, WRITE_BITMAP_EXPORT, "memory", "canister_init"} <= exports
        assert [(i.module, i.name) for i in compiled.imports][-3:] == [
            ("__", "out_of_instructions"), ("__", "try_grow_wasm_memory"), ("__", "first_write_range")]


def _module_importing(name: str, params: str, results: str = "", memory: str = "(memory 1)") -> bytes:
    return wasmtime.wat2wasm(f'(module (import "ic0" "{name}" (func (param {params}) (result {results}))) {memory})'
                             .replace("(param )", "").replace("(result )", ""))


def test_validation_refuses_what_the_ic_refuses_with_its_words():
    with pytest.raises(InvalidWasm, match=r"^Wasm module has an invalid import section\. Module imports function "
                                          r"'foo' from 'ic0' that is not exported by the runtime\.$"):
        validate(_module_importing("foo", "i32"))
    with pytest.raises(InvalidWasm, match=r"Expected input params \[I32, I32\] for 'msg_reply_data_append', "
                                          r"got \[I64, I64\]\."):
        validate(_module_importing("msg_reply_data_append", "i64 i64"))
    # the same import is right in a memory64 module, where the pointer type is i64
    assert validate(_module_importing("msg_reply_data_append", "i64 i64", memory="(memory i64 1)")).memory64
    with pytest.raises(InvalidWasm, match="'stable_size' from 'ic0' that is not exported"):
        validate(_module_importing("stable_size", "", "i32", memory="(memory i64 1)"))  # wasm32 only
    with pytest.raises(InvalidWasm, match=r"Exporting reserved function 'canister_foo' with \"canister_\" prefix"):
        validate(wasmtime.wat2wasm('(module (func (export "canister_foo")))'))
    with pytest.raises(InvalidWasm, match="Duplicate function 'go' exported multiple times"):
        validate(wasmtime.wat2wasm('(module (func (export "canister_update go")) (func (export "canister_query go")))'))
    with pytest.raises(InvalidWasm, match=r"Expected return type \[\] for 'canister_query q', got \[I32\]"):
        validate(wasmtime.wat2wasm('(module (func (export "canister_query q") (result i32) i32.const 0))'))
    with pytest.raises(InvalidWasm, match="Exporting reserved symbol canister counter_instructions"):
        validate(wasmtime.wat2wasm('(module (global (export "canister counter_instructions") i64 (i64.const 0)))'))
    with pytest.raises(InvalidWasm, match="Importing globals is not allowed"):
        validate(wasmtime.wat2wasm('(module (import "env" "g" (global i32)))'))
    with pytest.raises(InvalidWasm, match="Wasmtime failed to validate"):
        validate(wasmtime.wat2wasm("(module (func (result i32)))"))
    with pytest.raises(InvalidWasm, match="Failed to decode wasm module"):
        validate(b"\0asm\x01\0\0\0\x01\xff")
    with pytest.raises(InvalidWasm, match="^Wasm module contains a function at index 1 with unsupported instruction "
                                          "table.copy.$"):
        validate(wasmtime.wat2wasm('(module (import "ic0" "msg_reply" (func)) (table 2 funcref) '
                                   "(func (table.copy (i32.const 0) (i32.const 1) (i32.const 1))))"))
    blocks = 19_608  # 50 per block and 1 per end, + 1 for the function's end: just over 1,000,000
    with pytest.raises(InvalidWasm, match=f"at index 0 with complexity {blocks * 51 + 1} which exceeds the maximum "
                                          "complexity allowed 1000000."):
        validate(wasmtime.wat2wasm(f"(module (func {'block end ' * blocks}))"))
    validate(wasmtime.wat2wasm(f"(module (func {'block end ' * (blocks - 1)}))"))  # 999,958: allowed


def test_validation_reports_methods_metadata_and_start():
    base = wasmtime.wat2wasm("""(module (memory 1) (func $f) (start $f)
        (func (export "canister_update put")) (func (export "canister_query get"))
        (func (export "canister_composite_query both")) (func (export "canister_init"))
        (func (export "canister_on_low_wasm_memory")))""")
    sections = [("icp:public candid:service", b"service : {}"), ("icp:private secret", b"s"), ("other", b"x")]
    wasm = base + b"".join(wb.Section(wb.CUSTOM, content, name).encode() for name, content in sections)
    info = validate(wasm)
    assert info.methods == {"update": ("put",), "query": ("get",), "composite_query": ("both",)}
    assert info.system_methods == {"canister_init", "canister_on_low_wasm_memory"}
    assert info.start_function == 0
    assert not info.memory64
    assert {name: (s.public, s.content) for name, s in info.metadata.items()} == {
        "candid:service": (True, b"service : {}"), "secret": (False, b"s")}
    with pytest.raises(InvalidWasm, match="'icp:' section names must have a space"):
        validate(base + wb.Section(wb.CUSTOM, b"", "icp:public").encode())
    with pytest.raises(InvalidWasm, match="Custom section 'icp:protected x' has no public/private scope"):
        validate(base + wb.Section(wb.CUSTOM, b"", "icp:protected x").encode())
    too_many = b"".join(wb.Section(wb.CUSTOM, b"", f"icp:public s{i}").encode() for i in range(17))
    with pytest.raises(InvalidWasm, match="defined 17 custom sections which exceeds the maximum number allowed 16"):
        validate(base + too_many)


def test_refused_inputs_say_what_is_wrong():
    with pytest.raises(InstrumentationError, match="does not start with"):
        instrument(b"\x1f\x8b\x08 gzip")
    with pytest.raises(InstrumentationError, match="atomic"):
        instrument(wasmtime.wat2wasm("(module (memory 1 1 shared) (func i32.const 0 i32.atomic.load drop))"))


def test_damaged_modules_are_refused_with_a_clear_error():
    """Bytes changed, cut or inserted at random: instrument and validate either work or raise
    their own error (never an IndexError or the like from deep inside the reader)."""
    rng = random.Random(7)
    seeds = [wasmtime.wat2wasm(text) for text in (MIX, BARRIER, SIMD, MEMORY64)]
    for _ in range(1500):
        wasm = bytearray(rng.choice(seeds))
        for _ in range(rng.randint(1, 4)):
            at = rng.randrange(len(wasm))
            choice = rng.random()
            if choice < 0.6:
                wasm[at] = rng.randrange(256)
            elif choice < 0.8:
                del wasm[at:at + rng.randint(1, 8)]
            else:
                wasm[at:at] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 4)))
        for check, refusal in ((instrument, InstrumentationError), (validate, InvalidWasm)):
            try:
                check(bytes(wasm))
            except refusal as error:
                assert str(error)

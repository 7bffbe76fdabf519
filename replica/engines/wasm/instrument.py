"""Instruments a canister's wasm module as the IC does, so that running it counts instructions
exactly as the IC counts them.

Follows `instrument` in dfinity/ic rs/embedders/src/wasm_utils/instrumentation.rs at commit
a96918e66635bc5f73f79386ff6a8426abe9283e (read from the humandebri/ic copy of dfinity/ic's
history); the cost table is in cost_table.py.

Usage:

    out = instrument(wasm_bytes)                       # InstrumentedModule
    module = wasmtime.Module(engine, out.wasm)         # engine: Config with multi-memory on
    # link the imports named below, set the counter global, call an export, read the counter

What the instrumented module has, beyond the original:

- imports, appended after the module's own, from module "__" (the IC's `INSTRUMENTED_FUN_MODULE`):
  - `out_of_instructions: () -> ()`: called when the counter is negative at a check; the host
    traps the execution (IC0522) there, or, for DTS, refills the counter and returns;
  - `try_grow_wasm_memory: (I, I) -> I`, called after every `memory.grow` with the grow's
    result and its argument (in pages). It returns the result the program sees: the host
    answers -1 when the grow failed, and otherwise checks the canister's wasm_memory_limit and
    memory allocation, trapping as the IC does when they are exceeded. `I` is i64 in a memory64
    module and i32 otherwise;
  - with the write barrier only, `first_write_range: (address: i64, length: i64) -> ()` (below).
- an exported mutable i64 global `canister counter_instructions` (COUNTER_EXPORT): the
  instructions left. The host sets it before an execution; every basic block subtracts its
  cost at its start, function entries and loop headers then call `out_of_instructions` if it is
  negative (so an infinite loop always reaches a check), and bulk memory and table operations
  subtract their length (bytes or elements) before they run, checked, through an injected
  function that saturates at i64::MIN. The overshoot past zero is bounded by the longest path of
  non-loop blocks, as on the IC.
- exports the host needs: the heap as `memory`, the table as `table`, the start function as
  `canister_start` (the start section is removed, so the host runs it with the counter set), and
  every mutable global not exported yet as `__persistent_mutable_global_<index>` (for rollback and
  persistence), all as the IC names them.
- the heap's maximum capped at the largest wasm memory the IC allows (4 GiB wasm32, 6 GiB wasm64).

The write barrier (`write_barrier=True`, not on the IC, which tracks dirty pages by page
protection): a second memory exported as `canister write_bitmap` (WRITE_BITMAP_EXPORT) holds one
byte per 4 KiB page of the heap. Before every store to the heap (SIMD and lane stores included)
the module reads the bytes of the first and last page written; if one is 0 it calls
`first_write_range(address, bytes)`. memory.fill, memory.copy and memory.init call it for their
destination range unless its (at most two) pages are marked. The host saves the old pages, sets
their bytes to 1, and clears them when the execution ends, so a rollback costs the pages written.
Each function invocation remembers the last page it found marked and skips the bitmap for
stores inside it, so the host must clear marks only while no wasm function of the instance is
running (between executions), never from inside a host call.
The barrier's own instructions are not counted: they are not part of the canister's code.

Deliberate omissions, none of which changes the instruction count of canister code:
- Wasm-native stable memory (the IC maps stable memory into the module and replaces the ic0
  stable-memory imports with wasm functions). Here the host implements those imports and
  charges them (system_api.py).
- The `canister counter_dirty_pages`, `canister counter_accessed_pages` and `canister
  stable_memory_size` globals and the `count_clean_pages` function, which serve only that
  stable memory.
- Active data segments stay in the module (the IC lifts them out and writes the pages itself);
  wasmtime applies them when it instantiates the module, with the same resulting memory.

One deliberate difference: in a memory64 module the IC passes the length of table.fill and
table.copy to its i64 decrement function even for a table of 32-bit indices, which would not
validate (and the IC refuses those instructions anyway); here the length is read at the
table's own width. The charge is the same.
"""

from __future__ import annotations

from dataclasses import dataclass

from replica.engines.wasm import wasm_binary as wb
from replica.engines.wasm.cost_table import WASM32_COSTS, WASM64_COSTS
from replica.request_id import encode_sleb128 as sleb

COUNTER_EXPORT = "canister counter_instructions"
HEAP_EXPORT = "memory"
TABLE_EXPORT = "table"
START_EXPORT = "canister_start"
WRITE_BITMAP_EXPORT = "canister write_bitmap"
PERSISTENT_GLOBAL_PREFIX = "__persistent_mutable_global_"
INJECTED_MODULE = "__"
OUT_OF_INSTRUCTIONS = "out_of_instructions"
TRY_GROW_WASM_MEMORY = "try_grow_wasm_memory"
FIRST_WRITE_RANGE = "first_write_range"

WASM_PAGE_BYTES = 65536
BARRIER_PAGE_BYTES = 4096  # the IC's dirty-page unit
MAX_WASM32_MEMORY_BYTES = 4 << 30
MAX_WASM64_MEMORY_BYTES = 6 << 30

# The IC's compilation charge: compiling one wasm instruction costs as much as executing 6,000
# (dfinity/ic rs/config/src/embedders.rs, DEFAULT_COST_TO_COMPILE_WASM_INSTRUCTION).
COST_TO_COMPILE_WASM_INSTRUCTION = 6_000
# Instructions of the functions the IC injects that are not injected here (count_clean_pages,
# 45 instructions), and globals it adds (the instruction, dirty-page and accessed-page counters
# and the stable memory size), so the compilation charge matches.
_IC_ONLY_INSTRUCTIONS = 45
_IC_INJECTED_GLOBALS = 4


class InstrumentationError(ValueError):
    """The module cannot be instrumented; the message says why."""


@dataclass(frozen=True)
class InstrumentedModule:
    wasm: bytes
    memory64: bool
    write_barrier: bool  # the bitmap memory and first_write_range import are present
    # What the IC charges for compiling this module, in instructions (its instruction count
    # after instrumentation times COST_TO_COMPILE_WASM_INSTRUCTION). Approximate: the IC also
    # counts the stable-memory functions it injects, which are not injected here.
    compilation_instructions: int


# Instructions after which a basic block ends, and the scope of the block that follows.
_REENTRANT, _NON_REENTRANT, _BLOCK_END, _DYNAMIC = range(4)
_SPLITS = {"loop": _REENTRANT, "if": _NON_REENTRANT, "else": _BLOCK_END, "br": _BLOCK_END,
           "br_if": _BLOCK_END, "br_table": _BLOCK_END, "end": _BLOCK_END, "return": _BLOCK_END,
           "unreachable": _BLOCK_END, "return_call": _BLOCK_END, "return_call_indirect": _BLOCK_END}
# Operations whose length operand (on top of the stack) is charged at run time.
_BULK = {"memory.fill", "memory.copy", "table.fill", "table.copy", "memory.init", "table.init"}
_FUNC_INDEX_OPS = {"call", "return_call", "ref.func"}
_BULK_WRITES = {"memory.fill", "memory.copy", "memory.init"}


def injection_points(names: list[str], memory64: bool, table64: frozenset[str] = frozenset()
                     ) -> list[tuple[int, int, int]]:
    """The IC's `injections`: (position, scope, cost) at the start of each basic block, and
    (position, _DYNAMIC, operand bits) before each bulk operation, in code order. Blocks other
    than function entries and loop bodies are dropped when they cost nothing, as on the IC.
    `table64` names the bulk table operations whose length is i64."""
    costs = WASM64_COSTS if memory64 else WASM32_COSTS
    points: list[tuple[int, int, int]] = []
    position, scope, cost = 0, _REENTRANT, 1  # even an empty function costs something
    for i, name in enumerate(names):
        cost += costs.get(name, 1)
        split = _SPLITS.get(name)
        if split is not None:
            if scope == _REENTRANT or cost > 0:
                points.append((position, scope, cost))
            position, scope, cost = i + 1, split, 0
        elif name in _BULK:
            wide = name in table64 if name.startswith("table.") else memory64 and name != "memory.init"
            points.append((i, _DYNAMIC, 64 if wide else 32))
    points.sort(key=lambda point: point[0])  # stable: a bulk charge precedes a block starting there
    return points


@dataclass
class _Context:
    """Indices the rewritten code refers to."""

    memory64: bool
    func_shift: int  # how many imports were added before the module's own functions
    imported_funcs: int  # the module's own function imports
    counter: bytes  # uleb of the counter global's index
    out_of_instructions: bytes
    try_grow: bytes
    decrement: bytes
    first_write_range: bytes
    barrier_range: bytes
    bitmap_memory: int | None  # None: no write barrier
    table64: frozenset[str]

    def func(self, index: int) -> int:
        return index if index < self.imported_funcs else index + self.func_shift


def instrument(wasm: bytes, write_barrier: bool = False, max_wasm_memory_bytes: int | None = None
               ) -> InstrumentedModule:
    """Instruments `wasm` (the module bytes, not gzipped). `max_wasm_memory_bytes` caps the heap
    (default: the IC's 4 GiB for wasm32, 6 GiB for wasm64)."""
    try:
        return _instrument(wb.parse_module(wasm), write_barrier, max_wasm_memory_bytes)
    except wb.WasmFormatError as error:
        raise InstrumentationError(f"cannot read the wasm module: {error}") from None


def _instrument(module: wb.Module, write_barrier: bool, max_wasm_memory_bytes: int | None) -> InstrumentedModule:
    memories = module.all_memories
    memory64 = bool(memories) and memories[0].memory64
    if max_wasm_memory_bytes is None:
        max_wasm_memory_bytes = MAX_WASM64_MEMORY_BYTES if memory64 else MAX_WASM32_MEMORY_BYTES
    max_pages = max_wasm_memory_bytes // WASM_PAGE_BYTES
    barrier = write_barrier and bool(memories)
    I = wb.I64 if memory64 else wb.I32  # noqa: N806 - the interface spec's name for the pointer type

    types = list(module.types)

    def type_index(params: bytes, results: bytes) -> int:
        types.append(wb.FuncType(params, results))
        return len(types) - 1

    new_imports = [(OUT_OF_INSTRUCTIONS, type_index(b"", b"")),
                   (TRY_GROW_WASM_MEMORY, type_index(bytes([I, I]), bytes([I])))]
    if barrier:
        new_imports.append((FIRST_WRITE_RANGE, type_index(bytes([wb.I64, wb.I64]), b"")))
    imported_funcs = len(module.imported_functions)
    shift = len(new_imports)
    first_helper = imported_funcs + shift + len(module.functions)
    helpers = [type_index(bytes([wb.I64]), bytes([wb.I64]))]  # decrement
    if barrier:
        helpers.append(type_index(bytes([wb.I64, wb.I64]), b""))  # barrier_range
    imported_globals = sum(1 for i in module.imports if i.kind == wb.KIND_GLOBAL)
    counter_index = imported_globals + len(module.globals)
    bitmap_index = len(memories) if barrier else None
    table64 = frozenset(("table.fill", "table.copy")) if any(t[1] & 4 for t in module.tables) else frozenset()
    ctx = _Context(memory64, shift, imported_funcs, wb.uleb(counter_index),
                   wb.uleb(imported_funcs), wb.uleb(imported_funcs + 1), wb.uleb(first_helper),
                   wb.uleb(imported_funcs + 2), wb.uleb(first_helper + 1), bitmap_index, table64)

    bodies: list[bytes] = []
    instruction_count = 0
    for raw, type_idx in zip(module.bodies, module.functions, strict=True):
        body, count = _rewrite_body(raw, len(module.types[type_idx].params), ctx)
        bodies.append(body)
        instruction_count += count
    helper_bodies = [_decrement_body(ctx)]
    if barrier:
        helper_bodies.append(_barrier_range_body(ctx))
    instruction_count += _DECREMENT_INSTRUCTIONS + _IC_ONLY_INSTRUCTIONS
    instruction_count += 2 * (len(module.globals) + _IC_INJECTED_GLOBALS)

    sections = [s for s in module.sections if s.id != wb.START]
    out = wb.Module(sections)
    for section in sections:
        if section.id == wb.CUSTOM and section.name == "name":
            section.payload = _names(section.payload, ctx)
    _put(out, wb.TYPE, wb.encode_vector([t.encode() for t in types]))
    _put(out, wb.IMPORT, _imports(module, new_imports))
    _put(out, wb.FUNCTION, wb.encode_vector([wb.uleb(t) for t in module.functions + helpers]))
    _put(out, wb.MEMORY, _memories(module, max_pages, barrier))
    _put(out, wb.GLOBAL, _globals(module, ctx))
    _put(out, wb.EXPORT, _exports(module, ctx, counter_index, bitmap_index))
    if (elements := out.section(wb.ELEMENT)) is not None:
        elements.payload = _elements(elements.payload, ctx)
    _put(out, wb.CODE, wb.encode_vector([wb.uleb(len(b)) + b for b in bodies + helper_bodies]))
    return InstrumentedModule(out.encode(), memory64, barrier,
                              instruction_count * COST_TO_COMPILE_WASM_INSTRUCTION)


# --- function bodies -----------------------------------------------------------------------

def _static_charge(ctx: _Context, scope: int, cost: int) -> bytes:
    code = b"\x23" + ctx.counter + b"\x42" + sleb(cost) + b"\x7d\x24" + ctx.counter
    if scope == _REENTRANT:
        code += b"\x23" + ctx.counter + b"\x42\x00\x53\x04\x40\x10" + ctx.out_of_instructions + b"\x0b"
    return code


def _rewrite_body(raw: bytes, params: int, ctx: _Context) -> tuple[bytes, int]:
    """The instrumented body, and its instruction count after the IC's instrumentation."""
    body = wb.decode_body(raw)
    names, starts, immediates, code = body.names, body.starts, body.immediates, body.code
    points = injection_points(names, ctx.memory64, ctx.table64)
    instructions = len(names)
    # What happens before (injections) and in place of (rewrites) instructions, by position.
    before: dict[int, list[bytes]] = {}
    for position, scope, value in points:
        if scope == _DYNAMIC:
            charge = b"\x10" + ctx.decrement if value == 64 else b"\xad\x10" + ctx.decrement + b"\xa7"
            instructions += 1 if value == 64 else 3
        else:
            charge = _static_charge(ctx, scope, value)
            instructions += 10 if scope == _REENTRANT else 4
        before.setdefault(position, []).append(charge)

    grow_local = params + body.local_count
    I = wb.I64 if ctx.memory64 else wb.I32  # noqa: N806
    new_locals = [I] if "memory.grow" in names else []
    barrier = _BarrierLocals(params + body.local_count + len(new_locals), ctx.memory64)
    replace: dict[int, bytes] = {}
    for position, operand in immediates.items():
        name = names[position]
        if name in _FUNC_INDEX_OPS:
            replace[position] = code[starts[position]:starts[position] + 1] + wb.uleb(ctx.func(operand))
        elif name == "memory.grow":
            local = wb.uleb(grow_local)
            original = code[starts[position]:starts[position + 1]]
            replace[position] = b"\x22" + local + original + b"\x20" + local + b"\x10" + ctx.try_grow
            instructions += 3
        elif ctx.bitmap_memory is not None:
            original = code[starts[position]:starts[position + 1]]
            if name in wb.STORES and operand.memory == 0:
                replace[position] = _store_barrier(ctx, barrier, name, operand.offset) + original
            elif name in _BULK_WRITES and operand == 0:
                replace[position] = _bulk_barrier(ctx, barrier, name) + original
    uses_barrier = ctx.bitmap_memory is not None and any(
        names[p] in wb.STORES or names[p] in _BULK_WRITES for p in replace)
    if uses_barrier:
        new_locals += barrier.types

    out = bytearray(wb.uleb(body.local_entries + len(new_locals)))
    out += body.locals_raw
    for valtype in new_locals:
        out += b"\x01" + bytes([valtype])
    if uses_barrier:  # no page is known to be marked when the function starts
        out += _i64_const(_NO_PAGE) + _set(barrier.marked_page)
    last = 0
    for position in sorted(before.keys() | replace.keys()):
        out += code[starts[last]:starts[position]]
        for charge in before.get(position, ()):
            out += charge
        if position in replace:
            out += replace[position]
            last = position + 1
        else:
            last = position
    out += code[starts[last]:]
    return bytes(out), instructions


class _BarrierLocals:
    """The write barrier's scratch locals, appended after a function's own locals."""

    def __init__(self, base: int, memory64: bool):
        pointer = wb.I64 if memory64 else wb.I32
        self.types = [pointer, pointer, pointer, wb.I64, pointer, wb.F32, wb.F64, wb.V128]
        if memory64:
            self.types += [wb.I32, wb.I32]
        self.address, self.length, self.source, self.effective = base, base + 1, base + 2, base + 4
        # i32 operands: a stored i32, memory.fill's value, memory.init's source and length
        self.value32 = base + 8 if memory64 else base + 2
        self.length32 = base + 9 if memory64 else base + 1
        self.value = {wb.I32: self.value32, wb.I64: base + 3, wb.F32: base + 5, wb.F64: base + 6,
                      wb.V128: base + 7}
        # The start address (i64) of the page this invocation last found or made marked: a
        # store inside it needs no bitmap read, since marks are cleared only between executions.
        self.marked_page = base + len(self.types)
        self.types.append(wb.I64)


# A marked_page no store can fall inside: ea - it is above 4 GiB for every wasm32 address, and
# for wasm64 only addresses far past the 6 GiB heap (whose stores trap) come near it.
_NO_PAGE = -(1 << 62)


def _get(index: int) -> bytes:
    return b"\x20" + wb.uleb(index)


def _set(index: int) -> bytes:
    return b"\x21" + wb.uleb(index)


def _tee(index: int) -> bytes:
    return b"\x22" + wb.uleb(index)


def _i64_const(value: int) -> bytes:
    return b"\x42" + sleb(value - (1 << 64) if value >= 1 << 63 else value)


def _bitmap_byte(ctx: _Context) -> bytes:
    """i32.load8_u from the bitmap memory: page (i32) -> its byte."""
    return b"\x2d\x40" + wb.uleb(ctx.bitmap_memory) + b"\x00"


def _store_barrier(ctx: _Context, locals_: _BarrierLocals, name: str, offset: int) -> bytes:
    """Code run in place of a store's operands: unless the store lies inside the page last found
    marked, read the bitmap bytes of the first and last page it writes and, if one is 0, tell the
    host; then put the operands back.

    In wasm32 the address arithmetic is i32: if address + offset wraps past 4 GiB the store
    itself traps, so marking a wrong page first only saves one page too many."""
    valtype, width = wb.STORES[name]
    value, effective, marked = locals_.value[valtype], locals_.effective, locals_.marked_page
    code = _set(value) + _tee(locals_.address)
    if ctx.memory64:  # i64.add; >> 12 (i64.shr_u) then i32.wrap_i64
        add, to_page, constant, to_i64 = b"\x7c", b"\x42\x0c\x88\xa7", _i64_const, b""
    else:  # i32.add; >> 12 (i32.shr_u); i64.extend_i32_u
        add, to_page, constant, to_i64 = b"\x6a", b"\x41\x0c\x76", _i32_const, b"\xad"
    if offset:
        code += constant(offset) + add
    # if (effective - marked) >u 4096 - width, i.e. the store is not inside the marked page:
    code += _tee(effective) + to_i64 + _get(marked) + b"\x7d" + _i64_const(BARRIER_PAGE_BYTES - width) + b"\x56"
    code += b"\x04\x40" + _get(effective) + to_page + _bitmap_byte(ctx)
    if width > 1:
        code += _get(effective) + constant(width - 1) + add + to_page + _bitmap_byte(ctx) + b"\x71"  # i32.and
    code += (b"\x45\x04\x40" + _get(effective) + to_i64 + _i64_const(width) + b"\x10" + ctx.first_write_range
             + b"\x0b")
    code += _get(effective) + to_i64 + _i64_const(-BARRIER_PAGE_BYTES) + b"\x83" + _set(marked) + b"\x0b"
    return code + _get(locals_.address) + _get(value)


def _i32_const(value: int) -> bytes:
    return b"\x41" + sleb(value - (1 << 32) if value >= 1 << 31 else value)


def _bulk_barrier(ctx: _Context, locals_: _BarrierLocals, name: str) -> bytes:
    """Code run in place of memory.fill/copy/init's operands: marks the destination range."""
    extend = b"" if ctx.memory64 else b"\xad"
    if name == "memory.init":  # (destination: I, source: i32, length: i32)
        length, second, length_to_i64 = locals_.length32, locals_.value32, b"\xad"
    else:  # fill (destination, value: i32, length) and copy (destination, source, length)
        length = locals_.length
        second = locals_.value32 if name == "memory.fill" else locals_.source
        length_to_i64 = extend
    return (_set(length) + _set(second) + _tee(locals_.address) + extend + _get(length) + length_to_i64
            + b"\x10" + ctx.barrier_range + _get(locals_.address) + _get(second) + _get(length))


# The IC's decrement function (its `decr_instruction_counter`): counter -= n, saturating at
# i64::MIN; calls out_of_instructions if the counter is then negative; returns n.
_DECREMENT_INSTRUCTIONS = 19


def _decrement_body(ctx: _Context) -> bytes:
    c = ctx.counter
    return (b"\x01\x01\x7e"  # one local: i64
            + b"\x23" + c + b"\x20\x00\x7d\x22\x01\x23" + c + b"\x55"  # new = counter - n; new > counter?
            + b"\x04\x7e" + _i64_const(1 << 63) + b"\x05\x20\x01\x0b"  # underflow: i64::MIN, else new
            + b"\x24" + c + b"\x23" + c + b"\x42\x00\x53\x04\x40\x10" + ctx.out_of_instructions + b"\x0b"
            + b"\x20\x00\x0b")


def _barrier_range_body(ctx: _Context) -> bytes:
    """barrier_range(address: i64, length: i64): calls first_write_range unless the range is
    empty, or spans at most two pages that are both marked already."""
    return (b"\x01\x02\x7e"  # locals 2, 3: first and last page
            + b"\x20\x01\x50\x04\x40\x0f\x0b"  # length == 0: nothing is written
            + b"\x20\x00\x42\x0c\x88\x21\x02"
            + b"\x20\x00\x20\x01\x7c\x42\x01\x7d\x42\x0c\x88\x21\x03"
            + b"\x20\x03\x20\x02\x7d\x42\x02\x54\x04\x40"  # last - first < 2:
            + b"\x20\x02\xa7" + _bitmap_byte(ctx) + b"\x20\x03\xa7" + _bitmap_byte(ctx) + b"\x71\x04\x40\x0f\x0b"
            + b"\x0b"
            + b"\x20\x00\x20\x01\x10" + ctx.first_write_range + b"\x0b")


# --- sections ------------------------------------------------------------------------------

# Where each section goes (the binary format's required order; custom sections go anywhere).
_ORDER = [wb.TYPE, wb.IMPORT, wb.FUNCTION, wb.TABLE, wb.MEMORY, wb.TAG, wb.GLOBAL, wb.EXPORT, wb.START,
          wb.ELEMENT, wb.DATACOUNT, wb.CODE, wb.DATA]


def _put(module: wb.Module, section_id: int, payload: bytes | None) -> None:
    if payload is None:
        return
    existing = module.section(section_id)
    if existing is not None:
        existing.payload = payload
        return
    rank = _ORDER.index(section_id)
    at = 0
    for i, section in enumerate(module.sections):
        if section.id != wb.CUSTOM and _ORDER.index(section.id) < rank:
            at = i + 1
    module.sections.insert(at, wb.Section(section_id, payload))


def _entries(payload: bytes | None) -> bytes:
    """A vector section's entries without their count."""
    if payload is None:
        return b""
    return payload[wb.read_uleb(payload, 0)[1]:]


def _imports(module: wb.Module, new_imports: list[tuple[str, int]]) -> bytes:
    section = module.section(wb.IMPORT)
    new = b"".join(wb.name_bytes(INJECTED_MODULE) + wb.name_bytes(name) + b"\x00" + wb.uleb(t)
                   for name, t in new_imports)
    return wb.uleb(len(module.imports) + len(new_imports)) + _entries(section and section.payload) + new


def _memories(module: wb.Module, max_pages: int, barrier: bool) -> bytes | None:
    memories = list(module.memories)
    heap_max = max_pages
    if memories and not module.imported_memories:
        heap = memories[0]
        if heap.minimum > max_pages:
            raise InstrumentationError(f"the module's memory starts at {heap.minimum} wasm pages, more than the "
                                       f"{max_pages} pages an IC canister may have")
        heap_max = min(heap.maximum, max_pages) if heap.maximum is not None else max_pages
        memories[0] = wb.MemoryType(heap.minimum, heap_max, heap.memory64, heap.shared)
    if barrier:
        bitmap_bytes = heap_max * (WASM_PAGE_BYTES // BARRIER_PAGE_BYTES)
        pages = max(1, -(-bitmap_bytes // WASM_PAGE_BYTES))
        memories.append(wb.MemoryType(pages, pages, False))
    if not memories:
        return None
    return wb.encode_vector([m.encode() for m in memories])


def _remap_expr(expr: bytes, ctx: _Context) -> bytes:
    """A constant expression with its ref.func indices moved past the added imports."""
    if b"\xd2" not in expr:
        return expr
    names, starts, immediates = wb.decode_instructions(expr)
    out = bytearray()
    for i, name in enumerate(names):
        if name == "ref.func":
            out += b"\xd2" + wb.uleb(ctx.func(immediates[i]))
        else:
            out += expr[starts[i]:starts[i + 1]]
    return bytes(out)


def _globals(module: wb.Module, ctx: _Context) -> bytes:
    entries = [bytes([g.valtype, int(g.mutable)]) + _remap_expr(init, ctx)
               for g, init in zip(module.globals, module.global_inits, strict=True)]
    entries.append(b"\x7e\x01\x42\x00\x0b")  # the instruction counter: (mut i64) (i64.const 0)
    return wb.encode_vector(entries)


def _exports(module: wb.Module, ctx: _Context, counter_index: int, bitmap_index: int | None) -> bytes:
    entries: list[tuple[str, int, int]] = []
    exported_globals = set()
    for export in module.exports:
        name, index = export.name, export.index
        if export.kind == wb.KIND_FUNC:
            index = ctx.func(index)
        elif export.kind == wb.KIND_MEMORY:
            name = HEAP_EXPORT
        elif export.kind == wb.KIND_TABLE:
            name = TABLE_EXPORT
        elif export.kind == wb.KIND_GLOBAL:
            exported_globals.add(index)
        entries.append((name, export.kind, index))
    kinds = {e.kind for e in module.exports}
    if wb.KIND_TABLE not in kinds and (module.tables or any(i.kind == wb.KIND_TABLE for i in module.imports)):
        entries.append((TABLE_EXPORT, wb.KIND_TABLE, 0))
    if wb.KIND_MEMORY not in kinds and module.all_memories:
        entries.append((HEAP_EXPORT, wb.KIND_MEMORY, 0))
    global_types = [wb.GlobalType(i.desc[0], bool(i.desc[1])) for i in module.imports if i.kind == wb.KIND_GLOBAL]
    for index, global_type in enumerate(global_types + module.globals):
        if global_type.mutable and index not in exported_globals:
            entries.append((f"{PERSISTENT_GLOBAL_PREFIX}{index}", wb.KIND_GLOBAL, index))
    entries.append((COUNTER_EXPORT, wb.KIND_GLOBAL, counter_index))
    if module.start is not None:
        entries.append((START_EXPORT, wb.KIND_FUNC, ctx.func(module.start)))
    if bitmap_index is not None:
        entries.append((WRITE_BITMAP_EXPORT, wb.KIND_MEMORY, bitmap_index))
    return wb.encode_vector([wb.name_bytes(name) + bytes([kind]) + wb.uleb(index) for name, kind, index in entries])


def _elements(payload: bytes, ctx: _Context) -> bytes:
    """The element section with function indices moved past the added imports."""
    count, pos = wb.read_uleb(payload, 0)
    out = bytearray(wb.uleb(count))
    for _ in range(count):
        flags, pos = wb.read_uleb(payload, pos)
        out += wb.uleb(flags)
        if flags & 2 and not flags & 1:  # an explicit table index
            table, pos = wb.read_uleb(payload, pos)
            out += wb.uleb(table)
        if not flags & 1:  # active: an offset expression
            expr, pos = wb.read_const_expr(payload, pos)
            out += expr
        if flags & 3:  # an element kind (0x00) or reference type byte
            out.append(payload[pos])
            pos += 1
        items, pos = wb.read_uleb(payload, pos)
        out += wb.uleb(items)
        for _ in range(items):
            if flags & 4:
                expr, pos = wb.read_const_expr(payload, pos)
                out += _remap_expr(expr, ctx)
            else:
                index, pos = wb.read_uleb(payload, pos)
                out += wb.uleb(ctx.func(index))
    return bytes(out)


def _names(payload: bytes, ctx: _Context) -> bytes:
    """The `name` section with function indices moved past the added imports (so wasmtime's
    backtraces keep naming functions); subsections without function indices are copied."""
    out = bytearray()
    pos = 0
    while pos < len(payload):
        kind = payload[pos]
        size, start = wb.read_uleb(payload, pos + 1)
        content = payload[start:start + size]
        pos = start + size
        if kind in (1, 2, 3):  # function names; local names and labels, by function
            count, at = wb.read_uleb(content, 0)
            body = bytearray(wb.uleb(count))
            for _ in range(count):
                index, entry = wb.read_uleb(content, at)
                if kind == 1:
                    _, at = wb.read_name(content, entry)
                else:  # an inner name map: (index, name)*
                    inner, at = wb.read_uleb(content, entry)
                    for _ in range(inner):
                        at = wb.read_name(content, wb.read_uleb(content, at)[1])[1]
                body += wb.uleb(ctx.func(index)) + content[entry:at]
            content = bytes(body)
        out += bytes([kind]) + wb.uleb(len(content)) + content
    return bytes(out)

"""The IC's checks of a canister module before it is installed, and what a module offers.

Follows `validate_wasm_binary` in dfinity/ic rs/embedders/src/wasm_utils/validation.rs (the
wasmparser-based version; limits from rs/config/src/embedders.rs), with error messages in the
IC's words (its `WasmValidationError` display strings), so the install path can return them as
the IC does ("Canister's Wasm module is not valid: " + message, IC0505). The allowed imports are
the interface specification's System API ("Overview of imports"), in its wasm32 and wasm64
(memory64) forms.

Usage:

    info = validate(wasm)   # ModuleInfo, or raises InvalidWasm(message)
    info.memory64, info.methods["update"], info.metadata["candid:service"], info.start_function

Not checked here: the length of function names in the `name` section (1 MiB on the IC), and the
module size, which install checks.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from replica.engines.wasm import instrument
from replica.engines.wasm import wasm_binary as wb

MAX_GLOBALS = 1_000
MAX_FUNCTIONS = 50_000
MAX_CUSTOM_SECTIONS = 16
MAX_CUSTOM_SECTIONS_BYTES = 1 << 20
MAX_EXPORTED_METHODS = 1_000
MAX_EXPORTED_METHOD_NAME_BYTES = 20_000
MAX_CODE_SECTION_BYTES = 10 << 20
MAX_FUNCTION_INSTRUCTIONS = 1_000_000
MAX_FUNCTION_COMPLEXITY = 1_000_000

# The IC's `wasm_function_complexity`: what an instruction adds to its function's compile-time
# complexity (default 1), and the table instructions it refuses outright.
_COMPLEXITY = {
    **dict.fromkeys("block loop if br br_if br_table call call_indirect memory.grow".split(), 50),
    "table.get": 14, "ref.func": 8, "ref.is_null": 6,
    **dict.fromkeys("""i32.trunc_f32_s i32.trunc_f32_u i32.trunc_f64_s i32.trunc_f64_u i64.extend_i32_s
        i64.extend_i32_u i64.trunc_f32_s i64.trunc_f32_u i64.trunc_f64_s i64.trunc_f64_u f32.convert_i32_s
        f32.convert_i32_u f32.convert_i64_s f32.convert_i64_u f32.demote_f64 f64.convert_i32_s f64.convert_i32_u
        f64.convert_i64_s f64.convert_i64_u""".split(), 5),
    **dict.fromkeys("f32.neg f32.abs f64.neg f64.abs memory.copy".split(), 4),
    **dict.fromkeys("""f32.copysign f64.copysign f64.eq i32.rem_u i32.rem_s i64.rem_u i64.rem_s i32.div_u i32.div_s
        i64.div_u i64.div_s memory.fill i32.load i64.load f32.load f64.load i32.load8_s i32.load8_u i32.load16_s
        i32.load16_u i64.load8_s i64.load8_u i64.load16_s i64.load16_u i64.load32_s i64.load32_u
        i32.trunc_sat_f32_s i32.trunc_sat_f32_u i32.trunc_sat_f64_s i32.trunc_sat_f64_u i64.trunc_sat_f32_s
        i64.trunc_sat_f32_u i64.trunc_sat_f64_s i64.trunc_sat_f64_u""".split(), 3),
    **dict.fromkeys("""global.get i32.popcnt i64.popcnt select memory.size i32.store i32.store16 i32.store8 i64.store
        i64.store32 i64.store16 i64.store8 f64.store f32.store i32.eqz i32.eq i32.ne i32.lt_s i32.lt_u i32.gt_s
        i32.gt_u i32.le_s i32.le_u i32.ge_s i32.ge_u i64.eqz i64.eq i64.ne i64.lt_s i64.lt_u i64.gt_s i64.gt_u
        i64.le_s i64.le_u i64.ge_s i64.ge_u f32.eq f32.ne f32.lt f32.gt f32.le f32.ge f64.ne f64.lt f64.gt f64.le
        f64.ge f32.ceil f64.ceil f32.floor f64.floor f32.sqrt f64.sqrt f32.trunc f64.trunc i32.reinterpret_f32
        i64.reinterpret_f64 f32.reinterpret_i32 f64.reinterpret_i64 i32.wrap_i64 i32.extend8_s i32.extend16_s
        i64.extend8_s i64.extend16_s i64.extend32_s f64.promote_f32""".split(), 2),
}
UNSUPPORTED_INSTRUCTIONS = frozenset(("table.grow", "table.set", "table.fill", "table.copy", "table.init"))

# Exports the IC itself adds when it instruments a module, which a canister may not export;
# the write barrier's bitmap memory is added here.
RESERVED_SYMBOLS = ("canister counter_instructions", "canister_start", "canister counter_dirty_pages",
                    "canister counter_accessed_pages", "canister stable_memory_size", "stable_memory",
                    "stable_bytemap_memory", instrument.WRITE_BITMAP_EXPORT)
SYSTEM_METHODS = ("canister_init", "canister_pre_upgrade", "canister_post_upgrade", "canister_inspect_message",
                  "canister_heartbeat", "canister_global_timer", "canister_on_low_wasm_memory")
METHOD_KINDS = {"canister_update ": "update", "canister_query ": "query",
                "canister_composite_query ": "composite_query"}

# The System API: name -> (params, results), with "I" for the pointer type (i32 or i64).
_SYSTEM_API = """
msg_arg_data_size : -> I
msg_arg_data_copy : I I I ->
msg_caller_size : -> I
msg_caller_copy : I I I ->
msg_caller_info_data_size : -> I
msg_caller_info_data_copy : I I I ->
msg_caller_info_signer_size : -> I
msg_caller_info_signer_copy : I I I ->
msg_reject_code : -> i32
msg_reject_msg_size : -> I
msg_reject_msg_copy : I I I ->
msg_deadline : -> i64
msg_reply_data_append : I I ->
msg_reply : ->
msg_reject : I I ->
msg_cycles_available128 : I ->
msg_cycles_refunded128 : I ->
msg_cycles_accept128 : i64 i64 I ->
cycles_burn128 : i64 i64 I ->
canister_self_size : -> I
canister_self_copy : I I I ->
canister_cycle_balance128 : I ->
canister_liquid_cycle_balance128 : I ->
canister_status : -> i32
canister_version : -> i64
subnet_self_size : -> I
subnet_self_copy : I I I ->
msg_method_name_size : -> I
msg_method_name_copy : I I I ->
accept_message : ->
call_new : I I I I I I I I ->
call_on_cleanup : I I ->
call_data_append : I I ->
call_with_best_effort_response : i32 ->
call_cycles_add128 : i64 i64 ->
call_perform : -> i32
stable64_size : -> i64
stable64_grow : i64 -> i64
stable64_write : i64 i64 i64 ->
stable64_read : i64 i64 i64 ->
root_key_size : -> I
root_key_copy : I I I ->
certified_data_set : I I ->
data_certificate_present : -> i32
data_certificate_size : -> I
data_certificate_copy : I I I ->
time : -> i64
global_timer_set : i64 -> i64
performance_counter : i32 -> i64
is_controller : I I -> i32
in_replicated_execution : -> i32
cost_call : i64 i64 I ->
cost_create_canister : I ->
cost_http_request : i64 i64 I ->
cost_sign_with_ecdsa : I I i32 I -> i32
cost_sign_with_schnorr : I I i32 I -> i32
cost_vetkd_derive_key : I I i32 I -> i32
env_var_count : -> I
env_var_name_size : I -> I
env_var_name_copy : I I I I ->
env_var_name_exists : I I -> i32
env_var_value_size : I I -> I
env_var_value_copy : I I I I I ->
debug_print : I I ->
trap : I I ->
mint_cycles : i64 -> i64
"""
# Only where I = i32 (the interface spec's deprecated 64-bit-cycles and 32-bit stable memory calls).
_SYSTEM_API_WASM32_ONLY = """
msg_cycles_available : -> i64
msg_cycles_refunded : -> i64
msg_cycles_accept : i64 -> i64
canister_cycle_balance : -> i64
call_cycles_add : i64 ->
stable_size : -> i32
stable_grow : i32 -> i32
stable_write : i32 i32 i32 ->
stable_read : i32 i32 i32 ->
"""
_TYPE_BYTES = {"i32": wb.I32, "i64": wb.I64}
_DEBUG_NAMES = {wb.I32: "I32", wb.I64: "I64", wb.F32: "F32", wb.F64: "F64", wb.V128: "V128",
                wb.FUNCREF: "Ref(funcref)", wb.EXTERNREF: "Ref(externref)"}


def system_api(memory64: bool) -> dict[str, wb.FuncType]:
    """The ic0 functions a module may import, with their signatures."""
    pointer = "i64" if memory64 else "i32"
    text = _SYSTEM_API if memory64 else _SYSTEM_API + _SYSTEM_API_WASM32_ONLY
    api = {}
    for line in filter(None, text.splitlines()):
        name, signature = line.split(" : ")
        params, results = signature.split("->")
        api[name] = wb.FuncType(*(bytes(_TYPE_BYTES[pointer if t == "I" else t] for t in part.split())
                                  for part in (params, results)))
    return api


class InvalidWasm(ValueError):
    """The IC would refuse this module; the message is the IC's."""


@dataclass(frozen=True)
class CustomSection:
    public: bool  # icp:public (anyone may read it) or icp:private (controllers only)
    content: bytes


@dataclass(frozen=True)
class ModuleInfo:
    memory64: bool
    methods: dict[str, tuple[str, ...]]  # "update", "query", "composite_query" -> method names
    system_methods: frozenset[str]  # canister_init, canister_heartbeat, ... that the module exports
    metadata: dict[str, CustomSection] = field(default_factory=dict)  # icp:public/private <name>
    start_function: int | None = None
    ic0_imports: tuple[str, ...] = ()

    def exports_method(self, kind: str, name: str) -> bool:
        return name in self.methods.get(kind, ())


def validate(wasm: bytes) -> ModuleInfo:
    """What the module offers, or InvalidWasm with the IC's message for why it would refuse it."""
    try:
        module = wb.parse_module(wasm)
    except wb.WasmFormatError as error:
        raise InvalidWasm(f"Failed to decode wasm module: {error}") from None
    code = module.section(wb.CODE)
    if code is not None and len(code.payload) > MAX_CODE_SECTION_BYTES:
        raise InvalidWasm(f"Wasm module code section size of {len(code.payload)} exceeds the maximum allowed size "
                          f"of {MAX_CODE_SECTION_BYTES}.")
    _can_compile(wasm)
    memories = module.all_memories
    memory64 = bool(memories) and memories[0].memory64
    imports = _check_imports(module, memory64)
    methods, system_methods = _check_exports(module)
    _check_data(module, memory64)
    if len(module.globals) > MAX_GLOBALS:
        raise InvalidWasm(f"Wasm module defined {len(module.globals)} globals which exceeds the maximum number "
                          f"allowed {MAX_GLOBALS}.")
    for global_type in module.globals:
        if global_type.valtype not in (wb.I32, wb.I64, wb.F32, wb.F64, wb.V128):
            raise InvalidWasm("Wasm module has an invalid global section. Unsupported global type: "
                              f"{_DEBUG_NAMES.get(global_type.valtype, global_type.valtype)}")
    if len(module.functions) > MAX_FUNCTIONS:
        raise InvalidWasm(f"Wasm module defined {len(module.functions)} functions which exceeds the maximum number "
                          f"allowed {MAX_FUNCTIONS}.")
    allowed = instrument.MAX_WASM64_MEMORY_BYTES // instrument.WASM_PAGE_BYTES
    if memory64 and memories[0].minimum > allowed:
        raise InvalidWasm(f"Wasm64 module declares an initial memory of {memories[0].minimum} wasm pages, which "
                          f"exceeds the maximum allowed {allowed}.")
    _check_code(module)
    return ModuleInfo(memory64, methods, system_methods, _metadata(module), module.start, imports)


def _can_compile(wasm: bytes) -> None:
    """wasmtime's own validation, with the features the IC enables (its
    `wasmtime_validation_config`: no multi-memory, relaxed SIMD, tail calls, threads or GC)."""
    import wasmtime

    config = wasmtime.Config()
    config.wasm_memory64 = True
    config.wasm_multi_memory = False
    config.wasm_relaxed_simd = False
    config.wasm_tail_call = False
    config.wasm_threads = False
    config.wasm_gc = False
    config.wasm_function_references = False
    config.wasm_reference_types = True
    config.wasm_bulk_memory = True
    config.wasm_simd = True
    try:
        wasmtime.Module.validate(wasmtime.Engine(config), wasm)
    except wasmtime.WasmtimeError as error:
        message = str(error).strip().splitlines()
        raise InvalidWasm("Wasmtime failed to validate wasm module wasmtime::Module::validate() failed with "
                          + " ".join(line.strip() for line in message)) from None


def _types(types: bytes) -> str:
    return "[" + ", ".join(_DEBUG_NAMES.get(t, str(t)) for t in types) + "]"


def _check_signature(expected: wb.FuncType, name: str, actual: wb.FuncType) -> None:
    if actual.params != expected.params:
        raise InvalidWasm(f"Wasm module has an invalid function signature. Expected input params "
                          f"{_types(expected.params)} for '{name}', got {_types(actual.params)}.")
    if actual.results != expected.results:
        raise InvalidWasm(f"Wasm module has an invalid function signature. Expected return type "
                          f"{_types(expected.results)} for '{name}', got {_types(actual.results)}.")


def _check_imports(module: wb.Module, memory64: bool) -> tuple[str, ...]:
    api = system_api(memory64)
    imported = []
    for entry in module.imports:
        if entry.kind == wb.KIND_FUNC:
            expected = api.get(entry.name)
            if expected is None:
                raise InvalidWasm(f"Wasm module has an invalid import section. Module imports function "
                                  f"'{entry.name}' from '{entry.module}' that is not exported by the runtime.")
            if entry.module != "ic0":
                raise InvalidWasm(f"Wasm module has an invalid import section. Module imports function "
                                  f"\"{entry.name}\" from \"{entry.module}\", expected to be imported from one of "
                                  f"[\"ic0\"] instead.")
            _check_signature(expected, entry.name, module.types[entry.type_index])
            imported.append(entry.name)
        elif entry.kind == wb.KIND_TABLE and entry.name == "table" and entry.module != "env":
            raise InvalidWasm("Wasm module has an invalid import section. Only tables imported from env.table are "
                              "allowed.")
        elif entry.kind == wb.KIND_MEMORY and entry.name == "memory" and entry.module != "env":
            raise InvalidWasm("Wasm module has an invalid import section. Only memory imported from env.memory is "
                              "allowed.")
        elif entry.kind == wb.KIND_GLOBAL:
            raise InvalidWasm("Wasm module has an invalid import section. Importing globals is not allowed.")
        elif entry.kind == wb.KIND_TAG:
            raise InvalidWasm("Wasm module has an invalid import section. Importing tags is not allowed.")
    return tuple(imported)


def _check_exports(module: wb.Module) -> tuple[dict[str, tuple[str, ...]], frozenset[str]]:
    methods: dict[str, list[str]] = {kind: [] for kind in METHOD_KINDS.values()}
    system_methods = set()
    seen: set[str] = set()
    name_bytes = 0
    no_arguments = wb.FuncType(b"", b"")
    for export in module.exports:
        if export.name in RESERVED_SYMBOLS:
            raise InvalidWasm(f"Wasm module has an invalid export section. Exporting reserved symbol {export.name} "
                              "not allowed.")
        if export.kind != wb.KIND_FUNC:
            continue
        prefix = next((p for p in METHOD_KINDS if export.name.startswith(p)), None)
        if prefix is not None:
            method = export.name[len(prefix):]
            if method in seen:
                raise InvalidWasm(f"Duplicate function '{method}' exported multiple times with different call types: "
                                  "update, query, or composite_query.")
            seen.add(method)
            methods[METHOD_KINDS[prefix]].append(method)
            name_bytes += len(method.encode())
        elif export.name.startswith("canister_"):
            if export.name not in SYSTEM_METHODS:
                raise InvalidWasm(f"Wasm module has an invalid export section. Exporting reserved function "
                                  f"'{export.name}' with \"canister_\" prefix")
            system_methods.add(export.name)
        else:
            continue
        _check_signature(no_arguments, export.name, module.function_type(export.index))
    if len(seen) > MAX_EXPORTED_METHODS:
        raise InvalidWasm("The number of exported functions called `canister_update <name>`, `canister_query "
                          f"<name>`, or `canister_composite_query <name>` is {len(seen)} which exceeds "
                          f"{MAX_EXPORTED_METHODS}.")
    if name_bytes > MAX_EXPORTED_METHOD_NAME_BYTES:
        raise InvalidWasm("The sum of `<name>` lengths in exported functions called `canister_update <name>`, "
                          f"`canister_query <name>`, or `canister_composite_query <name>` is {name_bytes} which "
                          f"exceeds the allowed limit of {MAX_EXPORTED_METHOD_NAME_BYTES}.")
    return {kind: tuple(names) for kind, names in methods.items()}, frozenset(system_methods)


def _check_code(module: wb.Module) -> None:
    """Each function's size and compile-time complexity, and the table instructions the IC refuses.
    Functions are numbered in the function index space (imports first), as the IC reports them."""
    first = len(module.imported_functions)
    for number, raw in enumerate(module.bodies):
        index = first + number
        names = wb.decode_body(raw).names
        refused = UNSUPPORTED_INSTRUCTIONS.intersection(names)
        if refused:
            instruction = next(name for name in names if name in refused)
            raise InvalidWasm(f"Wasm module contains a function at index {index} with unsupported instruction "
                              f"{instruction}.")
        complexity = sum(_COMPLEXITY.get(name, 1) for name in names)
        if complexity > MAX_FUNCTION_COMPLEXITY:
            raise InvalidWasm(f"Wasm module contains a function at index {index} with complexity {complexity} which "
                              f"exceeds the maximum complexity allowed {MAX_FUNCTION_COMPLEXITY}.")
        if len(names) > MAX_FUNCTION_INSTRUCTIONS:
            raise InvalidWasm(f"Wasm module contains a function at index {index} of size {len(names)} that exceeds "
                              f"the maximum allowed size of {MAX_FUNCTION_INSTRUCTIONS}.")


def _check_data(module: wb.Module, memory64: bool) -> None:
    """Active data segments must have a single constant offset of the memory's address type."""
    section = module.section(wb.DATA)
    if section is None:
        return
    buf = section.payload
    count, pos = wb.read_uleb(buf, 0)
    expected = "i64.const" if memory64 else "i32.const"
    for _ in range(count):
        flags, pos = wb.read_uleb(buf, pos)
        if flags == 2:
            _, pos = wb.read_uleb(buf, pos)
        if flags in (0, 2):
            expr, pos = wb.read_const_expr(buf, pos)
            names = wb.decode_instructions(expr)[0]
            if names[:-1] != [expected]:
                raise InvalidWasm(f"Wasm module has an invalid data section. Invalid offset expression in data "
                                  f"segment for {64 if memory64 else 32}bit memory: {' '.join(names[:-1])}")
        size, pos = wb.read_uleb(buf, pos)
        pos += size


def _metadata(module: wb.Module) -> dict[str, CustomSection]:
    sections: dict[str, CustomSection] = {}
    total = 0
    for name, content in module.customs:
        if not name.startswith("icp:"):
            continue
        if name.startswith("icp:public "):
            short, public = name[len("icp:public "):], True
        elif name.startswith("icp:private "):
            short, public = name[len("icp:private "):], False
        elif name in ("icp:public", "icp:private"):
            raise InvalidWasm("Wasm module has an invalid custom section. 'icp:' section names must have a space "
                              "after the public/private scope")
        else:
            raise InvalidWasm(f"Wasm module has an invalid custom section. Invalid custom section: Custom section "
                              f"'{name}' has no public/private scope defined.")
        if short in sections:
            raise InvalidWasm(f"Wasm module has an invalid custom section. Invalid custom section: name {short} "
                              "already exists")
        total += len(content) + len(short.encode())
        if total > MAX_CUSTOM_SECTIONS_BYTES:
            raise InvalidWasm("Wasm module has an invalid custom section. Invalid custom sections: total size of the "
                              "custom sections exceeds the maximum allowed: size "
                              f"{total} bytes, allowed {MAX_CUSTOM_SECTIONS_BYTES} bytes")
        sections[short] = CustomSection(public, bytes(content))
        if len(sections) > MAX_CUSTOM_SECTIONS:
            raise InvalidWasm(f"Wasm module defined {len(sections)} custom sections which exceeds the maximum "
                              f"number allowed {MAX_CUSTOM_SECTIONS}.")
    return sections

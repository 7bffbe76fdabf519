"""The wasm binary format: reading a module into its sections, decoding function bodies into
instructions, and writing sections back.

Only what instrumentation and validation look at is decoded (types, imports, functions,
memories, globals, exports, start, elements, code, data, custom sections); a section that is not
changed is written back byte for byte. Instructions are decoded to their mnemonic (the names of
the WebAssembly text format) and byte range, so the unchanged ones are copied as they were.

Covered: the MVP, sign extension, saturating truncation, bulk memory and table operations (the
0xFC prefix), reference types, multi-value block types, tail calls, SIMD128 and relaxed SIMD
(the 0xFD prefix), multi-memory and memory64 memory arguments (bit 6 of the alignment flags
announces a memory index; offsets are 64-bit LEB128), and 64-bit memory limits. Atomics (0xFE),
exceptions and GC are refused with a clear error: the IC compiles modules with threads,
exceptions and GC disabled, so it refuses them too.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from replica.request_id import encode_uleb128 as uleb

MAGIC = b"\0asm\x01\0\0\0"

# Section ids (binary format, "Modules" chapter).
CUSTOM, TYPE, IMPORT, FUNCTION, TABLE, MEMORY, GLOBAL, EXPORT, START, ELEMENT, CODE, DATA, DATACOUNT = range(13)
TAG = 13

# External kinds, in imports and exports.
KIND_FUNC, KIND_TABLE, KIND_MEMORY, KIND_GLOBAL, KIND_TAG = range(5)

I32, I64, F32, F64, V128 = 0x7F, 0x7E, 0x7D, 0x7C, 0x7B
FUNCREF, EXTERNREF = 0x70, 0x6F
VALTYPE_NAMES = {I32: "i32", I64: "i64", F32: "f32", F64: "f64", V128: "v128", FUNCREF: "funcref",
                 EXTERNREF: "externref"}


class WasmFormatError(ValueError):
    """The bytes are not a wasm module this reader understands; the message says where."""


# --- LEB128 --------------------------------------------------------------------------------

def _read_leb(buf: bytes, pos: int) -> tuple[int, int, int]:
    """The 7-bit groups of the LEB128 number at `pos`: (value, bits read, position after)."""
    result = shift = 0
    while True:
        try:
            byte = buf[pos]
        except IndexError:
            raise WasmFormatError(f"unexpected end of module inside a LEB128 number at byte {pos}") from None
        pos += 1
        result |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            return result, shift, pos
        if shift > 70:
            raise WasmFormatError(f"LEB128 number too long at byte {pos}")


def read_uleb(buf: bytes, pos: int) -> tuple[int, int]:
    if pos < len(buf) and buf[pos] < 0x80:  # the common one-byte case, without a call
        return buf[pos], pos + 1
    result, _, pos = _read_leb(buf, pos)
    return result, pos


def read_sleb(buf: bytes, pos: int) -> tuple[int, int]:
    result, shift, pos = _read_leb(buf, pos)
    return (result - (1 << shift) if buf[pos - 1] & 0x40 else result), pos


def name_bytes(text: str) -> bytes:
    raw = text.encode()
    return uleb(len(raw)) + raw


def read_name(buf: bytes, pos: int) -> tuple[str, int]:
    size, pos = read_uleb(buf, pos)
    raw = buf[pos:pos + size]
    if len(raw) != size:
        raise WasmFormatError(f"name of {size} bytes runs past the end at byte {pos}")
    try:
        return bytes(raw).decode(), pos + size
    except UnicodeDecodeError:
        raise WasmFormatError(f"name at byte {pos} is not UTF-8") from None


# --- instructions --------------------------------------------------------------------------
# Immediate kinds: how many bytes follow an opcode.
NONE, BLOCKTYPE, INDEX, TWO_INDEXES, BR_TABLE, SELECT_T, MEMARG, S32, S64, BYTES4, BYTES8, HEAPTYPE, \
    BYTES16, LANE, MEMARG_LANE = range(15)

_PLAIN = """
0x00 unreachable|0x01 nop|0x05 else|0x0B end|0x0F return|0x1A drop|0x1B select|0xD1 ref.is_null
0x45 i32.eqz|0x46 i32.eq|0x47 i32.ne|0x48 i32.lt_s|0x49 i32.lt_u|0x4A i32.gt_s|0x4B i32.gt_u|0x4C i32.le_s
0x4D i32.le_u|0x4E i32.ge_s|0x4F i32.ge_u|0x50 i64.eqz|0x51 i64.eq|0x52 i64.ne|0x53 i64.lt_s|0x54 i64.lt_u
0x55 i64.gt_s|0x56 i64.gt_u|0x57 i64.le_s|0x58 i64.le_u|0x59 i64.ge_s|0x5A i64.ge_u|0x5B f32.eq|0x5C f32.ne
0x5D f32.lt|0x5E f32.gt|0x5F f32.le|0x60 f32.ge|0x61 f64.eq|0x62 f64.ne|0x63 f64.lt|0x64 f64.gt|0x65 f64.le
0x66 f64.ge|0x67 i32.clz|0x68 i32.ctz|0x69 i32.popcnt|0x6A i32.add|0x6B i32.sub|0x6C i32.mul|0x6D i32.div_s
0x6E i32.div_u|0x6F i32.rem_s|0x70 i32.rem_u|0x71 i32.and|0x72 i32.or|0x73 i32.xor|0x74 i32.shl|0x75 i32.shr_s
0x76 i32.shr_u|0x77 i32.rotl|0x78 i32.rotr|0x79 i64.clz|0x7A i64.ctz|0x7B i64.popcnt|0x7C i64.add|0x7D i64.sub
0x7E i64.mul|0x7F i64.div_s|0x80 i64.div_u|0x81 i64.rem_s|0x82 i64.rem_u|0x83 i64.and|0x84 i64.or|0x85 i64.xor
0x86 i64.shl|0x87 i64.shr_s|0x88 i64.shr_u|0x89 i64.rotl|0x8A i64.rotr|0x8B f32.abs|0x8C f32.neg|0x8D f32.ceil
0x8E f32.floor|0x8F f32.trunc|0x90 f32.nearest|0x91 f32.sqrt|0x92 f32.add|0x93 f32.sub|0x94 f32.mul|0x95 f32.div
0x96 f32.min|0x97 f32.max|0x98 f32.copysign|0x99 f64.abs|0x9A f64.neg|0x9B f64.ceil|0x9C f64.floor|0x9D f64.trunc
0x9E f64.nearest|0x9F f64.sqrt|0xA0 f64.add|0xA1 f64.sub|0xA2 f64.mul|0xA3 f64.div|0xA4 f64.min|0xA5 f64.max
0xA6 f64.copysign|0xA7 i32.wrap_i64|0xA8 i32.trunc_f32_s|0xA9 i32.trunc_f32_u|0xAA i32.trunc_f64_s
0xAB i32.trunc_f64_u|0xAC i64.extend_i32_s|0xAD i64.extend_i32_u|0xAE i64.trunc_f32_s|0xAF i64.trunc_f32_u
0xB0 i64.trunc_f64_s|0xB1 i64.trunc_f64_u|0xB2 f32.convert_i32_s|0xB3 f32.convert_i32_u|0xB4 f32.convert_i64_s
0xB5 f32.convert_i64_u|0xB6 f32.demote_f64|0xB7 f64.convert_i32_s|0xB8 f64.convert_i32_u|0xB9 f64.convert_i64_s
0xBA f64.convert_i64_u|0xBB f64.promote_f32|0xBC i32.reinterpret_f32|0xBD i64.reinterpret_f64
0xBE f32.reinterpret_i32|0xBF f64.reinterpret_i64|0xC0 i32.extend8_s|0xC1 i32.extend16_s|0xC2 i64.extend8_s
0xC3 i64.extend16_s|0xC4 i64.extend32_s
"""

_WITH_IMMEDIATES = {
    0x02: ("block", BLOCKTYPE), 0x03: ("loop", BLOCKTYPE), 0x04: ("if", BLOCKTYPE),
    0x0C: ("br", INDEX), 0x0D: ("br_if", INDEX), 0x0E: ("br_table", BR_TABLE),
    0x10: ("call", INDEX), 0x11: ("call_indirect", TWO_INDEXES),
    0x12: ("return_call", INDEX), 0x13: ("return_call_indirect", TWO_INDEXES),
    0x1C: ("select", SELECT_T),
    0x20: ("local.get", INDEX), 0x21: ("local.set", INDEX), 0x22: ("local.tee", INDEX),
    0x23: ("global.get", INDEX), 0x24: ("global.set", INDEX),
    0x25: ("table.get", INDEX), 0x26: ("table.set", INDEX),
    0x3F: ("memory.size", INDEX), 0x40: ("memory.grow", INDEX),
    0x41: ("i32.const", S32), 0x42: ("i64.const", S64), 0x43: ("f32.const", BYTES4), 0x44: ("f64.const", BYTES8),
    0xD0: ("ref.null", HEAPTYPE), 0xD2: ("ref.func", INDEX),
}

# Loads and stores: opcode -> (name, bytes accessed).
_MEMORY_OPS = {
    0x28: ("i32.load", 4), 0x29: ("i64.load", 8), 0x2A: ("f32.load", 4), 0x2B: ("f64.load", 8),
    0x2C: ("i32.load8_s", 1), 0x2D: ("i32.load8_u", 1), 0x2E: ("i32.load16_s", 2), 0x2F: ("i32.load16_u", 2),
    0x30: ("i64.load8_s", 1), 0x31: ("i64.load8_u", 1), 0x32: ("i64.load16_s", 2), 0x33: ("i64.load16_u", 2),
    0x34: ("i64.load32_s", 4), 0x35: ("i64.load32_u", 4),
    0x36: ("i32.store", 4), 0x37: ("i64.store", 8), 0x38: ("f32.store", 4), 0x39: ("f64.store", 8),
    0x3A: ("i32.store8", 1), 0x3B: ("i32.store16", 2), 0x3C: ("i64.store8", 1), 0x3D: ("i64.store16", 2),
    0x3E: ("i64.store32", 4),
}

# Stores: name -> (value type, bytes written). SIMD lane stores write one lane.
STORES = {
    "i32.store": (I32, 4), "i64.store": (I64, 8), "f32.store": (F32, 4), "f64.store": (F64, 8),
    "i32.store8": (I32, 1), "i32.store16": (I32, 2), "i64.store8": (I64, 1), "i64.store16": (I64, 2),
    "i64.store32": (I64, 4), "v128.store": (V128, 16), "v128.store8_lane": (V128, 1),
    "v128.store16_lane": (V128, 2), "v128.store32_lane": (V128, 4), "v128.store64_lane": (V128, 8),
}

_FC = {
    0: ("i32.trunc_sat_f32_s", NONE), 1: ("i32.trunc_sat_f32_u", NONE), 2: ("i32.trunc_sat_f64_s", NONE),
    3: ("i32.trunc_sat_f64_u", NONE), 4: ("i64.trunc_sat_f32_s", NONE), 5: ("i64.trunc_sat_f32_u", NONE),
    6: ("i64.trunc_sat_f64_s", NONE), 7: ("i64.trunc_sat_f64_u", NONE),
    8: ("memory.init", TWO_INDEXES), 9: ("data.drop", INDEX), 10: ("memory.copy", TWO_INDEXES),
    11: ("memory.fill", INDEX), 12: ("table.init", TWO_INDEXES), 13: ("elem.drop", INDEX),
    14: ("table.copy", TWO_INDEXES), 15: ("table.grow", INDEX), 16: ("table.size", INDEX),
    17: ("table.fill", INDEX),
}

# SIMD128 (0xFD prefix) by sub-opcode; numbers missing here are unassigned in the proposal.
_FD_PLAIN = """
14 i8x16.swizzle|15 i8x16.splat|16 i16x8.splat|17 i32x4.splat|18 i64x2.splat|19 f32x4.splat|20 f64x2.splat
35 i8x16.eq|36 i8x16.ne|37 i8x16.lt_s|38 i8x16.lt_u|39 i8x16.gt_s|40 i8x16.gt_u|41 i8x16.le_s|42 i8x16.le_u
43 i8x16.ge_s|44 i8x16.ge_u|45 i16x8.eq|46 i16x8.ne|47 i16x8.lt_s|48 i16x8.lt_u|49 i16x8.gt_s|50 i16x8.gt_u
51 i16x8.le_s|52 i16x8.le_u|53 i16x8.ge_s|54 i16x8.ge_u|55 i32x4.eq|56 i32x4.ne|57 i32x4.lt_s|58 i32x4.lt_u
59 i32x4.gt_s|60 i32x4.gt_u|61 i32x4.le_s|62 i32x4.le_u|63 i32x4.ge_s|64 i32x4.ge_u|65 f32x4.eq|66 f32x4.ne
67 f32x4.lt|68 f32x4.gt|69 f32x4.le|70 f32x4.ge|71 f64x2.eq|72 f64x2.ne|73 f64x2.lt|74 f64x2.gt|75 f64x2.le
76 f64x2.ge|77 v128.not|78 v128.and|79 v128.andnot|80 v128.or|81 v128.xor|82 v128.bitselect|83 v128.any_true
94 f32x4.demote_f64x2_zero|95 f64x2.promote_low_f32x4|96 i8x16.abs|97 i8x16.neg|98 i8x16.popcnt
99 i8x16.all_true|100 i8x16.bitmask|101 i8x16.narrow_i16x8_s|102 i8x16.narrow_i16x8_u|103 f32x4.ceil
104 f32x4.floor|105 f32x4.trunc|106 f32x4.nearest|107 i8x16.shl|108 i8x16.shr_s|109 i8x16.shr_u|110 i8x16.add
111 i8x16.add_sat_s|112 i8x16.add_sat_u|113 i8x16.sub|114 i8x16.sub_sat_s|115 i8x16.sub_sat_u|116 f64x2.ceil
117 f64x2.floor|118 i8x16.min_s|119 i8x16.min_u|120 i8x16.max_s|121 i8x16.max_u|122 f64x2.trunc|123 i8x16.avgr_u
124 i16x8.extadd_pairwise_i8x16_s|125 i16x8.extadd_pairwise_i8x16_u|126 i32x4.extadd_pairwise_i16x8_s
127 i32x4.extadd_pairwise_i16x8_u|128 i16x8.abs|129 i16x8.neg|130 i16x8.q15mulr_sat_s|131 i16x8.all_true
132 i16x8.bitmask|133 i16x8.narrow_i32x4_s|134 i16x8.narrow_i32x4_u|135 i16x8.extend_low_i8x16_s
136 i16x8.extend_high_i8x16_s|137 i16x8.extend_low_i8x16_u|138 i16x8.extend_high_i8x16_u|139 i16x8.shl
140 i16x8.shr_s|141 i16x8.shr_u|142 i16x8.add|143 i16x8.add_sat_s|144 i16x8.add_sat_u|145 i16x8.sub
146 i16x8.sub_sat_s|147 i16x8.sub_sat_u|148 f64x2.nearest|149 i16x8.mul|150 i16x8.min_s|151 i16x8.min_u
152 i16x8.max_s|153 i16x8.max_u|155 i16x8.avgr_u|156 i16x8.extmul_low_i8x16_s|157 i16x8.extmul_high_i8x16_s
158 i16x8.extmul_low_i8x16_u|159 i16x8.extmul_high_i8x16_u|160 i32x4.abs|161 i32x4.neg|163 i32x4.all_true
164 i32x4.bitmask|167 i32x4.extend_low_i16x8_s|168 i32x4.extend_high_i16x8_s|169 i32x4.extend_low_i16x8_u
170 i32x4.extend_high_i16x8_u|171 i32x4.shl|172 i32x4.shr_s|173 i32x4.shr_u|174 i32x4.add|177 i32x4.sub
181 i32x4.mul|182 i32x4.min_s|183 i32x4.min_u|184 i32x4.max_s|185 i32x4.max_u|186 i32x4.dot_i16x8_s
188 i32x4.extmul_low_i16x8_s|189 i32x4.extmul_high_i16x8_s|190 i32x4.extmul_low_i16x8_u
191 i32x4.extmul_high_i16x8_u|192 i64x2.abs|193 i64x2.neg|195 i64x2.all_true|196 i64x2.bitmask
199 i64x2.extend_low_i32x4_s|200 i64x2.extend_high_i32x4_s|201 i64x2.extend_low_i32x4_u
202 i64x2.extend_high_i32x4_u|203 i64x2.shl|204 i64x2.shr_s|205 i64x2.shr_u|206 i64x2.add|209 i64x2.sub
213 i64x2.mul|214 i64x2.eq|215 i64x2.ne|216 i64x2.lt_s|217 i64x2.gt_s|218 i64x2.le_s|219 i64x2.ge_s
220 i64x2.extmul_low_i32x4_s|221 i64x2.extmul_high_i32x4_s|222 i64x2.extmul_low_i32x4_u
223 i64x2.extmul_high_i32x4_u|224 f32x4.abs|225 f32x4.neg|227 f32x4.sqrt|228 f32x4.add|229 f32x4.sub
230 f32x4.mul|231 f32x4.div|232 f32x4.min|233 f32x4.max|234 f32x4.pmin|235 f32x4.pmax|236 f64x2.abs
237 f64x2.neg|239 f64x2.sqrt|240 f64x2.add|241 f64x2.sub|242 f64x2.mul|243 f64x2.div|244 f64x2.min
245 f64x2.max|246 f64x2.pmin|247 f64x2.pmax|248 i32x4.trunc_sat_f32x4_s|249 i32x4.trunc_sat_f32x4_u
250 f32x4.convert_i32x4_s|251 f32x4.convert_i32x4_u|252 i32x4.trunc_sat_f64x2_s_zero
253 i32x4.trunc_sat_f64x2_u_zero|254 f64x2.convert_low_i32x4_s|255 f64x2.convert_low_i32x4_u
256 i8x16.relaxed_swizzle|257 i32x4.relaxed_trunc_f32x4_s|258 i32x4.relaxed_trunc_f32x4_u
259 i32x4.relaxed_trunc_f64x2_s_zero|260 i32x4.relaxed_trunc_f64x2_u_zero|261 f32x4.relaxed_madd
262 f32x4.relaxed_nmadd|263 f64x2.relaxed_madd|264 f64x2.relaxed_nmadd|265 i8x16.relaxed_laneselect
266 i16x8.relaxed_laneselect|267 i32x4.relaxed_laneselect|268 i64x2.relaxed_laneselect|269 f32x4.relaxed_min
270 f32x4.relaxed_max|271 f64x2.relaxed_min|272 f64x2.relaxed_max|273 i16x8.relaxed_q15mulr_s
274 i16x8.relaxed_dot_i8x16_i7x16_s|275 i32x4.relaxed_dot_i8x16_i7x16_add_s
"""

_FD_WITH_IMMEDIATES = {
    0: ("v128.load", MEMARG), 1: ("v128.load8x8_s", MEMARG), 2: ("v128.load8x8_u", MEMARG),
    3: ("v128.load16x4_s", MEMARG), 4: ("v128.load16x4_u", MEMARG), 5: ("v128.load32x2_s", MEMARG),
    6: ("v128.load32x2_u", MEMARG), 7: ("v128.load8_splat", MEMARG), 8: ("v128.load16_splat", MEMARG),
    9: ("v128.load32_splat", MEMARG), 10: ("v128.load64_splat", MEMARG), 11: ("v128.store", MEMARG),
    12: ("v128.const", BYTES16), 13: ("i8x16.shuffle", BYTES16),
    21: ("i8x16.extract_lane_s", LANE), 22: ("i8x16.extract_lane_u", LANE), 23: ("i8x16.replace_lane", LANE),
    24: ("i16x8.extract_lane_s", LANE), 25: ("i16x8.extract_lane_u", LANE), 26: ("i16x8.replace_lane", LANE),
    27: ("i32x4.extract_lane", LANE), 28: ("i32x4.replace_lane", LANE), 29: ("i64x2.extract_lane", LANE),
    30: ("i64x2.replace_lane", LANE), 31: ("f32x4.extract_lane", LANE), 32: ("f32x4.replace_lane", LANE),
    33: ("f64x2.extract_lane", LANE), 34: ("f64x2.replace_lane", LANE),
    84: ("v128.load8_lane", MEMARG_LANE), 85: ("v128.load16_lane", MEMARG_LANE),
    86: ("v128.load32_lane", MEMARG_LANE), 87: ("v128.load64_lane", MEMARG_LANE),
    88: ("v128.store8_lane", MEMARG_LANE), 89: ("v128.store16_lane", MEMARG_LANE),
    90: ("v128.store32_lane", MEMARG_LANE), 91: ("v128.store64_lane", MEMARG_LANE),
    92: ("v128.load32_zero", MEMARG), 93: ("v128.load64_zero", MEMARG),
}


def _table(text: str, base: int) -> dict[int, tuple[str, int]]:
    out = {}
    for entry in text.replace("\n", "|").split("|"):
        if entry.strip():
            number, name = entry.split()
            out[int(number, base)] = (name, NONE)
    return out


OPCODES: dict[int, tuple[str, int]] = {**_table(_PLAIN, 16), **_WITH_IMMEDIATES,
                                       **{op: (name, MEMARG) for op, (name, _) in _MEMORY_OPS.items()}}
FC_OPCODES: dict[int, tuple[str, int]] = _FC
FD_OPCODES: dict[int, tuple[str, int]] = {**_table(_FD_PLAIN, 10), **_FD_WITH_IMMEDIATES}

# Prefixes and opcodes the IC's compiler configuration refuses (threads, exceptions, GC, typed
# function references); named so the error says what was found.
_REFUSED = {0xFE: "atomic (threads) instructions", 0x06: "exception handling (try)",
            0x08: "exception handling (throw)", 0x1F: "exception handling (try_table)",
            0x14: "typed function references (call_ref)", 0x15: "typed function references (return_call_ref)",
            0xFB: "GC instructions", 0xD3: "typed function references (ref.as_non_null)",
            0xD4: "typed function references (br_on_null)", 0xD5: "typed function references (ref.eq)",
            0xD6: "typed function references (br_on_non_null)"}


@dataclass(frozen=True)
class MemArg:
    memory: int
    offset: int


@dataclass
class Body:
    """One decoded function body: `names[i]` is instruction i's mnemonic and it occupies
    code[starts[i]:starts[i + 1]]. `immediates` holds, by instruction position, the operands
    instrumentation needs: a function index (call, return_call, ref.func), a MemArg (loads and
    stores), or a memory index (memory.grow, memory.fill; memory.copy/init give the destination)."""

    code: bytes  # the instructions, after the locals
    locals_raw: bytes  # the locals' entries, without their count
    local_entries: int
    local_count: int
    names: list[str]
    starts: list[int]
    immediates: dict[int, object]


def decode_body(body: bytes) -> Body:
    """Decodes one code-section entry (without its size prefix)."""
    entries, pos = read_uleb(body, 0)
    locals_start = pos
    local_count = 0
    for _ in range(entries):
        count, pos = read_uleb(body, pos)
        local_count += count
        pos += 1  # value type (reference types are one byte in the IC's feature set)
    locals_raw = body[locals_start:pos]
    code = body[pos:]
    names, starts, immediates = decode_instructions(code)
    return Body(code, locals_raw, entries, local_count, names, starts, immediates)


def decode_instructions(code: bytes, pos: int = 0, until_end: bool = False
                        ) -> tuple[list[str], list[int], dict[int, object]]:
    """Decodes instructions from code[pos:] to the end (or, with `until_end`, through the first
    `end`: a constant expression, which has no blocks); returns mnemonics, start offsets (with
    the end offset appended) and the immediates instrumentation needs (see Body)."""
    try:
        return _decode_instructions(code, pos, until_end)
    except IndexError:
        raise WasmFormatError("code ends in the middle of an instruction") from None


def _decode_instructions(code: bytes, pos: int, until_end: bool) -> tuple[list[str], list[int], dict[int, object]]:
    names: list[str] = []
    starts: list[int] = []
    immediates: dict[int, object] = {}
    end = len(code)
    opcodes, fc, fd = OPCODES, FC_OPCODES, FD_OPCODES
    while pos < end:
        starts.append(pos)
        op = code[pos]
        pos += 1
        if op == 0xFC or op == 0xFD:
            sub, pos = read_uleb(code, pos)
            entry = (fc if op == 0xFC else fd).get(sub)
            if entry is None:
                raise WasmFormatError(f"unknown instruction 0x{op:02X} {sub} at code offset {starts[-1]}")
        else:
            entry = opcodes.get(op)
            if entry is None:
                what = _REFUSED.get(op, "an unknown opcode")
                raise WasmFormatError(f"instruction 0x{op:02X} at code offset {starts[-1]}: {what}, "
                                      "which IC canisters cannot use")
        name, kind = entry
        names.append(name)
        if kind == NONE:
            pass
        elif kind == INDEX:
            index, pos = read_uleb(code, pos)
            if name in ("call", "return_call", "ref.func", "memory.grow", "memory.fill"):
                immediates[len(names) - 1] = index
        elif kind == MEMARG or kind == MEMARG_LANE:
            align, pos = read_uleb(code, pos)
            memory = 0
            if align & 0x40:
                memory, pos = read_uleb(code, pos)
            offset, pos = read_uleb(code, pos)
            immediates[len(names) - 1] = MemArg(memory, offset)
            if kind == MEMARG_LANE:
                pos += 1
        elif kind == S32 or kind == S64:
            while code[pos] & 0x80:
                pos += 1
            pos += 1
        elif kind == BLOCKTYPE:
            if code[pos] in (0x40, I32, I64, F32, F64, V128, FUNCREF, EXTERNREF):
                pos += 1
            else:
                _, pos = read_sleb(code, pos)
        elif kind == TWO_INDEXES:
            first, pos = read_uleb(code, pos)
            second, pos = read_uleb(code, pos)
            if name == "memory.copy":
                immediates[len(names) - 1] = first  # destination memory
            elif name == "memory.init":
                immediates[len(names) - 1] = second
        elif kind == BR_TABLE:
            count, pos = read_uleb(code, pos)
            for _ in range(count + 1):
                _, pos = read_uleb(code, pos)
        elif kind == BYTES4:
            pos += 4
        elif kind == BYTES8:
            pos += 8
        elif kind == BYTES16:
            pos += 16
        elif kind == LANE:
            pos += 1
        elif kind == SELECT_T:
            count, pos = read_uleb(code, pos)
            pos += count
        elif kind == HEAPTYPE:
            _, pos = read_sleb(code, pos)
        if until_end and op == 0x0B:
            break
    else:
        if until_end:
            raise WasmFormatError(f"constant expression at byte {starts[0] if starts else pos} has no end")
    if pos > end:
        raise WasmFormatError(f"instruction at code offset {starts[-1]} runs past the end of its body")
    starts.append(pos)
    return names, starts, immediates


# --- modules -------------------------------------------------------------------------------

@dataclass
class Section:
    id: int
    payload: bytes
    name: str = ""  # custom sections only
    # As read: everything before the payload, and the payload. An unchanged section is written
    # back from these, keeping its size encoding (linkers pad LEB128 sizes to 5 bytes).
    original_header: bytes = b""
    original_payload: bytes | None = None

    def encode(self) -> bytes:
        if self.payload is self.original_payload:
            return self.original_header + self.payload
        body = name_bytes(self.name) + self.payload if self.id == CUSTOM else self.payload
        return bytes([self.id]) + uleb(len(body)) + body


@dataclass(frozen=True)
class Import:
    module: str
    name: str
    kind: int
    type_index: int = 0  # functions
    desc: bytes = b""  # the raw descriptor (tables, memories, globals)


@dataclass(frozen=True)
class Export:
    name: str
    kind: int
    index: int


@dataclass(frozen=True)
class MemoryType:
    minimum: int
    maximum: int | None
    memory64: bool
    shared: bool = False

    def encode(self) -> bytes:
        flags = (1 if self.maximum is not None else 0) | (2 if self.shared else 0) | (4 if self.memory64 else 0)
        out = bytes([flags]) + uleb(self.minimum)
        return out + uleb(self.maximum) if self.maximum is not None else out


@dataclass(frozen=True)
class GlobalType:
    valtype: int
    mutable: bool


@dataclass(frozen=True)
class FuncType:
    params: bytes
    results: bytes

    def encode(self) -> bytes:
        return b"\x60" + uleb(len(self.params)) + self.params + uleb(len(self.results)) + self.results


@dataclass
class Module:
    """A parsed module: sections in file order, and the parts instrumentation and validation use."""

    sections: list[Section]
    types: list[FuncType] = field(default_factory=list)
    imports: list[Import] = field(default_factory=list)
    functions: list[int] = field(default_factory=list)  # type index of each local function
    tables: list[bytes] = field(default_factory=list)  # raw table types
    memories: list[MemoryType] = field(default_factory=list)
    globals: list[GlobalType] = field(default_factory=list)  # local globals
    global_inits: list[bytes] = field(default_factory=list)  # their init expressions, with `end`
    exports: list[Export] = field(default_factory=list)
    start: int | None = None
    bodies: list[bytes] = field(default_factory=list)  # code entries, without size prefix
    customs: list[tuple[str, bytes]] = field(default_factory=list)

    @property
    def imported_functions(self) -> list[Import]:
        return [i for i in self.imports if i.kind == KIND_FUNC]

    @property
    def imported_memories(self) -> list[MemoryType]:
        return [read_memory_type(i.desc, 0)[0] for i in self.imports if i.kind == KIND_MEMORY]

    @property
    def all_memories(self) -> list[MemoryType]:
        return self.imported_memories + self.memories

    def function_type(self, func_index: int) -> FuncType:
        imported = self.imported_functions
        if func_index < len(imported):
            return self.types[imported[func_index].type_index]
        return self.types[self.functions[func_index - len(imported)]]

    def section(self, section_id: int) -> Section | None:
        return next((s for s in self.sections if s.id == section_id), None)

    def encode(self) -> bytes:
        return MAGIC + b"".join(s.encode() for s in self.sections)


def read_memory_type(buf: bytes, pos: int) -> tuple[MemoryType, int]:
    flags = buf[pos]
    pos += 1
    if flags & ~0x0F:
        raise WasmFormatError(f"memory limits flags 0x{flags:02X} unknown")
    minimum, pos = read_uleb(buf, pos)
    maximum = None
    if flags & 1:
        maximum, pos = read_uleb(buf, pos)
    if flags & 8:
        raise WasmFormatError("custom page sizes are not supported by the IC")
    return MemoryType(minimum, maximum, bool(flags & 4), bool(flags & 2)), pos


def read_const_expr(buf: bytes, pos: int) -> tuple[bytes, int]:
    """The constant expression at `pos` with its `end`, and the position after it."""
    end = decode_instructions(buf, pos, until_end=True)[1][-1]
    return bytes(buf[pos:end]), end


def parse_module(wasm: bytes) -> Module:
    if not isinstance(wasm, (bytes, bytearray, memoryview)):
        raise WasmFormatError(f"a wasm module is bytes, not {type(wasm).__name__}")
    wasm = bytes(wasm)
    if wasm[:4] != MAGIC[:4]:
        raise WasmFormatError("not a wasm module: it does not start with \\0asm (gzipped modules must be "
                              "decompressed first)")
    if wasm[4:8] != MAGIC[4:]:
        raise WasmFormatError(f"wasm binary version {wasm[4:8].hex()} is not 1 (components are not modules)")
    sections: list[Section] = []
    pos = 8
    while pos < len(wasm):
        section_id = wasm[pos]
        size, payload_start = read_uleb(wasm, pos + 1)
        payload_end = payload_start + size
        if payload_end > len(wasm):
            raise WasmFormatError(f"section {section_id} at byte {pos} claims {size} bytes, past the end")
        payload = wasm[payload_start:payload_end]
        if section_id == CUSTOM:
            name, name_end = read_name(payload, 0)
            body = payload[name_end:]
            sections.append(Section(CUSTOM, body, name, wasm[pos:payload_start + name_end], body))
        elif section_id > TAG:
            raise WasmFormatError(f"unknown section id {section_id} at byte {pos}")
        else:
            sections.append(Section(section_id, payload, "", wasm[pos:payload_start], payload))
        pos = payload_end
    module = Module(sections)
    for section in sections:
        try:
            _read_section(module, section)
        except IndexError:
            raise WasmFormatError(f"section {section.id} ends in the middle of an entry") from None
    for type_index in module.functions + [i.type_index for i in module.imported_functions]:
        if type_index >= len(module.types):
            raise WasmFormatError(f"a function has type {type_index}, but the module declares "
                                  f"{len(module.types)} types")
    if len(module.bodies) != len(module.functions):
        raise WasmFormatError(f"the function section declares {len(module.functions)} functions but the code "
                              f"section has {len(module.bodies)} bodies")
    return module


def _read_section(module: Module, section: Section) -> None:
    buf = section.payload
    if section.id == CUSTOM:
        module.customs.append((section.name, buf))
        return
    if section.id == START:
        module.start, _ = read_uleb(buf, 0)
        return
    if section.id not in (TYPE, IMPORT, FUNCTION, TABLE, MEMORY, GLOBAL, EXPORT, CODE):
        return  # element, data, data count and tag sections are read where they are rewritten
    count, pos = read_uleb(buf, 0)
    for _ in range(count):
        if section.id == TYPE:
            if buf[pos] != 0x60:
                raise WasmFormatError(f"type entry form 0x{buf[pos]:02X} is not a function type")
            n, pos = read_uleb(buf, pos + 1)
            params = buf[pos:pos + n]
            n, pos = read_uleb(buf, pos + n)
            module.types.append(FuncType(bytes(params), bytes(buf[pos:pos + n])))
            pos += n
        elif section.id == IMPORT:
            mod, pos = read_name(buf, pos)
            name, pos = read_name(buf, pos)
            kind = buf[pos]
            pos += 1
            if kind == KIND_FUNC:
                type_index, pos = read_uleb(buf, pos)
                module.imports.append(Import(mod, name, kind, type_index))
                continue
            start = pos
            if kind == KIND_TABLE:
                pos += 1
                pos = read_memory_type(buf, pos)[1]
            elif kind == KIND_MEMORY:
                pos = read_memory_type(buf, pos)[1]
            elif kind == KIND_GLOBAL:
                pos += 2
            elif kind == KIND_TAG:
                pos = read_uleb(buf, pos + 1)[1]
            else:
                raise WasmFormatError(f"import {mod}.{name} has unknown kind {kind}")
            module.imports.append(Import(mod, name, kind, desc=bytes(buf[start:pos])))
        elif section.id == FUNCTION:
            type_index, pos = read_uleb(buf, pos)
            module.functions.append(type_index)
        elif section.id == TABLE:
            start = pos
            pos = read_memory_type(buf, pos + 1)[1]
            module.tables.append(bytes(buf[start:pos]))
        elif section.id == MEMORY:
            memory, pos = read_memory_type(buf, pos)
            module.memories.append(memory)
        elif section.id == GLOBAL:
            valtype, mutable = buf[pos], buf[pos + 1]
            init, pos = read_const_expr(buf, pos + 2)
            module.globals.append(GlobalType(valtype, bool(mutable)))
            module.global_inits.append(init)
        elif section.id == EXPORT:
            name, pos = read_name(buf, pos)
            kind = buf[pos]
            index, pos = read_uleb(buf, pos + 1)
            module.exports.append(Export(name, kind, index))
        elif section.id == CODE:
            size, pos = read_uleb(buf, pos)
            module.bodies.append(bytes(buf[pos:pos + size]))
            pos += size
    if pos != len(buf):
        raise WasmFormatError(f"section {section.id} has {len(buf) - pos} bytes after its last entry")


def encode_vector(entries: list[bytes]) -> bytes:
    return uleb(len(entries)) + b"".join(entries)

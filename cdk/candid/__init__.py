"""The Candid codec: types, encoding, decoding with the spec's subtyping, and .did parsing.

Everything that crosses between canisters, and between agents and canisters, goes through
`encode` and `decode`.
"""

from cdk.candid.decode import DecodeLimits, decode
from cdk.candid.did import Interface, Method, parse_did
from cdk.candid.encode import encode
from cdk.candid.errors import CandidError, CandidMismatchError
from cdk.candid.types import (
    Field,
    Func,
    FuncRef,
    Opt,
    Primitive,
    Record,
    Recursive,
    Service,
    Some,
    T,
    Type,
    Variant,
    Vec,
    idl_hash,
)

__all__ = [
    "CandidError", "CandidMismatchError", "DecodeLimits", "Field", "Func", "FuncRef", "Interface", "Method",
    "Opt", "Primitive", "Record", "Recursive", "Service", "Some", "T", "Type", "Variant", "Vec", "decode",
    "encode", "idl_hash", "parse_did",
]

"""Type-level subtyping (spec, "Subtyping"), which decoding needs for func and service references.

Other values coerce value by value during decoding; a reference carries no value to look at,
so its type on the wire must be a subtype of the expected one. Recursive types are compared
coinductively: a pair under comparison is assumed to hold until shown otherwise.
"""

from __future__ import annotations

from cdk.candid.errors import CandidError
from cdk.candid.types import Field, Func, Opt, Primitive, Record, Service, Type, Variant, Vec, is_nullable, resolve


def is_subtype(sub: Type, sup: Type, max_depth: int) -> bool:
    return _Subtyping(max_depth).check(sub, sup, 0)


class _Subtyping:
    def __init__(self, max_depth: int) -> None:
        self.max_depth = max_depth
        self.assumed: set[tuple[int, int]] = set()

    def check(self, sub: Type, sup: Type, depth: int) -> bool:
        sub, sup = resolve(sub), resolve(sup)
        if sub is sup:
            return True
        if depth > self.max_depth:
            raise CandidError(f"types nest deeper than the limit of {self.max_depth} levels; "
                              "raise DecodeLimits.max_depth if this is legitimate")
        key = (id(sub), id(sup))
        if key in self.assumed:
            return True
        self.assumed.add(key)
        holds = self._rule(sub, sup, depth + 1)
        if not holds:
            self.assumed.discard(key)  # the assumption was refuted; no later check may lean on it
        return holds

    def _rule(self, sub: Type, sup: Type, depth: int) -> bool:
        if isinstance(sup, Primitive) and sup.name == "reserved":
            return True
        if isinstance(sub, Primitive) and sub.name == "empty":
            return True
        if isinstance(sup, Opt):
            # The spec's special opt rule: anything is a subtype of an opt (a value that does not
            # coerce becomes null), so this never fails.
            return True
        if isinstance(sub, Primitive) and isinstance(sup, Primitive):
            return sub.opcode == sup.opcode or (sub.name == "nat" and sup.name == "int")
        if isinstance(sub, Vec) and isinstance(sup, Vec):
            return self.check(sub.inner, sup.inner, depth)
        if isinstance(sub, Record) and isinstance(sup, Record):
            return self._fields_cover(sub.fields, sup.fields, depth)
        if isinstance(sub, Variant) and isinstance(sup, Variant):
            cases = sup.by_id
            return all(f.id in cases and self.check(f.type, cases[f.id].type, depth) for f in sub.fields)
        if isinstance(sub, Func) and isinstance(sup, Func):
            return (sub.modes == sup.modes
                    and self._tuple(sup.args, sub.args, depth)   # arguments are contravariant
                    and self._tuple(sub.rets, sup.rets, depth))
        if isinstance(sub, Service) and isinstance(sup, Service):
            methods = dict(sub.methods)
            return all(name in methods and self.check(methods[name], method, depth)
                       for name, method in sup.methods)
        return False

    def _fields_cover(self, sub: tuple[Field, ...], sup: tuple[Field, ...], depth: int) -> bool:
        present = {f.id: f for f in sub}
        for f in sup:
            mine = present.get(f.id)
            if mine is None:
                if not is_nullable(f.type):
                    return False
            elif not self.check(mine.type, f.type, depth):
                return False
        return True

    def _tuple(self, sub: tuple[Type, ...], sup: tuple[Type, ...], depth: int) -> bool:
        """Argument lists compare as records numbered 0..n-1."""
        return self._fields_cover(tuple(Field(i, t) for i, t in enumerate(sub)),
                                  tuple(Field(i, t) for i, t in enumerate(sup)), depth)

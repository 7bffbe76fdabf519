"""The one error type of the Candid codec, with where it happened."""

from __future__ import annotations


class CandidError(ValueError):
    """Bad Candid data, or a value that does not fit its type.

    `offset` is the byte offset in the decoded message (None when encoding); `path` is where in
    the value it happened, e.g. ["arg 0", ".prompt", "[3]"]; both are shown in the message.
    """

    def __init__(self, problem: str, *, offset: int | None = None, path: list[str] | None = None) -> None:
        super().__init__(problem)
        self.problem = problem
        self.offset = offset
        self.path = path if path is not None else []

    def __str__(self) -> str:
        where = []
        if self.path:
            path = self.path if len(self.path) <= 16 else self.path[:8] + ["…"] + self.path[-8:]
            where.append("in " + "".join(path))
        if self.offset is not None:
            where.append(f"at byte {self.offset}")
        return f"{self.problem} ({', '.join(where)})" if where else self.problem


class CandidMismatchError(CandidError):
    """Well-formed data whose value does not coerce to the expected type.

    Decoding under an `opt` recovers from this one (the spec's coercion gives null there); from
    any other CandidError it does not.
    """

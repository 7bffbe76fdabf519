"""The head's sessions and the runtime's heap accounting: each generated token makes a new
session whose size is the last one's plus what grew, so the runtime never walks a session's
growing ids and text again, and that size agrees with a full measurement."""

from __future__ import annotations

import sys

import pytest

from canisters.head import head as head_module
from canisters.head.session import Session, session_bytes_after_token
from cdk import Frozen
from client.agent import LocalCanisters
from replica import heap
from replica.inprocess import LocalClient
from replica.network import Network
from tests.deployed_model import deploy, export_model, greedy

TOKENS = 16


def test_a_sessions_size_grows_by_what_each_token_added(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: ANN001
    deployment = deploy(LocalCanisters(LocalClient(Network(None))), export_model(tmp_path / "model"), tmp_path / "s")
    walked: list[int] = []
    sizes: list[tuple[int, int]] = []  # (given to the runtime, measured in full)
    walk = heap._walk

    def counting_walk(root: object, save: bool) -> heap.HeapSnapshot:
        if isinstance(root, Session):
            walked.append(len(root.stream.ids))
        return walk(root, save)

    def compared(before: Frozen[Session], after: Session) -> int | None:
        given = session_bytes_after_token(before, after)
        if given is not None:
            sizes.append((given, sys.getsizeof(Frozen(after)) + walk(after, False).heap_bytes))
        return given

    monkeypatch.setattr(heap, "_walk", counting_walk)
    monkeypatch.setattr(head_module, "session_bytes_after_token", compared)
    generation = deployment.head().update("generate", greedy("the cat sat on the mat", TOKENS))["ok"]
    assert len(generation["ids"]) == TOKENS
    assert len(sizes) >= TOKENS - 1  # every token after the first had its size given
    assert all(abs(given - measured) <= 512 for given, measured in sizes), sizes
    # Walked when it started (no tokens) and when it ended (a new object): never per token.
    assert len(walked) <= 3, walked

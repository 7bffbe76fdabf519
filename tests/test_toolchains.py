"""A missing tool or module skips with its reason on a developer's machine and fails under CI=true."""

from __future__ import annotations

import pytest

from tests.toolchains import require_module, require_tool


@pytest.mark.parametrize("require", [
    lambda: require_tool("icllama-no-such-tool", "install it with apt-get"),
    lambda: require_module("icllama_no_such_module", "install it with pip"),
])
def test_missing_dependency_skips_with_its_reason_and_fails_in_ci(monkeypatch: pytest.MonkeyPatch, require) -> None:
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="icllama.no.such.* install it with"):
        require()
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match=r"install it with .* \(CI=true: a missing dependency is a fail"):
        require()


def test_present_dependencies_are_returned() -> None:
    assert require_tool("sh", "unused").endswith("/sh")
    assert require_module("json", "unused").dumps([1]) == "[1]"

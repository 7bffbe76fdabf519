"""`icllama run --json` splits host speed into prefill and decode at the first generated token."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from client.cli import main
from client.pipeline import prefill_decode_rates


def test_the_split_takes_out_the_decode_time_of_tokens_seen_with_the_first() -> None:
    assert prefill_decode_rates(10, 5, (1.0, 1), 3.0) == (10.0, 2.0)
    # 2 tokens seen after 2 s: the second took 1/1.5 s of decode, so the prompt took 4/3 s.
    assert prefill_decode_rates(10, 5, (2.0, 2), 4.0) == pytest.approx((7.5, 1.5))
    assert prefill_decode_rates(10, 5, (2.0, 5), 2.5) == (None, None)  # every token in one round
    assert prefill_decode_rates(10, 5, None, 2.5) == (None, None)  # not streamed


@pytest.mark.parametrize("mode", [["--unsharded"], ["--shards", "2"]])
def test_run_json_reports_prefill_and_decode_speed(stories_path: Path, capsys: pytest.CaptureFixture[str],
                                                   mode: list[str]) -> None:
    assert main(["run", str(stories_path), "-p", "Once upon a time", "-n", "20", "--json", *mode]) == 0
    metrics = json.loads(capsys.readouterr().out)["metrics"]
    assert {"host_tokens_per_s", "prefill_tokens_per_s", "decode_tokens_per_s"} <= metrics.keys()
    if mode == ["--unsharded"]:  # token by token, so both are measured
        assert metrics["prefill_tokens_per_s"] > 0 and metrics["decode_tokens_per_s"] > 0

"""What a new user meets first on the command line: help, --version, and early refusals."""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from importlib.metadata import version

import pytest

from client.cli import build_parser, main

_FLAGS = (argparse._StoreTrueAction, argparse._StoreFalseAction, argparse._StoreConstAction, argparse._HelpAction,
          argparse._VersionAction)


def _commands(parser: argparse.ArgumentParser, path: str = "icllama") -> Iterator[tuple[str, argparse.ArgumentParser]]:
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _commands(sub, f"{path} {name}")


def test_every_option_has_help_and_says_its_default() -> None:
    missing = []
    for command, parser in _commands(build_parser()):
        for action in parser._actions:
            if isinstance(action, (argparse._SubParsersAction, argparse._HelpAction)):
                continue
            name = f"{command} {'/'.join(action.option_strings) or action.dest}"
            if not action.help:
                missing.append(f"{name}: no help")
            elif (action.option_strings and not action.required and not isinstance(action, _FLAGS)
                  and "default" not in action.help):
                missing.append(f"{name}: help does not say its default")
    assert missing == []


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--version"])
    assert exited.value.code == 0
    assert capsys.readouterr().out == f"icllama {version('icllama')}\n"


@pytest.mark.parametrize(("option", "message"), [
    (["--temperature", "nan"], "--temperature must be a finite number (<= 0 means greedy); got nan"),
    (["--top-p", "0"], "--top-p must be in (0, 1] (1 turns it off); got 0.0"),
    (["--min-p", "1.5"], "--min-p must be in [0, 1] (0 turns it off); got 1.5"),
    (["--repeat-penalty", "-1"], "--repeat-penalty must be a positive number (1 turns it off); got -1.0"),
    (["--seed", "-3"], "--seed must be an integer in [0, 18446744073709551615]; got -3"),
    (["--stop", ""], "--stop needs a non-empty text"),
    (["-n", "0"], "-n/--max-tokens must be at least 1, got 0"),
])
@pytest.mark.parametrize("command", [
    # A model that does not exist and a network nobody serves: the options are refused before
    # either is looked at, so nothing is read, exported or uploaded.
    ["run", "no-such-model.gguf"],
    ["generate", "--network", "http://127.0.0.1:9", "--canister", "bkyz2-fmaaa-aaaaa-qaaaq-cai"],
])
def test_sampling_options_are_refused_first_in_one_line(capsys: pytest.CaptureFixture[str], command: list[str],
                                                         option: list[str], message: str) -> None:
    assert main([*command, "-p", "hi", *option]) == 2
    assert capsys.readouterr().err == f"icllama: error: {message}\n"

"""What the management canister keeps about a canister besides its code and memory (the settings
beyond controllers and freezing threshold, the canister version, its history and its log), as
JSON for checkpoints, so a restarted network reports them unchanged."""

from __future__ import annotations

from dataclasses import replace
from functools import cache
from pathlib import Path
from typing import Any

from cdk.candid import Interface, decode, encode, parse_did
from cdk.principal import Principal
from replica.canister_log import CanisterLog, LogRecord
from replica.canister_state import CanisterState, Visibility

_MANAGEMENT_DID = Path(__file__).parent / "management.did"


_PLAIN_SETTINGS = ("compute_allocation", "memory_allocation", "reserved_cycles_limit",
                   "minimum_incoming_canister_call_cycles", "log_memory_limit", "wasm_memory_threshold")
_VISIBILITIES = ("log_visibility", "snapshot_visibility", "status_visibility")


@cache
def _change_list_type() -> Any:
    interface: Interface = parse_did(_MANAGEMENT_DID.read_text())
    (result,) = interface.methods["canister_info"].rets
    return next(f.type for f in result.target.fields if f.key == "recent_changes")


def history_size(state: CanisterState) -> int:
    """canister_status's canister_history_size: the bytes of the kept changes, Candid-encoded."""
    return len(encode([_change_list_type()], [state.history]))


def to_json(state: CanisterState) -> dict[str, Any]:
    s = state.settings
    return {
        **{name: getattr(s, name) for name in _PLAIN_SETTINGS},
        **{name: _visibility_json(getattr(s, name)) for name in _VISIBILITIES},
        "environment_variables": [list(pair) for pair in s.environment_variables],
        "version": state.version,
        "history": encode([_change_list_type()], [state.history]).hex(),  # Candid: the ic.did types as they are
        "changes_total": state.changes_total,
        "log": {"next_idx": state.log.next_idx,
                "records": [[r.idx, r.timestamp_nanos, r.content.hex()] for r in state.log.records]},
    }


def restore(state: CanisterState, saved: dict[str, Any] | None) -> None:
    """Lays `saved` (from to_json) over a restored canister; a checkpoint from before these fields
    existed leaves the defaults."""
    if saved is None:
        return
    # A field this network's older checkpoints lack keeps its default.
    fields = {name: saved[name] for name in _PLAIN_SETTINGS if name in saved}
    fields.update({name: _visibility_from(saved[name]) for name in _VISIBILITIES if isinstance(saved.get(name), list)})
    if "environment_variables" in saved:
        fields["environment_variables"] = tuple((name, value) for name, value in saved["environment_variables"])
    state.settings = replace(state.settings, **fields)
    state.version = saved["version"]
    (state.history,) = decode([_change_list_type()], bytes.fromhex(saved["history"]))
    state.changes_total = saved["changes_total"]
    records = [LogRecord(idx, ts, bytes.fromhex(content)) for idx, ts, content in saved["log"]["records"]]
    state.log = CanisterLog(next_idx=saved["log"]["next_idx"])
    for record in records:
        state.log.records.append(record)
        state.log.size_bytes += record.size_bytes


def _visibility_json(visibility: Visibility) -> list[Any]:
    return [visibility.kind, [p.to_text() for p in visibility.viewers]]


def _visibility_from(saved: list[Any]) -> Visibility:
    return Visibility(saved[0], tuple(Principal.from_text(p) for p in saved[1]))

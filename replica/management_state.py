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
from replica.canister_state import CanisterState

_MANAGEMENT_DID = Path(__file__).parent / "management.did"


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
        "compute_allocation": s.compute_allocation,
        "memory_allocation": s.memory_allocation,
        "reserved_cycles_limit": s.reserved_cycles_limit,
        "log_visibility": s.log_visibility,
        "log_viewers": [p.to_text() for p in s.log_viewers],
        "log_memory_limit": s.log_memory_limit,
        "wasm_memory_threshold": s.wasm_memory_threshold,
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
    state.settings = replace(
        state.settings,
        compute_allocation=saved["compute_allocation"],
        memory_allocation=saved["memory_allocation"],
        reserved_cycles_limit=saved["reserved_cycles_limit"],
        log_visibility=saved["log_visibility"],
        log_viewers=tuple(Principal.from_text(p) for p in saved["log_viewers"]),
        log_memory_limit=saved["log_memory_limit"],
        wasm_memory_threshold=saved["wasm_memory_threshold"],
        environment_variables=tuple((name, value) for name, value in saved["environment_variables"]),
    )
    state.version = saved["version"]
    (state.history,) = decode([_change_list_type()], bytes.fromhex(saved["history"]))
    state.changes_total = saved["changes_total"]
    records = [LogRecord(idx, ts, bytes.fromhex(content)) for idx, ts, content in saved["log"]["records"]]
    state.log = CanisterLog(next_idx=saved["log"]["next_idx"])
    for record in records:
        state.log.records.append(record)
        state.log.size_bytes += record.size_bytes

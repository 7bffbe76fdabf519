"""A Plan for people (a table of canisters and the totals) and for programs (JSON)."""

from __future__ import annotations

import json

from sharding.partition import TOKENS_AVERAGED, Plan, Shard, format_bytes, heap_limit_bytes, plural


def plan_json(plan: Plan) -> str:
    return json.dumps(plan.to_dict(), indent=2)


def plan_table(plan: Plan) -> str:
    c, t = plan.constraints, plan.totals
    converted = "" if c.weight_format == "gguf" else f"; weights converted to {c.weight_format} at load"
    lines = [
        f"{plan.model}{converted}  [{plan.source}]",
        f"strategy {plan.strategy}; weights {c.weight_format} on-chain, {c.kernel} kernels, {c.fees} fees, "
        f"{c.subnet_nodes}-node subnet, {c.heap} heap ({format_bytes(heap_limit_bytes(c))}), shard limit "
        f"{format_bytes(c.shard_bytes)}, context {plan.context}",
        "",
    ]
    header = ("canister", "role", "holds", "weights", "upload", "KV/session", "instr/token", "slices/token",
              "cycles/token")
    rows = [header] + [
        (s.name, s.role, _holds(s, plan), format_bytes(s.weight_bytes), format_bytes(s.file_bytes),
         format_bytes(s.kv_bytes_per_session) if s.kv_bytes_per_session else "-", _count(s.decode.instructions),
         str(s.decode.rounds), _count(s.decode.cycles))
        for s in plan.shards
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    right = {3, 4, 5, 6, 7, 8}
    for row in rows:
        lines.append("  ".join(cell.rjust(w) if i in right else cell.ljust(w)
                               for i, (cell, w) in enumerate(zip(row, widths, strict=True))).rstrip())
    framing = t.activation_bytes_per_message - 4 * plan.d_model
    lines += [
        "",
        f"canisters       {t.canisters} ({plural(t.stages, 'sequential call')} per token)",
        f"per token       {_count(t.instructions_per_token)} instructions, {_count(t.cycles_per_token)} cycles = "
        f"{t.tc_per_token:.4f} TC = ${t.usd_per_token:.4f} (the token at position {plan.context - 1})",
        f"virtual time    {t.rounds_per_token:.3g} rounds = {t.seconds_per_token:.3g} s per token, averaged over "
        f"{TOKENS_AVERAGED} tokens (a slice takes a round; executions that fit run within one round's inner loops)",
        f"messages        {t.messages_per_token} inter-canister messages per token; a one-token activation message "
        f"is {t.activation_bytes_per_message:,} B ({4 * plan.d_model:,} B of f32 + {framing} B of Candid)",
        f"prefill         {plural(t.prefill_chunk, 'token')} per message: {t.prefill_rounds_per_chunk} rounds and "
        f"{t.prefill_cycles_per_chunk / 1e12:.4f} TC per chunk",
        f"upload          {format_bytes(t.upload_bytes)} in {t.upload_messages:,} ingress messages: "
        f"{t.upload_cycles / 1e12:.2f} TC",
        f"storage         {format_bytes(t.storage_bytes)} (uploaded shards in stable memory, weights and one session's "
        f"KV on the heap): {t.storage_cycles_per_month / 1e12:.2f} TC per month",
        f"creation        {t.creation_cycles / 1e12:.2f} TC for {t.canisters} canisters",
    ]
    return "\n".join(lines)


def _holds(shard: Shard, plan: Plan) -> str:
    if shard.role == "head":
        parts = ["token_embd", "tokenizer", "chat template"]
    else:
        parts = []
        if shard.layers:
            first, last = shard.layers
            parts.append(f"layer {first}" if last - first == 1 else f"layers {first}-{last - 1}")
        if shard.output_rows:
            start, stop = shard.output_rows
            whole = (start, stop) == (0, plan.n_vocab)
            matrix = "output" if "output.weight" in shard.tensors else "output (tied token_embd)"
            parts.append(matrix if whole else f"{matrix} rows {start}-{stop - 1}")
    if shard.samples:
        parts.append("samples")
    return ", ".join(parts)


def _count(n: int) -> str:
    for unit, scale in (("T", 10**12), ("B", 10**9), ("M", 10**6), ("K", 10**3)):
        if n >= scale:
            return f"{n / scale:.2f}{unit}"
    return str(n)

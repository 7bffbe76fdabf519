"""The cycles ledger as a local network hosts it at its mainnet id: accounts hold cycles, and
`create_canister` turns an account's cycles into a new canister, as icp-cli's
`icp canister create` expects; `deposit` credits an account with the cycles a canister sends.

The ledger's own cycle balance backs the accounts (cycles deposited on the IC become the
ledger's). It is created with the initial balances it is given: a local network funds the
anonymous principal, as icp-cli's own local network does. Balances are kept in stable memory,
so they survive upgrades and network restarts.
"""

from __future__ import annotations

import json
from typing import Any

from cdk.canister import CallRejected, Canister, query, update
from cdk.principal import Principal

FEE = 100_000_000  # cycles per ledger operation (the cycles ledger's fee; icp-cli CYCLES_LEDGER_BLOCK_FEE)
DECIMALS = 12  # a cycle is 10^-12 of a "T" (icp-cli CYCLES_LEDGER_DECIMALS)
MANAGEMENT = Principal.management()
_LENGTH_BYTES = 8
_REJECTION_CODES = {0: "NoError", 1: "SysFatal", 2: "SysTransient", 3: "DestinationInvalid", 4: "CanisterReject",
                    5: "CanisterError"}


def _key(account: dict[str, Any]) -> str:
    subaccount = account.get("subaccount") or bytes(32)
    return f"{account['owner'].to_text()}:{bytes(subaccount).hex()}"


class CyclesLedger(Canister):
    DID = "cycles_ledger.did"

    def init(self, balances: list[dict[int, Any]]) -> None:
        """`balances`: (account, cycles) pairs, Candid tuples (records with fields 0 and 1)."""
        self.balances: dict[str, int] = {}
        self.blocks = 0
        for pair in balances:
            key = _key(pair[0])
            self.balances[key] = self.balances.get(key, 0) + pair[1]
        self._save()

    def post_upgrade(self, balances: list[dict[int, Any]]) -> None:
        size = int.from_bytes(self.ic.stable_read(0, _LENGTH_BYTES), "little") if self.ic.stable_size() else 0
        if size == 0:
            self.init(balances)
            return
        saved = json.loads(self.ic.stable_read(_LENGTH_BYTES, size))
        self.balances, self.blocks = saved["balances"], saved["blocks"]

    def _save(self) -> None:
        data = json.dumps({"balances": self.balances, "blocks": self.blocks}).encode()
        needed = -(-(_LENGTH_BYTES + len(data)) // 65536)
        if self.ic.stable_size() < needed:
            self.ic.stable_grow(needed - self.ic.stable_size())
        self.ic.stable_write(0, len(data).to_bytes(_LENGTH_BYTES, "little") + data)

    @query
    def icrc1_balance_of(self, account: dict[str, Any]) -> int:
        return self.balances.get(_key(account), 0)

    @query
    def icrc1_fee(self) -> int:
        return FEE

    @query
    def icrc1_decimals(self) -> int:
        return DECIMALS

    def _debit(self, key: str, amount: int) -> int | None:
        """Takes amount + the fee from the account; returns the block, or None if it has too little.
        The debit is committed at the caller's next await, so a second spend cannot use it too."""
        if self.balances.get(key, 0) < amount + FEE:
            return None
        self.balances[key] -= amount + FEE
        self.blocks += 1
        self._save()
        return self.blocks

    def _refund(self, key: str, amount: int) -> int:
        """Gives back the amount (the fee is kept, as the cycles ledger does); returns the block."""
        self.balances[key] += amount
        self.blocks += 1
        self._save()
        return self.blocks

    @update
    async def create_canister(self, args: dict[str, Any]) -> dict[str, Any]:
        caller = self.ic.caller()
        key = _key({"owner": caller, "subaccount": args.get("from_subaccount")})
        amount = args["amount"]
        fee_block = self._debit(key, amount)
        if fee_block is None:
            return {"Err": {"InsufficientFunds": {"balance": self.balances.get(key, 0)}}}
        creation = args.get("creation_args") or {}
        settings = dict(creation.get("settings") or {})
        if settings.get("controllers") is None:
            settings["controllers"] = [caller]  # the new canister belongs to the account's owner
        try:
            created = await self.ic.call(MANAGEMENT, "create_canister",
                                         {"settings": settings, "sender_canister_version": None}, cycles=amount)
        except CallRejected as rejected:
            return {"Err": {"FailedToCreate": {"error": rejected.message, "refund_block": self._refund(key, amount),
                                               "fee_block": fee_block}}}
        return {"Ok": {"block_id": fee_block, "canister_id": created["canister_id"]}}

    @update
    def deposit(self, args: dict[str, Any]) -> dict[str, Any]:
        """Credits account `to` with all the cycles attached to the call, without a fee, as the cycles
        ledger does (icp canister delete recovers a canister's cycles this way, through a shim)."""
        attached = self.ic.msg_cycles_available()
        if attached < FEE:
            self.ic.trap(f"a deposit needs at least {FEE:,} cycles attached (the ledger's fee); got {attached:,}")
        amount = self.ic.msg_cycles_accept(attached)
        key = _key(args["to"])
        self.balances[key] = self.balances.get(key, 0) + amount
        self.blocks += 1
        self._save()
        return {"balance": self.balances[key], "block_index": self.blocks}

    @update
    async def withdraw(self, args: dict[str, Any]) -> dict[str, Any]:
        """Sends cycles from the caller's account to canister `to` (icp canister top-up)."""
        key = _key({"owner": self.ic.caller(), "subaccount": args.get("from_subaccount")})
        amount = args["amount"]
        fee_block = self._debit(key, amount)
        if fee_block is None:
            return {"Err": {"InsufficientFunds": {"balance": self.balances.get(key, 0)}}}
        try:
            await self.ic.call(MANAGEMENT, "deposit_cycles", {"canister_id": args["to"]}, cycles=amount)
        except CallRejected as rejected:
            self._refund(key, amount)
            code = _REJECTION_CODES.get(rejected.reject_code, "Unknown")
            return {"Err": {"FailedToWithdraw": {"fee_block": fee_block, "rejection_reason": rejected.message,
                                                 "rejection_code": {code: None}}}}
        return {"Ok": fee_block}

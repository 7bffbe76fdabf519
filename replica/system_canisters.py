"""The system canisters a served network hosts at their mainnet ids, for clients whose local flow
asks for them (icp-cli's `icp canister create`: the cycles minting canister names the subnets,
the cycles ledger turns an account's cycles into a canister).

They are created once, when a network's state directory is new, through the management canister
like any canister, then left without controllers (no one can change them, as no one here
stands for the NNS that controls them on mainnet). Their ids lie outside the subnet's own
canister range, so the subnet's certified canister ranges list each of them too.
"""

from __future__ import annotations

from dataclasses import dataclass

from cdk.principal import Principal
from replica.inprocess import LocalClient
from replica.network import Network

CYCLES_MINTING_ID = Principal.from_text("rkp4c-7iaaa-aaaaa-aaaca-cai")
CYCLES_LEDGER_ID = Principal.from_text("um5iw-rqaaa-aaaaq-qaaba-cai")
# What icp-cli's own local network gives each identity, anonymous included (icp-cli
# docs/guides/containerized-networks.md: 1,000 T cycles per identity).
ANONYMOUS_FUNDING_CYCLES = 1_000 * 10**12
# The ledger's own balance backs its accounts; the margin pays its executions and storage.
_LEDGER_MARGIN_CYCLES = 100 * 10**12
_SYSTEM_CANISTER_CYCLES = 10 * 10**12


@dataclass(frozen=True)
class SystemCanister:
    canister_id: Principal
    class_path: str
    cycles: int


def system_canisters() -> list[SystemCanister]:
    return [
        SystemCanister(CYCLES_MINTING_ID, "canisters.system.cycles_minting:CyclesMinting", _SYSTEM_CANISTER_CYCLES),
        SystemCanister(CYCLES_LEDGER_ID, "canisters.system.cycles_ledger:CyclesLedger",
                       ANONYMOUS_FUNDING_CYCLES + _LEDGER_MARGIN_CYCLES),
    ]


def system_canister_ids() -> list[Principal]:
    return [canister.canister_id for canister in system_canisters()]


def host(network: Network, subnet_id: Principal) -> None:
    """Creates and installs the system canisters that `network` does not have yet. Runs before
    the network serves anyone: the rounds it needs run here, in this thread."""
    client = LocalClient(network)
    init_args = {
        CYCLES_MINTING_ID: ([subnet_id],),
        CYCLES_LEDGER_ID: ([({"owner": Principal.anonymous(), "subaccount": None}, ANONYMOUS_FUNDING_CYCLES)],),
    }
    for canister in system_canisters():
        with network.lock:
            state = network.subnet.canisters.get(canister.canister_id)
            installed = state is not None and state.module_hash is not None
        if installed:
            continue
        if state is None:  # else a start that stopped between creating and installing it left it empty
            client.update(Principal.management(), "provisional_create_canister_with_cycles", {
                "amount": canister.cycles, "settings": None, "specified_id": canister.canister_id,
                "sender_canister_version": None})
        client.install_code(canister.canister_id, canister.class_path, *init_args[canister.canister_id])
        client.update(Principal.management(), "update_settings", {
            "canister_id": canister.canister_id, "settings": {"controllers": []}, "sender_canister_version": None})

"""install_code for a wasm module: install, reinstall and upgrade, run as the IC runs them.

An install creates an instance (running the module's start function) and calls `canister_init`
with the argument; a reinstall does the same on emptied stable memory; an upgrade calls the old
instance's `canister_pre_upgrade`, creates the new instance and calls `canister_post_upgrade`.
The whole install is one unit: if any step traps, the canister keeps its code, heap and stable
memory as they were, and the install is rejected with the trap.

Enhanced orthogonal persistence (moc's default output): a module carrying the private section
`enhanced-orthogonal-persistence` keeps its heap across upgrades, so an upgrade of it must pass
`wasm_memory_persistence = opt keep`, as dfx does; the new module starts on the kept memory.
An upgrade that names no `wasm_memory_persistence` is refused for such a module, and `opt keep`
for a module without the section; `opt replace` discards the heap. The rules and messages are the
IC's (dfinity/ic f55af5fd282a0d43088eb03c2d44ece95a2df856,
rs/execution_environment/src/execution/install_code.rs: `MissingUpgradeOptionError`,
`InvalidUpgradeOptionError`, under IC0504).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from replica.engines import CanisterView, Execution, Kind, Outcome
from replica.errors import ErrorCode, RejectError
from replica.wasm_module import CanisterModule

if TYPE_CHECKING:
    from cdk.principal import Principal
    from replica.canister_state import CanisterState
    from replica.subnet import Subnet

EOP_SECTION = "enhanced-orthogonal-persistence"


def uses_orthogonal_persistence(module: CanisterModule | None) -> bool:
    return module is not None and EOP_SECTION in module.metadata


def memory_handling(target: CanisterState, module: CanisterModule, upgrade_options: dict) -> bool:
    """Whether an upgrade keeps the wasm heap (`opt keep`), refused where the IC refuses it."""
    persistence = upgrade_options.get("wasm_memory_persistence")
    keep = persistence is not None and "keep" in persistence
    if keep and not uses_orthogonal_persistence(module):
        raise RejectError(ErrorCode.CANISTER_CONTRACT_VIOLATION,
                          "Invalid upgrade option: The `wasm_memory_persistence: opt Keep` upgrade option requires "
                          "that the new canister module supports enhanced orthogonal persistence.")
    if persistence is None and uses_orthogonal_persistence(target.module):
        raise RejectError(ErrorCode.CANISTER_CONTRACT_VIOLATION,
                          "Missing upgrade option: Enhanced orthogonal persistence requires the "
                          "`wasm_memory_persistence` upgrade option. Upgrade with "
                          "mode = upgrade (opt record { wasm_memory_persistence = opt variant { keep } }), "
                          "as dfx does, or reinstall to discard the heap.")
    return keep


def canister_view(subnet: Subnet, target: CanisterState) -> CanisterView:
    return CanisterView(
        canister_id=target.id.bytes,
        controllers=tuple(c.bytes for c in target.settings.controllers),
        cycle_balance=target.cycles,
        status=target.status,
        version=target.version,
        wasm_memory_limit=target.settings.wasm_memory_limit or 0,
        global_timer_ns=target.global_timer_ns,
        fees=subnet.fees,
        subnet_size=subnet.subnet_size,
    )


def keep_logs(target: CanisterState, outcome: Outcome, time_ns: int) -> None:
    """An execution's debug_print messages, and the reason it trapped, into the canister's log
    (ic0.trap logged its own message already)."""
    explicit = outcome.trap is None or outcome.trap.error_code == ErrorCode.CANISTER_CALLED_TRAP.text
    target.keep_logs(outcome.logs + ([] if explicit else [outcome.trap.message.encode()]), time_ns)


def install_wasm(subnet: Subnet, target: CanisterState, module: CanisterModule, mode: str, arg: bytes,
                 caller: Principal, upgrade_options: dict) -> int:
    """Installs, reinstalls or upgrades `target` to `module`; returns the instructions used."""
    if mode == "upgrade" and target.loaded is not None:
        raise RejectError(ErrorCode.CANISTER_CONTRACT_VIOLATION,
                          f"Canister {target.id.to_text()} runs a Python canister class, which cannot be upgraded "
                          "to a wasm module (their heaps have nothing in common); reinstall it instead")
    keep = memory_handling(target, module, upgrade_options) if mode == "upgrade" else False
    engine = subnet.wasm_engine
    view = canister_view(subnet, target)
    limit = subnet.limits.instructions_per_install
    old_instance = target.instance
    stable_before = (dict(target.stable.chunks), target.stable.pages)
    used = 0
    module_is_wasm64 = engine.compile(module.wasm).wasm64

    def charge(instructions: int) -> None:
        # The canister pays for the install's execution, whether it succeeds or not.
        target.cycles -= subnet.fees.execution_cycles(instructions, subnet.subnet_size, module_is_wasm64)

    def failed(outcome: Outcome, step: str) -> RejectError:
        charge(used)
        keep_logs(target, outcome, subnet.time_ns())
        target.stable.chunks, target.stable.pages = dict(stable_before[0]), stable_before[1]
        if heap_before is not None:
            old_instance.load(*heap_before)  # what pre_upgrade changed goes back too
        trap = outcome.trap
        assert trap is not None
        code = ErrorCode(int(trap.error_code[2:])) if trap.error_code else ErrorCode.CANISTER_CALLED_TRAP
        return RejectError(code, f"install_code ({mode}) of canister {target.id.to_text()} failed in {step} and "
                                 f"changed nothing: {trap.message}")

    kept_memory = heap_before = None
    if mode == "upgrade":
        if upgrade_options.get("skip_pre_upgrade") is not True:
            heap_before = old_instance.memory_image()
            outcome = old_instance.execute(Execution(Kind.PRE_UPGRADE, limit, subnet.time_ns(), caller=caller.bytes),
                                           view)
            used += outcome.instructions
            if outcome.trap is not None:
                raise failed(outcome, "canister_pre_upgrade")
            keep_logs(target, outcome, subnet.time_ns())
        if keep:
            kept_memory = old_instance.memory_image()
    elif mode == "reinstall":
        target.stable.clear()
    instance, outcome = engine.instantiate(module.wasm, target.stable, view, kept_memory)
    # The IC charges compiling the module on every install, even when it has it compiled already.
    used += instance.compiled.compilation_instructions + outcome.instructions
    if outcome.trap is not None:
        raise failed(outcome, "the start function")
    hook = Kind.POST_UPGRADE if mode == "upgrade" else Kind.INIT
    outcome = instance.execute(Execution(hook, max(0, limit - used), subnet.time_ns(), arg=arg, caller=caller.bytes),
                               view)
    used += outcome.instructions
    if outcome.trap is not None:
        raise failed(outcome, f"canister_{hook.value}")
    keep_logs(target, outcome, subnet.time_ns())
    charge(used)
    target.instance = instance
    target.module = module
    target.loaded = None
    target.install_arg = arg
    target.heap_bytes = outcome.heap_bytes
    # A new module starts with its timer off unless its init or post_upgrade set one (interface spec).
    target.global_timer_ns = outcome.global_timer_ns or 0
    if mode != "upgrade":
        subnet.reject_call_contexts(target)
    return used

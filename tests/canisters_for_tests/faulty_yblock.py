"""The real yblock with injected faults, at points a test chooses, for the fault tests:

- a trap in `forward`, once, for a chosen session at a chosen position, *after* its layers ran
  (so the KV arrays were written in place and only the commit of the cache's length is left to
  roll back). Armed with `arm_trap`, in-process networks only;
- the whole network process killed with SIGKILL as a forward for a chosen position arrives (a
  crash in the middle of a generation, inside a round). Armed by the network process's
  environment, ICLLAMA_TEST_KILL_AT_POS, so a network started without it runs normally.

It is installed over a deployed yblock with install_code in upgrade mode (its shard stays in
stable memory and is loaded again), as a new release would be. Both faults are armed from
outside the canister's state: a trap rolls back everything the canister holds, so a fault
recorded there would fire again on every retry, and a one-off fault (a rare bug, a failed
node) is what the retries in the fault tests are about.
"""

from __future__ import annotations

import os
import signal
from typing import Any

from canisters.yblock.yblock import YBlock
from cdk import update
from cdk.principal import Principal

CLASS_PATH = "tests.canisters_for_tests.faulty_yblock:FaultyYBlock"
KILL_AT_POS_ENV = "ICLLAMA_TEST_KILL_AT_POS"
_TRAPS: dict[Principal, tuple[int, int]] = {}  # canister id -> (session, position) whose forward traps once


def arm_trap(canister: Principal, session: int, pos: int) -> None:
    _TRAPS[canister] = (session, pos)


def trap_armed(canister: Principal) -> bool:
    return canister in _TRAPS


class FaultyYBlock(YBlock):
    DID = "../../canisters/yblock/yblock.did"

    @update
    def forward(self, request: dict[str, Any]) -> dict[str, Any]:
        if os.environ.get(KILL_AT_POS_ENV) == str(request["pos"]):
            os.kill(os.getpid(), signal.SIGKILL)
        reply = super().forward(request)
        me = self.ic.id()
        if _TRAPS.get(me) == (request["session"], request["pos"]):
            del _TRAPS[me]
            self.ic.trap(f"injected fault in forward of session {request['session']} at position {request['pos']}")
        return reply

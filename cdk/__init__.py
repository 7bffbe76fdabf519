"""The canister development kit: what canister code imports (Candid, principals, the Canister
programming model and the work meter)."""

from cdk.canister import IC, CallRejected, Canister, Frozen, Trap, frozen, query, update

__all__ = ["IC", "CallRejected", "Canister", "Frozen", "Trap", "frozen", "query", "update"]

// Calls another canister (by principal) and handles its reply or its reject.
import Prim "mo:⛔";

persistent actor Caller {
  type Counter = actor {
    inc : () -> async Nat;
    refuse : (Text) -> async Nat;
    add_then_trap : (Nat) -> async Nat;
  };

  var calls : Nat = 0;  // counted before each await: committed even if the call fails

  func counter(id : Principal) : Counter {
    actor (debug_show id) : Counter
  };

  public func inc_other(id : Principal) : async Nat {
    calls += 1;
    await counter(id).inc()
  };

  // The callee's reject as (reject code name, message); "replied" when it replied.
  public func refuse_other(id : Principal, reason : Text) : async (Text, Text) {
    calls += 1;
    try {
      ignore await counter(id).refuse(reason);
      ("replied", "")
    } catch (e) {
      (code_name(Prim.errorCode(e)), Prim.errorMessage(e))
    }
  };

  public func trap_other(id : Principal, n : Nat) : async (Text, Text) {
    calls += 1;
    try {
      ignore await counter(id).add_then_trap(n);
      ("replied", "")
    } catch (e) {
      (code_name(Prim.errorCode(e)), Prim.errorMessage(e))
    }
  };

  // The write before the await is committed there; the one after it goes with the trap.
  public func inc_other_then_trap(id : Principal) : async () {
    calls += 1;
    ignore await counter(id).inc();
    calls += 100;
    Prim.trap("inc_other_then_trap: trapping after the await")
  };

  public query func call_count() : async Nat {
    calls
  };

  func code_name(code : Prim.ErrorCode) : Text {
    switch code {
      case (#system_fatal) "system_fatal";
      case (#system_transient) "system_transient";
      case (#destination_invalid) "destination_invalid";
      case (#canister_reject) "canister_reject";
      case (#canister_error) "canister_error";
      case (#future n) "future " # debug_show n;
      case (#call_error _) "call_error";
    }
  };
}

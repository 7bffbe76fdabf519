// A counter: an update that changes state, a query that reads it, and the ways a method can
// end badly (an explicit reject, a trap after a write, a loop past the instruction limit).
import Prim "mo:⛔";

persistent actor Counter {
  var count : Nat = 0;

  public func inc() : async Nat {
    count += 1;
    count
  };

  public func add(n : Nat) : async Nat {
    count += n;
    count
  };

  public query func get() : async Nat {
    count
  };

  public shared query (msg) func whoami() : async Principal {
    msg.caller
  };

  // Rejects with reject code 4 (CANISTER_REJECT) and this message; changes nothing.
  public func refuse(reason : Text) : async Nat {
    throw Prim.error(reason)
  };

  // Writes, then traps: the write must be rolled back with the rest of the execution.
  public func add_then_trap(n : Nat) : async Nat {
    count += n;
    Prim.trap("add_then_trap: trapping after adding " # debug_show n)
  };

  // Never ends: the replica must stop it at the update instruction limit (IC0522).
  public func spin() : async Nat {
    var i = 0;
    loop { i += 1 }
  };

  // The same in a query, which has the (lower) query instruction limit.
  public query func spin_query() : async Nat {
    var i = 0;
    loop { i += 1 }
  };
}

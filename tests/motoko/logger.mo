// A canister that writes to its log: each greeting is printed with Debug.print, and `fail`
// prints then traps, so the log holds both kinds of record. `stats` replies with a record, whose
// field names a client can only show if it reads the candid:service metadata.
import Prim "mo:⛔";

persistent actor Logger {
  var greeted : Nat = 0;
  Prim.debugPrint("installed");  // runs in canister_init (and again in post_upgrade)

  public func greet(name : Text) : async Text {
    greeted += 1;
    Prim.debugPrint("greeting " # name);
    "Hello, " # name # "!"
  };

  public func fail(reason : Text) : async () {
    Prim.debugPrint("about to fail");
    Prim.trap(reason)
  };

  public query func stats() : async { greeted : Nat; last_word : Text } {
    { greeted = greeted; last_word = "bye" }
  };

  // ic0.canister_version: what canister_status reports as `version`.
  public query func version() : async Nat64 {
    Prim.canisterVersion()
  };
};

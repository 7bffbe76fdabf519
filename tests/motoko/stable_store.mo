// State across upgrades: `count` is persistent (it survives), `since_upgrade` is transient
// (it starts again from 0 after every upgrade).
persistent actor StableStore {
  var count : Nat = 0;
  transient var since_upgrade : Nat = 0;

  public func bump() : async (Nat, Nat) {
    count += 1;
    since_upgrade += 1;
    (count, since_upgrade)
  };

  public query func read() : async (Nat, Nat) {
    (count, since_upgrade)
  };
}

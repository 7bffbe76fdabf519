"""The engine for Python-class canisters (cdk.Canister subclasses), the quick way to write a
test canister: see `engine.PythonInstance`."""

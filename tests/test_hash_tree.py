"""Hash trees against the interface spec's worked example, and witnesses against full trees."""

import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from replica.hash_tree import StateTree, digest, lookup_path

SPEC_TREE_CBOR = bytes.fromhex(
    "8301830183024161830183018302417882034568656c6c6f810083024179820345776f726c6483024162820344676f6f64"
    "8301830241638100830241648203476d6f726e696e67"
)
SPEC_PRUNED_CBOR = bytes.fromhex(
    "83018301830241618301820458201b4feff9bef8131788b0c9dc6dbad6e81e524249c879e9f10f71ce3749f5a638830241"
    "79820345776f726c6483024162820458207b32ac0c6ba8ce35ac82c255fc7906f7fc130dab2a090f80fe12f9c2cae83ba6"
    "830182045820ec8324b8a1f1ac16bd2e806edba78006479c9877fed4eb464a25485465af601d830241648203476d6f726e"
    "696e67"
)
SPEC_ROOT = "eb5c5b2195e62d996b84c9bcc8259d19a83786a2f59e0878cec84c811f669aa0"
SPEC_STATE = {b"a": {b"x": b"hello", b"y": b"world"}, b"b": b"good", b"c": {}, b"d": b"morning"}


def test_spec_example_root_hash():
    assert digest(cbor2.loads(SPEC_TREE_CBOR)).hex() == SPEC_ROOT
    assert digest(cbor2.loads(SPEC_PRUNED_CBOR)).hex() == SPEC_ROOT


def test_spec_example_lookups_in_pruned_tree():
    pruned = cbor2.loads(SPEC_PRUNED_CBOR)
    expected = {
        (b"a", b"a"): ("unknown", None),
        (b"a", b"y"): ("found", b"world"),
        (b"aa",): ("absent", None),
        (b"ax",): ("absent", None),
        (b"b",): ("unknown", None),
        (b"bb",): ("unknown", None),
        (b"d",): ("found", b"morning"),
        (b"e",): ("absent", None),
    }
    for path, (outcome, value) in expected.items():
        result = lookup_path(path, pruned)
        assert (result.outcome, result.value) == (outcome, value), path


def test_witness_of_spec_state_answers_like_the_spec():
    tree = StateTree(SPEC_STATE)
    witness = tree.witness([[b"a", b"y"], [b"ax"], [b"d"]])
    assert digest(witness) == tree.root_hash == digest(tree.reveal_all())
    assert lookup_path([b"a", b"y"], witness).value == b"world"
    assert lookup_path([b"ax"], witness).outcome == "absent"
    assert lookup_path([b"d"], witness).value == b"morning"
    # Not requested: pruned away, so unknown rather than revealed.
    assert lookup_path([b"b"], witness).outcome == "unknown"
    assert lookup_path([b"a", b"x"], witness).outcome == "unknown"


def test_requesting_a_prefix_reveals_the_whole_subtree():
    witness = StateTree(SPEC_STATE).witness([[b"a"]])
    assert lookup_path([b"a", b"x"], witness).value == b"hello"
    assert lookup_path([b"a", b"y"], witness).value == b"world"


def test_empty_state_and_empty_subtree():
    assert lookup_path([b"x"], StateTree({}).witness([[b"x"]])).outcome == "absent"
    assert lookup_path([b"c", b"q"], StateTree(SPEC_STATE).witness([[b"c", b"q"]])).outcome == "absent"


labels = st.binary(min_size=0, max_size=3)
states = st.recursive(
    st.binary(max_size=4),
    lambda children: st.dictionaries(labels, children, max_size=5),
    max_leaves=20,
).filter(lambda s: isinstance(s, dict))


def _full_lookup(state, path):
    node = state
    for label in path:
        if not isinstance(node, dict) or label not in node:
            return ("absent", None)
        node = node[label]
    return ("found", node) if isinstance(node, bytes) else ("error", None)


@settings(max_examples=200, deadline=None)
@given(states, st.lists(st.lists(labels, min_size=1, max_size=3), min_size=1, max_size=4))
def test_witness_keeps_root_and_proves_requested_paths(state, paths):
    tree = StateTree(state)
    witness = tree.witness(paths)
    assert digest(witness) == tree.root_hash
    for path in paths:
        expected = _full_lookup(state, path)
        result = lookup_path(path, witness)
        if expected[0] == "found":
            assert (result.outcome, result.value) == expected
        elif expected[0] == "absent":
            # A path through a leaf ends at the leaf: absent either way.
            assert result.outcome == "absent"


def test_embedded_state_trees_hash_and_witness_like_plain_subtrees():
    embedded = StateTree({b"a": StateTree(SPEC_STATE[b"a"]), b"b": b"good", b"c": StateTree({}), b"d": b"morning"})
    plain = StateTree(SPEC_STATE)
    assert embedded.root_hash == plain.root_hash
    assert embedded.witness([[b"a", b"y"], [b"c"]]) == plain.witness([[b"a", b"y"], [b"c"]])


@settings(max_examples=200, deadline=None)
@given(
    st.dictionaries(st.binary(min_size=1, max_size=3), st.binary(max_size=3), max_size=12),
    st.lists(st.binary(min_size=1, max_size=3), max_size=4),
    st.lists(st.lists(st.binary(min_size=1, max_size=3), min_size=1, max_size=2), min_size=1, max_size=4),
)
def test_joined_runs_witness_like_one_level(level, cuts, paths):
    # Split one level into runs at arbitrary label boundaries, join them, and check that the
    # joined level proves the same lookups with a consistent root hash.
    bounds = sorted(set(cuts))
    runs, rest = [], dict(level)
    for bound in bounds:
        runs.append({k: v for k, v in rest.items() if k < bound})
        rest = {k: v for k, v in rest.items() if k >= bound}
    runs.append(rest)
    joined = StateTree.joined([StateTree(run) for run in runs])
    state = StateTree({b"level": joined, b"other": b"x"})
    requested = [[b"level", *path] for path in paths]
    witness = state.witness(requested)
    assert digest(witness) == state.root_hash == digest(state.reveal_all())
    for path in requested:
        expected = _full_lookup({b"level": level}, path)
        result = lookup_path(path, witness)
        if expected[0] == "found":
            assert (result.outcome, result.value) == expected
        elif expected[0] == "absent":
            assert result.outcome == "absent"


def test_joined_runs_must_be_ordered():
    with pytest.raises(ValueError, match="increasing, disjoint"):
        StateTree.joined([StateTree({b"b": b"1"}), StateTree({b"a": b"2"})])

"""`icllama identity new|use|whoami|list`: the PEM identities that sign requests."""

from __future__ import annotations

import argparse

from client.identity import DEFAULT_KEY_TYPE, KEY_TYPES, IdentityStore


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("identity", help="create, select and show signing identities (dfx-style PEM)")
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")

    new = actions.add_parser("new", help="create an identity (a new key in a dfx-style identity.pem)")
    new.add_argument("name", help="the new identity's name")
    new.add_argument("--key-type", choices=KEY_TYPES, default=DEFAULT_KEY_TYPE,
                     help=f"signature scheme (default {DEFAULT_KEY_TYPE}, as dfx)")
    new.add_argument("--force", action="store_true", help="replace an existing identity of that name")
    new.set_defaults(func=_new)

    use = actions.add_parser("use", help="select the identity that commands use without --identity")
    use.add_argument("name", help="one of ours, or one of dfx's")
    use.set_defaults(func=_use)

    whoami = actions.add_parser("whoami", help="print the principal of the selected (or given) identity")
    whoami.add_argument("--identity", help="a name or a PEM path (default: the selected identity)")
    whoami.set_defaults(func=_whoami)

    listing = actions.add_parser("list", help="list our identities and dfx's")
    listing.set_defaults(func=_list)


def _new(args: argparse.Namespace) -> int:
    store = IdentityStore.from_environment()
    identity = store.create(args.name, args.key_type, force=args.force)
    print(f"created {identity.key_type} identity {args.name!r} in {identity.source}")
    print(f"principal: {identity.principal}")
    return 0


def _use(args: argparse.Namespace) -> int:
    identity = IdentityStore.from_environment().use(args.name)
    print(f"using identity {args.name!r} ({identity.principal})")
    return 0


def _whoami(args: argparse.Namespace) -> int:
    print(IdentityStore.from_environment().resolve(args.identity).principal)
    return 0


def _list(args: argparse.Namespace) -> int:
    store = IdentityStore.from_environment()
    ours, dfx = store.names()
    selected = store.selected()
    for name in ours:
        print(f"{'*' if name == selected else ' '} {name}")
    for name in dfx:
        if name not in ours:
            print(f"{'*' if name == selected else ' '} {name} (dfx, {store.dfx_home / 'identity' / name})")
    if not ours and not dfx:
        print("no identities yet; `icllama identity new NAME` creates one (and 'default' is made on first use)")
    return 0

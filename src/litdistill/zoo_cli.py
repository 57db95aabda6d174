"""``litdistill-zoo list | fetch NAME... | path NAME | verify [NAME...]``: the CLI of
:mod:`litdistill.zoo`.

Exit status: 0 on success, 1 when ``verify`` finds a damaged asset, 2 on an error the user
can fix (an unknown name, an asset that is not fetched, a failed download).
"""

from __future__ import annotations

import argparse
import logging
import sys

from litdistill import zoo
from litdistill.errors import cli_main


def _fetched_cell(health: zoo.Health) -> str:
    if health.ok:
        return "yes"
    if health.state == "absent":
        return "no"
    if health.state == "outdated":
        return "unverified (fetch to rebuild)"
    return f"corrupt ({health.file})"


def _print_table() -> None:
    from rich.console import Console  # imported here: only the CLI table needs rich
    from rich.table import Table

    table = Table("name", "kind", "fetched", "description", title=f"zoo: {zoo.home() / 'zoo'}")
    for a in zoo.ASSETS.values():
        table.add_row(a.name, a.kind, _fetched_cell(zoo.check(a.name)), a.description)
    Console().print(table)


def _verify(names: list[str]) -> int:
    """Prints ``NAME: ok`` or what is wrong for each asset; 1 when any is not intact."""
    checked = {name: zoo.check(name) for name in names or zoo.ASSETS}
    if not names:  # every fetched asset: skip the ones never fetched
        checked = {n: h for n, h in checked.items() if h.state != "absent"}
        if not checked:
            print("no zoo asset is fetched")
    for name, health in checked.items():
        if health.ok or health.state == "absent":
            print(f"{name}: {'ok' if health.ok else 'not fetched'}")
        else:
            print(f"{name}: {health.state}: {health.detail}; run `litdistill-zoo fetch {name}` "
                  "to rebuild it")
    return 0 if all(h.ok for h in checked.values()) else 1


@cli_main
def _run(args: argparse.Namespace) -> int:
    names = getattr(args, "names", [])
    if args.command == "fetch" and "all" in names:
        names = list(zoo.ASSETS)
    for name in names:  # check every name before the first (slow) download or hash
        zoo.asset_dir(name)  # raises ZooError listing the known names
    if args.command == "list":
        _print_table()
    elif args.command == "verify":
        return _verify(names)
    elif args.command == "fetch":
        for name in names:
            print(zoo.fetch(name, force=args.force, repair=not args.no_repair))
    elif not (health := zoo.check(args.name)).ok:
        raise zoo.ZooError(health.error(args.name))
    else:
        print(zoo.asset_dir(args.name))
    return 0


def main(argv: list[str] | None = None) -> int:
    """Runs ``litdistill-zoo list | fetch NAME... | path NAME | verify [NAME...]``; returns
    the exit status."""
    parser = argparse.ArgumentParser(prog="litdistill-zoo", description=zoo.__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="show the assets and whether each is fetched and intact")
    fetch_cmd = sub.add_parser("fetch", help="download, verify and cache assets (a corrupt "
                                             "cached copy is rebuilt)")
    fetch_cmd.add_argument("names", nargs="+", metavar="NAME", help="asset name, or 'all'")
    fetch_cmd.add_argument("--force", action="store_true", help="rebuild even if present")
    fetch_cmd.add_argument("--no-repair", action="store_true",
                           help="fail on a corrupt cached copy instead of rebuilding it")
    sub.add_parser("path", help="print the folder of a fetched asset").add_argument("name")
    verify_cmd = sub.add_parser("verify", help="check cached assets file by file against the "
                                               "sha256 recorded at fetch; exit 1 if any is bad")
    verify_cmd.add_argument("names", nargs="*", metavar="NAME",
                            help="asset names (default: every fetched asset)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    try:
        return _run(args)
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

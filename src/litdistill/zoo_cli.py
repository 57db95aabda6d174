"""``litdistill-zoo list | fetch NAME... | path NAME``: the CLI of :mod:`litdistill.zoo`."""

from __future__ import annotations

import argparse
import logging
import sys

from litdistill import zoo
from litdistill.errors import LitDistillError


def _print_table() -> None:
    from rich.console import Console  # imported here: only the CLI table needs rich
    from rich.table import Table

    table = Table("name", "kind", "fetched", "description", title=f"zoo: {zoo.home() / 'zoo'}")
    for a in zoo.ASSETS.values():
        table.add_row(a.name, a.kind, "yes" if zoo.is_fetched(a.name) else "no", a.description)
    Console().print(table)


def _run(args: argparse.Namespace) -> int:
    if args.command == "list":
        _print_table()
    elif args.command == "fetch":
        names = list(zoo.ASSETS) if "all" in args.names else args.names
        for name in names:  # check every name before the first (slow) download
            zoo.asset_dir(name)  # raises ZooError listing the known names
        for name in names:
            print(zoo.fetch(name, force=args.force))
    elif not zoo.is_fetched(args.name):
        raise zoo.ZooError(f"{args.name} is not fetched; run `litdistill-zoo fetch {args.name}`")
    else:
        print(zoo.asset_dir(args.name))
    return 0


def main(argv: list[str] | None = None) -> int:
    """Runs ``litdistill-zoo list | fetch NAME... | path NAME``; returns the exit status."""
    parser = argparse.ArgumentParser(prog="litdistill-zoo", description=zoo.__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="show the assets and whether each is fetched")
    fetch_cmd = sub.add_parser("fetch", help="download, verify and cache assets")
    fetch_cmd.add_argument("names", nargs="+", metavar="NAME", help="asset name, or 'all'")
    fetch_cmd.add_argument("--force", action="store_true", help="rebuild even if present")
    sub.add_parser("path", help="print the folder of a fetched asset").add_argument("name")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    try:
        return _run(args)
    except LitDistillError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

"""`python -m layerfill.testimages build --out DIR [--large-size N]` and `push --registry H:P --dir DIR`."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from layerfill.testimages.catalog import DEFAULT_LARGE_SIZE, build_catalog
from layerfill.testimages.push import PushError, push_tree


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m layerfill.testimages", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    build = commands.add_parser("build", help="write the seed images as OCI layouts and catalog.json")
    build.add_argument("--out", type=Path, required=True)
    build.add_argument(
        "--large-size",
        type=int,
        default=DEFAULT_LARGE_SIZE,
        help=f"bytes of random data in demo/large:1 (default {DEFAULT_LARGE_SIZE}; 0 leaves it out)",
    )
    push = commands.add_parser("push", help="push every layout under --dir with skopeo")
    push.add_argument("--registry", required=True, help="host:port of the registry")
    push.add_argument("--dir", type=Path, required=True)
    push.add_argument("--tls-verify", action="store_true")
    push.add_argument("--format", dest="dest_format", choices=["oci", "v2s2"], default=None)
    args = parser.parse_args(argv)

    try:
        if args.command == "build":
            catalog = build_catalog(args.out, large_size=args.large_size)
            json.dump(catalog.to_dict(), sys.stdout, indent=2, sort_keys=True)
            sys.stdout.write("\n")
        else:
            for ref in push_tree(args.dir, args.registry, tls_verify=args.tls_verify, dest_format=args.dest_format):
                print(ref)
    except (PushError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Write infra/env/*.env from the *.env.example files, each placeholder a fresh secret.

    python infra/env/make_env.py [--dir infra/env] [--force]

A placeholder is a `change-me-<name>` word; the same word gets the same secret in every
file (the PostgreSQL password in postgres.env and in the database URLs, the API token in
fovea.env and dashboard.env). Files are written 0600; existing ones are kept unless --force.
"""

from __future__ import annotations

import argparse
import os
import re
import secrets
import sys
from pathlib import Path

PLACEHOLDER = re.compile(r"change-me-[a-z0-9-]+")


def render(examples: dict[str, str]) -> dict[str, str]:
    """The files' text with every placeholder replaced, consistently across files."""
    chosen: dict[str, str] = {}

    def secret(match: re.Match[str]) -> str:
        # hex: safe inside URLs (database passwords) and as Ray's token (Ray makes 64 hex)
        return chosen.setdefault(match.group(0), secrets.token_hex(32))

    return {name: PLACEHOLDER.sub(secret, text) for name, text in examples.items()}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, default=Path(__file__).parent)
    parser.add_argument("--force", action="store_true", help="overwrite existing .env files")
    args = parser.parse_args(argv)
    examples = {
        p.name.removesuffix(".example"): p.read_text()
        for p in sorted(args.dir.glob("*.env.example"))
    }
    if not examples:
        print(f"no *.env.example in {args.dir}", file=sys.stderr)
        return 1
    existing = [name for name in examples if (args.dir / name).exists()]
    if existing and not args.force:
        print(f"kept existing {', '.join(existing)} (--force to replace)", file=sys.stderr)
        return 1
    for name, text in render(examples).items():
        path = args.dir / name
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        os.chmod(path, 0o600)
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""Regenerate the shipped graphs: ``python -m pipeenv.zoo [NAME ...] [--check]``.

Writes ``pipeenv/zoo/data/<name>.json`` for the named models (all by default); with
``--check``, writes nothing and exits 1 when a shipped file differs from a fresh trace.
"""

from __future__ import annotations

import argparse
import sys
import tempfile

from pipeenv import zoo


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeenv.zoo", description=__doc__)
    parser.add_argument("names", nargs="*", help="models (all by default)")
    parser.add_argument("--check", action="store_true", help="compare instead of writing")
    args = parser.parse_args()
    names = args.names or zoo.names()
    for name in names:
        zoo.spec(name)
    if not args.check:
        for path in zoo.regenerate(names):
            print(f"wrote {path}")
        return 0
    stale = []
    with tempfile.TemporaryDirectory() as tmp:
        for path in zoo.regenerate(names, tmp):
            if path.read_text() != (zoo.DATA_DIR / path.name).read_text():
                stale.append(path.stem)
    print(f"stale: {', '.join(stale)}" if stale else f"all {len(names)} shipped graphs up to date")
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())

"""``python -m streamlearn.contract.corpus [--write | --check]``: regenerate the corpus files
from the reference (``--write``), or say whether the checked-in ones are current (``--check``,
the default; exit status 1 when not)."""

from __future__ import annotations

import argparse
import sys

from streamlearn.contract.corpus import generate


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m streamlearn.contract.corpus")
    parser.add_argument("--write", action="store_true", help="write the corpus files")
    parser.add_argument("--check", action="store_true", help="only compare (the default)")
    args = parser.parse_args(argv)
    stale = []
    for path, data in generate().items():
        if args.write:
            path.write_bytes(data)
            print(f"wrote {path.name}: {len(data.splitlines())} lines")
        elif not path.exists() or path.read_bytes() != data:
            stale.append(path.name)
    if stale:
        print(f"stale: {', '.join(stale)}; run python -m streamlearn.contract.corpus --write",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

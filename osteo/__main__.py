"""python -m osteo --version: the installed version and the commit it was built from."""

from __future__ import annotations

import argparse


def main(argv: list[str] | None = None) -> int:
    from osteo.provenance import library_versions, version_string

    ap = argparse.ArgumentParser(
        prog="python -m osteo",
        description="Osteoporosis screening from dental panoramic radiographs. Commands: "
                    "python -m osteo.train, osteo.report, osteo.predict, osteo.data.describe, "
                    "osteo.data.preview, osteo.data.phantom.")
    ap.add_argument("--version", action="store_true", help="print the version and commit, then exit")
    a = ap.parse_args(argv)
    if a.version:
        print(version_string())
        print(", ".join(f"{k} {v}" for k, v in library_versions().items()))
        return 0
    ap.print_help()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

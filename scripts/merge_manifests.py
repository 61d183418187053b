"""Join manifests into one, paths made absolute: e.g. a calibration and a tune set.

``python scripts/merge_manifests.py --out DIR/manifest.csv A/manifest.csv B/manifest.csv``
writes every row of the named manifests (splits and labels as they are) to one
CSV that ``medvision calibrate --manifest`` or ``medvision train --manifest`` can
read; a study or patient in two of them is an error.
"""

from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path

from medvision.data.manifest import ManifestError, merge_manifests


def main() -> None:
    """Merge the manifests; print the studies per split."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("manifests", type=Path, nargs="+")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    try:
        rows = merge_manifests(args.manifests, args.out)
    except ManifestError as error:
        raise SystemExit(f"error: {error}") from None
    splits = Counter(row.split or "(none)" for row in rows)
    counts = ", ".join(f"{count} {split}" for split, count in sorted(splits.items()))
    print(f"{len(rows)} studies in {args.out}: {counts}")


if __name__ == "__main__":
    main()

"""Gather one split of a manifest for validation: its studies (linked) and its manifest.

``python scripts/held_out_split.py --manifest M --split test --out DIR`` writes
``DIR/manifest.csv`` with only the rows of that split (paths made absolute) and
``DIR/data/<StudyInstanceUID>``, a link to each of their study folders, so that
``medvision validate --model NAME --data DIR/data --manifest DIR/manifest.csv``
analyses the held-out studies and nothing else.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from medvision.data.manifest import read_manifest, with_absolute_paths, write_manifest


def main() -> None:
    """Write the split's manifest and links; print how many studies it holds."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--manifest", type=Path, required=True)
    parser.add_argument("--split", default="test")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    manifest = args.manifest
    rows = [row for row in read_manifest(manifest) if row.split == args.split]
    if not rows:
        raise SystemExit(f"{manifest} has no study of split '{args.split}'")
    data = args.out / "data"
    data.mkdir(parents=True, exist_ok=True)
    kept = []
    for row in rows:
        absolute = with_absolute_paths(row, manifest)
        link = data / row.study_instance_uid
        if not link.is_symlink():
            link.symlink_to(absolute.path, target_is_directory=True)
        kept.append(absolute)
    write_manifest(kept, args.out / "manifest.csv")
    print(f"{len(kept)} studies of split '{args.split}' in {args.out}")


if __name__ == "__main__":
    main()

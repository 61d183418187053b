"""Print, per finding, how many studies were flagged and how that compares with the truth.

Where the predictions carry a grade (the fundus model's DR grade), also how many
studies were graded exactly and within one grade of the phantom's.

Usage: python scripts/summarise_predictions.py PREDICTIONS.csv MANIFEST.csv
"""

from __future__ import annotations

import csv
import sys
from collections import defaultdict
from pathlib import Path

from medvision.data.manifest import read_manifest
from medvision.grading import GRADE_SCALES


def main() -> None:
    predictions, manifest = Path(sys.argv[1]), Path(sys.argv[2])
    rows = {row.study_instance_uid: row for row in read_manifest(manifest)}
    counts: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0, 0])  # tp, fp, fn, tn
    graded: dict[str, list[tuple[int, int]]] = defaultdict(list)  # (true, reported)
    with predictions.open(newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            study = rows[row["study_instance_uid"]]
            present = study.labels[row["finding"]] == 1
            flagged = row["flagged"] == "1"
            counts[row["finding"]][(not present) + 2 * (not flagged)] += 1
            scale = GRADE_SCALES.get(study.modality)
            if row.get("grade") and scale is not None and scale.name in study.extra:
                graded[scale.title].append((int(study.extra[scale.name]), int(row["grade"])))
    header = ("finding", "studies", "flagged", "present", "TP", "FP", "FN")
    print(f"{header[0]:<18} " + " ".join(f"{h:>7}" for h in header[1:4]), end=" ")
    print(" ".join(f"{h:>4}" for h in header[4:]))
    for finding, (tp, fp, fn, tn) in counts.items():
        print(
            f"{finding:<18} {tp + fp + fn + tn:>7} {tp + fp:>7} {tp + fn:>7} "
            f"{tp:>4} {fp:>4} {fn:>4}"
        )
    for title, pairs in graded.items():
        exact = sum(true == reported for true, reported in pairs)
        close = sum(abs(true - reported) <= 1 for true, reported in pairs)
        print(f"{title}: {len(pairs)} studies graded, {exact} exactly, {close} within one grade")
    print("Phantoms only; not for clinical use.")


if __name__ == "__main__":
    main()

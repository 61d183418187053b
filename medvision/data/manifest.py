"""The manifest: one row per labelled study — the format phantoms and hospitals share.

See ``docs/manifest.md`` for the column definitions.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from medvision.modality import EXTRA_COLUMNS, FINDINGS, Modality, all_findings

#: Columns every manifest has, in order; finding columns and extra columns follow.
BASE_COLUMNS: tuple[str, ...] = (
    "study_instance_uid",
    "modality",
    "path",
    "site",
    "manufacturer",
    "manufacturer_model",
    "sex",
    "age",
    "ethnicity",
    "split",
    "patient_id",
    "annotations",
    "masks",
)
#: Columns a manifest must have (the rest may be empty or absent).
REQUIRED_COLUMNS: tuple[str, ...] = ("study_instance_uid", "modality", "path")
SPLITS: tuple[str, ...] = ("train", "tune", "calibration", "test")


class ManifestError(ValueError):
    """A manifest (or labels file) that cannot be used; the message says which row and why."""


@dataclass(frozen=True)
class ManifestRow:
    """One labelled study.

    Attributes
    ----------
    path, annotations, masks
        Relative to the manifest's folder unless absolute; ``annotations`` and
        ``masks`` are ``None`` when there is no such ground truth.
    labels
        Per finding of the modality, 1 (present) or 0 (absent); a finding left
        empty in the CSV is absent from this mapping (not assessed).
    extra
        Further ground-truth columns (``dr_grade``, ``breast_density`` …).
    """

    study_instance_uid: str
    modality: Modality
    path: Path
    site: str = ""
    manufacturer: str = ""
    manufacturer_model: str = ""
    sex: str = ""
    age: int | None = None
    ethnicity: str = ""
    split: str = ""
    patient_id: str = ""
    labels: dict[str, int] = field(default_factory=dict)
    annotations: Path | None = None
    masks: Path | None = None
    extra: dict[str, str] = field(default_factory=dict)

    def as_csv_row(self) -> dict[str, str]:
        """Return the row as CSV cells (finding columns included)."""
        cells = {
            "study_instance_uid": self.study_instance_uid,
            "modality": self.modality.value,
            "path": self.path.as_posix(),
            "site": self.site,
            "manufacturer": self.manufacturer,
            "manufacturer_model": self.manufacturer_model,
            "sex": self.sex,
            "age": "" if self.age is None else str(self.age),
            "ethnicity": self.ethnicity,
            "split": self.split,
            "patient_id": self.patient_id,
            "annotations": "" if self.annotations is None else self.annotations.as_posix(),
            "masks": "" if self.masks is None else self.masks.as_posix(),
        }
        cells.update({name: str(value) for name, value in self.labels.items()})
        cells.update(self.extra)
        return cells


def manifest_columns(rows: Sequence[ManifestRow]) -> list[str]:
    """Return the column order for ``rows``: base, then findings, then extra columns."""
    modalities = {row.modality for row in rows}
    columns = list(BASE_COLUMNS)
    for name in all_findings():
        if any(name in FINDINGS[m] for m in modalities):
            columns.append(name)
    for modality in Modality:
        if modality in modalities:
            columns.extend(c for c in EXTRA_COLUMNS[modality] if c not in columns)
    for row in rows:
        columns.extend(c for c in row.extra if c not in columns)
    return columns


def write_manifest(rows: Sequence[ManifestRow], path: Path) -> None:
    """Write ``rows`` to ``path`` as CSV (cells of findings that do not apply stay empty)."""
    columns = manifest_columns(rows)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, restval="")
        writer.writeheader()
        for row in rows:
            writer.writerow(row.as_csv_row())


def _optional_path(text: str) -> Path | None:
    return Path(text) if text.strip() else None


def parse_label(text: str, column: str, line: int) -> int | None:
    """Parse a 0/1 finding cell; empty means not assessed.

    Raises
    ------
    ManifestError
        If the cell is neither empty, 0 nor 1.
    """
    value = text.strip()
    if value == "":
        return None
    if value in {"0", "1"}:
        return int(value)
    raise ManifestError(f"line {line}: column '{column}' must be 0 or 1 (or empty), got '{text}'")


def iter_study_cells(
    path: Path, required: Sequence[str]
) -> Iterator[tuple[int, str, dict[str, str], list[str]]]:
    """Yield ``(line, study UID, cells, columns)`` for each row of a study CSV.

    Checks what every study CSV (manifest or labels file) must satisfy: the
    ``required`` columns exist, each row has a study UID that no earlier row has,
    finding cells are 0, 1 or empty, and ``split`` is empty or a known split.

    Raises
    ------
    ManifestError
        Naming the file and line of the first problem.
    """
    findings = set(all_findings())
    with path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        columns = [c for c in reader.fieldnames or [] if c]
        missing = [c for c in required if c not in columns]
        if missing:
            raise ManifestError(f"{path}: missing required column(s) {', '.join(missing)}")
        seen: dict[str, int] = {}
        for line, raw in enumerate(reader, start=2):
            cells = {c: (raw.get(c) or "").strip() for c in columns}
            uid = cells["study_instance_uid"]
            if not uid:
                raise ManifestError(f"{path}: line {line}: empty study_instance_uid")
            if uid in seen:
                raise ManifestError(f"{path}: line {line}: study {uid} already on line {seen[uid]}")
            seen[uid] = line
            try:
                for name in findings.intersection(columns):
                    parse_label(cells[name], name, line)
            except ManifestError as error:
                raise ManifestError(f"{path}: {error}") from None
            split = cells.get("split", "")
            if split and split not in SPLITS:
                raise ManifestError(
                    f"{path}: line {line}: unknown split '{split}' (expected {', '.join(SPLITS)})"
                )
            yield line, uid, cells, columns


def read_manifest(path: Path) -> list[ManifestRow]:
    """Read and validate a manifest.

    Parameters
    ----------
    path
        The CSV file.

    Returns
    -------
    list of ManifestRow
        One per data line, in file order.

    Raises
    ------
    ManifestError
        For a missing required column, an unknown modality, a label outside 0/1,
        a bad age, an unknown split or a duplicate study (the message names the line).
    """
    known = set(BASE_COLUMNS) | set(all_findings())
    rows: list[ManifestRow] = []
    for line, uid, cells, columns in iter_study_cells(path, REQUIRED_COLUMNS):
        try:
            modality = Modality.parse(cells["modality"])
        except ValueError as error:
            raise ManifestError(f"{path}: line {line}: {error}") from None
        labels = {
            name: int(cells[name]) for name in FINDINGS[modality] if cells.get(name, "") != ""
        }
        age_text = cells.get("age", "")
        if age_text and not (age_text.isdigit() and int(age_text) <= 150):
            raise ManifestError(f"{path}: line {line}: age must be whole years, got '{age_text}'")
        rows.append(
            ManifestRow(
                study_instance_uid=uid,
                modality=modality,
                path=Path(cells["path"]),
                site=cells.get("site", ""),
                manufacturer=cells.get("manufacturer", ""),
                manufacturer_model=cells.get("manufacturer_model", ""),
                sex=cells.get("sex", ""),
                age=int(age_text) if age_text else None,
                ethnicity=cells.get("ethnicity", ""),
                split=cells.get("split", ""),
                patient_id=cells.get("patient_id", ""),
                labels=labels,
                annotations=_optional_path(cells.get("annotations", "")),
                masks=_optional_path(cells.get("masks", "")),
                extra={c: cells[c] for c in columns if c not in known and cells[c] != ""},
            )
        )
    return rows


def resolve(manifest_path: Path, relative: Path) -> Path:
    """Return ``relative`` resolved against the manifest's folder (absolute paths unchanged)."""
    return relative if relative.is_absolute() else manifest_path.parent / relative


def with_absolute_paths(row: ManifestRow, manifest_path: Path) -> ManifestRow:
    """Return ``row`` with its study folder, annotations and masks as absolute paths.

    A row read from ``manifest_path`` then means the same files from any folder.
    """
    return replace(
        row,
        path=resolve(manifest_path, row.path).resolve(),
        annotations=None
        if row.annotations is None
        else resolve(manifest_path, row.annotations).resolve(),
        masks=None if row.masks is None else resolve(manifest_path, row.masks).resolve(),
    )


def merge_manifests(manifests: Sequence[Path], out: Path) -> list[ManifestRow]:
    """Write one manifest holding every row of ``manifests``, paths made absolute.

    Splits, labels and demographics are kept as they are, so phantom sets generated
    separately (say a ``calibration`` and a ``tune`` set from different seeds) become
    one manifest with both splits.

    Parameters
    ----------
    manifests
        The manifests to join, in order (rows keep that order).
    out
        Where to write the merged CSV (its folder is created).

    Returns
    -------
    list of ManifestRow
        The rows written.

    Raises
    ------
    ManifestError
        If no manifest is given, a manifest is invalid (:func:`read_manifest`), or a
        study or a patient appears in more than one of them (joined sets must not
        share a study, and a patient must stay in one split).
    """
    if not manifests:
        raise ManifestError("no manifest to merge")
    rows: list[ManifestRow] = []
    study_source: dict[str, Path] = {}
    patient_source: dict[str, Path] = {}
    for manifest in manifests:
        for row in read_manifest(manifest):
            if row.study_instance_uid in study_source:
                raise ManifestError(
                    f"study {row.study_instance_uid} is in both "
                    f"{study_source[row.study_instance_uid]} and {manifest}"
                )
            study_source[row.study_instance_uid] = manifest
            if row.patient_id:
                earlier = patient_source.setdefault(row.patient_id, manifest)
                if earlier != manifest:
                    raise ManifestError(
                        f"patient {row.patient_id} is in both {earlier} and {manifest}"
                    )
            rows.append(with_absolute_paths(row, manifest))
    write_manifest(rows, out)
    return rows


def labelled_rows(
    manifest: Path,
    modality: Modality,
    split: str,
    findings: Sequence[str],
    max_studies: int | None = None,
) -> list[ManifestRow]:
    """Return the manifest's rows of ``modality`` in ``split`` with every one of ``findings``.

    At most ``max_studies`` rows (in manifest order) when that is set.
    """
    rows = [
        row
        for row in read_manifest(manifest)
        if row.modality == modality
        and row.split == split
        and all(name in row.labels for name in findings)
    ]
    return rows[:max_studies] if max_studies else rows

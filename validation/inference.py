"""Run one registered model over a folder of studies for the validation suite, cached.

``medvision validate --model NAME --data DIR`` analyses ``DIR`` with model ``NAME``
alone (as ``medvision predict`` would) and writes its predictions CSV under
``OUT/cache/``, named by the model and a key made of the model's weights SHA-256
and the sorted SOPInstanceUIDs of the DICOM files in ``DIR``. A second run over the
same instances with the same weights finds that file and skips inference; new,
changed or removed instances, or other weights, give a new key. For a CT
segmenter the SEG objects (``segmentations-…``) and the nodule candidates
(``detections-….csv``) are kept under the same key.
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from medvision.dicom.reading import DicomReadError, iter_files, read_header
from medvision.modality import Modality
from medvision.models.registry import load_registry, read_entry
from medvision.pipeline import analyze, write_predictions
from medvision.pipeline.predictions_csv import write_detections
from medvision.pipeline.reports import write_segmentations

#: Folder of cached predictions, inside the report's output folder.
CACHE_FOLDER = "cache"


def instances_key(data: Path) -> str:
    """Return the SHA-256 of the sorted SOPInstanceUIDs of the DICOM files below ``data``."""
    uids = []
    for path in iter_files(data):
        try:
            uid = str(read_header(path).get("SOPInstanceUID", ""))
        except DicomReadError:
            continue
        if uid:
            uids.append(uid)
    return hashlib.sha256("\n".join(sorted(uids)).encode("ascii")).hexdigest()


@dataclass(frozen=True)
class ModelRun:
    """Where a model's run over a folder left its outputs.

    Attributes
    ----------
    predictions
        The predictions CSV.
    segmentations, detections
        For a CT segmenter: the folder of its SEG objects and its candidates CSV
        (LUNA16 format); ``None`` for a classifier.
    cached
        Whether the run was found in the cache rather than made now.
    """

    predictions: Path
    segmentations: Path | None
    detections: Path | None
    cached: bool


def model_predictions(
    model: str,
    registry: Path,
    data: Path,
    out: Path,
    *,
    device: str = "auto",
    progress: bool = True,
) -> ModelRun:
    """Run ``model`` over ``data``, or find that run in the cache (see the module docstring).

    A CT segmenter's masks are also written as SEG objects and its nodule
    candidates as a LUNA16-format CSV beside the cached predictions, under the
    same key, for the segmentation and detection figures.

    Raises
    ------
    ValueError
        If ``registry`` has no model ``model`` (the message lists the ones it has).
    """
    entries = load_registry(registry)
    if model not in entries:
        known = ", ".join(sorted(entries)) or "none"
        raise ValueError(f"--model: no model '{model}' in {registry} (models there: {known})")
    entry = entries[model]
    key = hashlib.sha256(f"{entry.weights_sha256}\n{instances_key(data)}".encode()).hexdigest()
    stem = out / CACHE_FOLDER / f"{model}-{key[:16]}"
    cached = stem.with_name(f"predictions-{stem.name}.csv")
    segmentations = stem.with_name(f"segmentations-{stem.name}")
    detections = stem.with_name(f"detections-{stem.name}.csv")
    is_ct = entry.modality == Modality.CT
    if cached.is_file() and (not is_ct or (segmentations.is_dir() and detections.is_file())):
        return ModelRun(
            cached, segmentations if is_ct else None, detections if is_ct else None, True
        )
    entry_file = next(p for p in sorted(registry.glob("*.json")) if read_entry(p).name == model)
    with tempfile.TemporaryDirectory() as folder:
        alone = Path(folder)
        shutil.copy2(entry_file, alone / entry_file.name)
        shutil.copy2(registry / entry.weights_file, alone / entry.weights_file)
        run = analyze([data], registry=alone, device=device, progress=progress)
    if is_ct:
        shutil.rmtree(segmentations, ignore_errors=True)
        write_segmentations(run, [data], segmentations)
        write_detections(run, detections)
    write_predictions(run, cached)  # last: its presence marks a complete run
    return ModelRun(cached, segmentations if is_ct else None, detections if is_ct else None, False)

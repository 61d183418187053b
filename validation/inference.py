"""Run one registered model over a folder of studies for the validation suite, cached.

``medvision validate --model NAME --data DIR`` analyses ``DIR`` with model ``NAME``
alone (as ``medvision predict`` would) and writes its predictions CSV under
``OUT/cache/``, named by the model and a key made of the model's weights SHA-256
and the sorted SOPInstanceUIDs of the DICOM files in ``DIR``. A second run over the
same instances with the same weights finds that file and skips inference; new,
changed or removed instances, or other weights, give a new key.
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
from pathlib import Path

from medvision.dicom.reading import DicomReadError, iter_files, read_header
from medvision.models.registry import load_registry, read_entry
from medvision.pipeline import analyze, write_predictions

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


def model_predictions(
    model: str,
    registry: Path,
    data: Path,
    out: Path,
    *,
    device: str = "auto",
    progress: bool = True,
) -> tuple[Path, bool]:
    """Return the predictions CSV of ``model`` over ``data``, and whether it came from the cache.

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
    cached = out / CACHE_FOLDER / f"predictions-{model}-{key[:16]}.csv"
    if cached.is_file():
        return cached, True
    entry_file = next(p for p in sorted(registry.glob("*.json")) if read_entry(p).name == model)
    with tempfile.TemporaryDirectory() as folder:
        alone = Path(folder)
        shutil.copy2(entry_file, alone / entry_file.name)
        shutil.copy2(registry / entry.weights_file, alone / entry.weights_file)
        run = analyze([data], registry=alone, device=device, progress=progress)
    write_predictions(run, cached)
    return cached, False

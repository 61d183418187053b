from pathlib import Path

import pytest
import torch

from medvision.modality import Modality
from medvision.models.networks import build_network
from medvision.models.registry import (
    ModelEntry,
    RegistryError,
    Task,
    WeightsIntegrityError,
    load_model,
    load_registry,
    read_entry,
    save_model,
)

NETWORK = {
    "architecture": "densenet",
    "spatial_dims": 2,
    "in_channels": 1,
    "out_channels": 2,
    "init_features": 4,
    "growth_rate": 4,
    "block_config": [1, 1],
}


def _entry(**changes: object) -> ModelEntry:
    values: dict[str, object] = {
        "name": "tiny-cxr",
        "version": "0.0.1",
        "modality": Modality.CXR,
        "findings": ("nodule", "pneumothorax"),
        "task": Task.CLASSIFICATION,
        "network": NETWORK,
        "transforms": {"name": "cxr", "input_size": [32, 32]},
        "input_size": (32, 32),
        "thresholds": {"nodule": 0.3, "pneumothorax": 0.25},
    }
    values.update(changes)
    return ModelEntry(**values)  # type: ignore[arg-type]


def test_saved_model_loads_back_with_identical_outputs(tmp_path: Path) -> None:
    torch.manual_seed(0)
    network = build_network(NETWORK).eval()
    written = save_model(network, _entry(), tmp_path)
    assert len(written.weights_sha256) == 64
    assert load_registry(tmp_path) == {"tiny-cxr": written}
    loaded = load_model(written, tmp_path)
    image = torch.rand(1, 1, 32, 32)
    with torch.no_grad():
        expected = build_network(NETWORK).eval()
        expected.load_state_dict(
            {
                k: v.half().float() if v.is_floating_point() else v
                for k, v in network.state_dict().items()
            }
        )
        assert torch.equal(loaded(image), expected(image))


def test_weights_are_stored_in_half_precision(tmp_path: Path) -> None:
    written = save_model(build_network(NETWORK), _entry(), tmp_path)
    state = torch.load(tmp_path / written.weights_file, weights_only=True)
    floating = [v.dtype for v in state.values() if v.is_floating_point()]
    assert floating and set(floating) == {torch.float16}


def test_tampered_weights_are_refused(tmp_path: Path) -> None:
    written = save_model(build_network(NETWORK), _entry(), tmp_path)
    path = tmp_path / written.weights_file
    data = bytearray(path.read_bytes())
    data[-100] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(WeightsIntegrityError, match="refusing to load"):
        load_model(written, tmp_path)


def test_missing_weights_are_reported(tmp_path: Path) -> None:
    with pytest.raises(WeightsIntegrityError, match="is missing"):
        load_model(_entry(weights_file="absent.pt", weights_sha256="0" * 64), tmp_path)


def test_entry_round_trips_through_json(tmp_path: Path) -> None:
    path = tmp_path / "tiny-cxr.json"
    path.write_text(_entry().to_json())
    assert read_entry(path) == _entry()


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"findings": ("nodule", "tumour")}, "finding\\(s\\) tumour are not cxr findings"),
        ({"thresholds": {"nodule": 1.5}}, "threshold of nodule must be in \\[0, 1\\], got 1.5"),
        ({"thresholds": {"cardiomegaly": 0.5}}, "threshold for unknown finding cardiomegaly"),
    ],
)
def test_invalid_entries_are_rejected(changes: dict[str, object], message: str) -> None:
    with pytest.raises(RegistryError, match=message):
        _entry(**changes)


def test_unknown_registry_key_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    path.write_text(_entry().to_json().replace('"name"', '"nmae"'))
    with pytest.raises(RegistryError, match="unknown registry key\\(s\\): nmae"):
        read_entry(path)


def test_a_json_file_that_is_not_an_entry_is_named_not_a_crash(tmp_path: Path) -> None:
    path = tmp_path / "faithfulness.json"  # a benchmark's output left among the entries
    path.write_text('[{"model": "fundus-densenet"}]')
    with pytest.raises(RegistryError, match=r"faithfulness\.json: expected a JSON object"):
        read_entry(path)


def test_unknown_architecture_suggests_the_closest() -> None:
    with pytest.raises(ValueError, match="Did you mean 'densenet'\\?"):
        build_network({**NETWORK, "architecture": "densnet"})

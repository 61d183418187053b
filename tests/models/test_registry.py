from pathlib import Path

import pytest
import torch

from medvision.modality import FINDINGS, Modality
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
    with_test_time_looks,
)
from medvision.transforms.mammo import MammoTransforms

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
        ({"grading": "dr_grade"}, "tiny-cxr: cxr has no grading scale"),
    ],
)
def test_invalid_entries_are_rejected(changes: dict[str, object], message: str) -> None:
    with pytest.raises(RegistryError, match=message):
        _entry(**changes)


def test_a_grading_entry_names_its_outputs_and_needs_its_finding(tmp_path: Path) -> None:
    fundus = {"modality": Modality.FUNDUS, "findings": ("referable_dr",), "thresholds": {}}
    entry = _entry(**fundus, grading="dr_grade")
    assert entry.output_names == (
        "referable_dr",
        "dr_grade_ge_1",
        "dr_grade_ge_3",
        "dr_grade_ge_4",
    )
    assert _entry(**fundus).output_names == ("referable_dr",)
    assert _entry(**fundus).grade_scale is None
    path = tmp_path / "fundus.json"
    path.write_text(entry.to_json())
    assert read_entry(path) == entry
    assert entry.cut_thresholds == (0.5, 0.5, 0.5)
    chosen = _entry(**fundus, grading="dr_grade", grade_thresholds={"dr_grade_ge_3": 0.25})
    assert chosen.cut_thresholds == (0.5, 0.25, 0.5)
    with pytest.raises(RegistryError, match="grade threshold for unknown output dr_grade_ge_2"):
        _entry(**fundus, grading="dr_grade", grade_thresholds={"dr_grade_ge_2": 0.5})
    with pytest.raises(RegistryError, match="grade threshold of dr_grade_ge_1 must be in"):
        _entry(**fundus, grading="dr_grade", grade_thresholds={"dr_grade_ge_1": 1.5})
    with pytest.raises(RegistryError, match="graded on 'dr_grade', not 'etdrs'"):
        _entry(**fundus, grading="etdrs")
    with pytest.raises(RegistryError, match="grading dr_grade needs the finding referable_dr"):
        _entry(**{**fundus, "findings": ()}, grading="dr_grade")


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


def _mammo_entry(patch_symmetries: bool, architecture: str = "evidence_densenet") -> ModelEntry:
    chain = MammoTransforms(
        input_size=(512, 384), patch_size=(128, 128), patch_symmetries=patch_symmetries
    )
    return _entry(
        name="tiny-mammo",
        modality=Modality.MAMMO,
        findings=FINDINGS[Modality.MAMMO],
        network={**NETWORK, "architecture": architecture, "out_channels": 1},
        transforms=chain.describe(),
        input_size=(512, 384),
        thresholds={},
    )


def test_test_time_looks_are_set_in_the_network_description_and_removed_at_one() -> None:
    entry = _mammo_entry(patch_symmetries=True)
    looking = with_test_time_looks(entry, 4)
    assert looking.network == {**entry.network, "test_time_looks": 4}
    assert with_test_time_looks(looking, 1).network == entry.network
    network = build_network(looking.network)
    assert getattr(network, "test_time_looks", None) == 4


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        (_entry(network={**NETWORK, "architecture": "evidence_densenet"}), "not cxr"),
        (_mammo_entry(patch_symmetries=False), "trained on mirrored patches"),
        (_mammo_entry(patch_symmetries=True, architecture="densenet"), "evidence-map network"),
    ],
)
def test_test_time_looks_are_refused_where_mirror_images_are_not_the_same_case(
    entry: ModelEntry, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        with_test_time_looks(entry, 2)
    with pytest.raises(ValueError, match="must be one of 1, 2, 4, got 8"):
        with_test_time_looks(_mammo_entry(patch_symmetries=True), 8)


def test_an_entry_edited_to_test_time_looks_it_cannot_use_is_refused() -> None:
    network = {**NETWORK, "architecture": "evidence_densenet", "test_time_looks": 4}
    with pytest.raises(RegistryError, match="model tiny-cxr: test-time looks are for mammography"):
        _entry(network=network)
    entry = _mammo_entry(patch_symmetries=False)
    with pytest.raises(RegistryError, match="trained on mirrored patches"):
        ModelEntry(**{**entry.__dict__, "network": {**entry.network, "test_time_looks": 2}})

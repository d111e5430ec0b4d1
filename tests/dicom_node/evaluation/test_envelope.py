"""The validated envelope: each descriptor outside it is one plain sentence; unknown values are not judged;
the configured ranges are checked when the configuration is read."""

from __future__ import annotations

import dataclasses

import pytest

from dicom_node.config import ConfigError, EnvelopeSettings, Settings, load_settings
from dicom_node.evaluation.descriptors import Descriptors
from dicom_node.evaluation.envelope import check

INSIDE = Descriptors(
    manufacturer="SIEMENS", scanner_model="Biograph mCT", software_versions="VG80B",
    reconstruction_method="PSF+TOF 4i5s", convolution_kernel=None, tracer="PSMA-1007",
    pet_voxel_mm=[4.07, 4.07, 3.0], pet_slice_thickness_mm=3.0, injected_activity_mbq=320.0,
    uptake_time_min=95.0, weight_kg=80.0, psa_ng_ml=1.2, psa_source="registered", prostatectomy=True,
    prostatectomy_source="tags", model_id="D", weights_sha256="ab" * 32, threshold=0.5, probability=0.7,
    positive=True, results_mode="live",
)


def _with(**changes: object) -> Descriptors:
    return dataclasses.replace(INSIDE, **changes)  # type: ignore[arg-type]


def test_a_result_inside_the_default_envelope_has_no_violation() -> None:
    assert check(INSIDE, EnvelopeSettings()) == []


@pytest.mark.parametrize(("changes", "expected"), [
    ({"uptake_time_min": 240.0}, ["uptake time 240 min > 150 min"]),
    ({"uptake_time_min": 30.5}, ["uptake time 30.5 min < 45 min"]),
    ({"injected_activity_mbq": 720.0}, ["injected activity 720 MBq > 500 MBq"]),
    ({"tracer": "68Ga-PSMA-11"}, ["tracer '68Ga-PSMA-11' is not PSMA-1007"]),
    ({"pet_voxel_mm": [9.375, 9.375, 4.0]}, ["PET voxel size (in-plane) 9.375 mm > 6 mm"]),
    ({"pet_voxel_mm": [4.0, 4.0, 8.0], "pet_slice_thickness_mm": 8.0},
     ["PET voxel size (between slices) 8 mm > 6 mm", "PET slice thickness 8 mm > 6 mm"]),
])
def test_each_descriptor_outside_gives_one_plain_sentence(changes: dict, expected: list[str]) -> None:
    assert check(_with(**changes), EnvelopeSettings()) == expected


def test_unknown_descriptors_are_not_judged_and_a_disabled_envelope_judges_nothing() -> None:
    unknown = _with(uptake_time_min=None, injected_activity_mbq=None, tracer=None, pet_voxel_mm=None,
                    pet_slice_thickness_mm=None)
    assert check(unknown, EnvelopeSettings()) == []
    assert check(_with(uptake_time_min=240.0), EnvelopeSettings(enabled=False)) == []


def test_scanners_seen_are_matched_by_part_of_manufacturer_and_model() -> None:
    envelope = EnvelopeSettings(scanners=["biograph mct", "Discovery MI"])
    assert check(INSIDE, envelope) == []
    assert check(_with(manufacturer="GE MEDICAL SYSTEMS", scanner_model="Omni Legend"), envelope) == [
        "scanner 'GE MEDICAL SYSTEMS Omni Legend' is not one validated here (biograph mct, Discovery MI)"]
    assert check(_with(manufacturer=None, scanner_model=None), envelope) == [
        "scanner not named in the headers: one validated here (biograph mct, Discovery MI)"]


def test_an_envelope_range_upside_down_stops_the_configuration(tmp_path) -> None:  # type: ignore[no-untyped-def]
    config = tmp_path / "config.yaml"
    config.write_text("envelope:\n  uptake_time_min: [150, 45]\n")
    with pytest.raises(ConfigError) as raised:
        load_settings(config, environ={})
    assert "envelope.uptake_time_min: Value error, must be [low, high] with 0 <= low <= high, got [150, 45]" in str(
        raised.value)
    assert Settings().envelope.tracers == ["PSMA-1007"]

"""Series selection on content: tracer, attenuation correction, half-life, frame of reference, best CT."""

from __future__ import annotations

from dataclasses import replace

from dicom_node.config import AssemblySettings
from dicom_node.series_selection import select_series
from tests.dicom_node.assemble.rows import ct_summary, pet_summary

CT_POSITIONS = [-104.0 + 2.0 * n for n in range(110)]


def test_psma_1007_pet_with_matching_ct_is_selected() -> None:
    pet, ct = pet_summary(), ct_summary(CT_POSITIONS)
    selection = select_series([ct, pet], AssemblySettings())
    assert selection.ok and selection.pet is pet and selection.ct is ct
    assert selection.flags["tracer_flagged"] is False and selection.flags["ct_match"] == "frame_of_reference"


def test_tracer_spelling_variants_are_recognised() -> None:
    for name in ("[18F]PSMA-1007", "18F-PSMA 1007", "psma1007"):
        assert select_series([pet_summary(tracer=name), ct_summary(CT_POSITIONS)], AssemblySettings()).ok


def test_fdg_is_rejected_naming_the_tracer() -> None:
    selection = select_series(
        [pet_summary(tracer="FDG -- fluorodeoxyglucose"), ct_summary(CT_POSITIONS)], AssemblySettings()
    )
    assert not selection.ok and selection.reason is not None
    assert "tracer is FDG, not PSMA" in selection.reason


def test_non_attenuation_corrected_pet_is_rejected() -> None:
    selection = select_series([pet_summary(corrected=["DECY"]), ct_summary(CT_POSITIONS)], AssemblySettings())
    assert selection.reason is not None and "PET not attenuation-corrected" in selection.reason


def test_attenuation_corrected_series_wins_over_uncorrected_one() -> None:
    nac, ac = pet_summary(corrected=["DECY"]), pet_summary()
    selection = select_series([nac, ac, ct_summary(CT_POSITIONS)], AssemblySettings())
    assert selection.pet is ac


def test_other_psma_tracer_needs_configuration_and_is_then_flagged() -> None:
    series = [pet_summary(tracer="[18F]DCFPyL"), ct_summary(CT_POSITIONS)]
    refused = select_series(series, AssemblySettings())
    assert refused.reason is not None and "PSMA tracer not accepted" in refused.reason
    flagged = select_series(series, AssemblySettings(flagged_tracers=["DCFPyL"]))
    assert flagged.ok and flagged.flags["tracer_flagged"] is True


def test_implausible_half_life_is_rejected() -> None:
    selection = select_series([pet_summary(half_life=4063.0), ct_summary(CT_POSITIONS)], AssemblySettings())
    assert selection.reason is not None and "half-life 4063 s is not F-18's" in selection.reason


def test_missing_tracer_is_rejected() -> None:
    selection = select_series([pet_summary(tracer=""), ct_summary(CT_POSITIONS)], AssemblySettings())
    assert selection.reason is not None and "tracer unknown" in selection.reason


def test_ct_only_study_has_no_pet() -> None:
    assert (
        select_series([ct_summary(CT_POSITIONS)], AssemblySettings()).reason == "no PET series in the study"
    )


def test_pet_without_ct_says_so() -> None:
    assert select_series([pet_summary()], AssemblySettings()).reason == "no CT in the study"


def test_ct_in_another_frame_of_reference_is_refused_by_default() -> None:
    selection = select_series([pet_summary(), ct_summary(CT_POSITIONS, for_uid="9.9")], AssemblySettings())
    assert selection.ct is None and selection.reason is not None
    assert "no CT shares the PET's Frame of Reference" in selection.reason
    assert "allow_different_frame_of_reference" in selection.reason


def test_ct_in_the_pets_frame_is_chosen_over_a_better_ct_in_another_frame() -> None:
    pet = pet_summary()
    same_frame = ct_summary([-104.0 + 3.0 * n for n in range(68)])
    other_frame = ct_summary([-104.0 + 0.5 * n for n in range(410)], for_uid="9.9")
    selection = select_series([pet, other_frame, same_frame], AssemblySettings())
    assert selection.ct is same_frame and selection.flags["ct_match"] == "frame_of_reference"


def test_opting_in_pairs_a_ct_of_another_frame_by_z_overlap() -> None:
    settings = AssemblySettings(allow_different_frame_of_reference=True)
    selection = select_series([pet_summary(), ct_summary(CT_POSITIONS, for_uid="9.9")], settings)
    assert selection.ok and selection.flags["ct_match"] == "z_overlap"


def test_ct_neither_sharing_frame_nor_overlapping_is_refused_when_opted_in() -> None:
    far = [500.0 + 2.0 * n for n in range(50)]
    settings = AssemblySettings(allow_different_frame_of_reference=True)
    selection = select_series([pet_summary(), ct_summary(far, for_uid="9.9")], settings)
    assert selection.reason is not None and "no CT sharing the PET's frame of reference" in selection.reason


def test_ct_mixing_bits_allocated_is_refused_naming_both_values() -> None:
    mixed = replace(ct_summary(CT_POSITIONS), layout={"BitsAllocated": (8, 16), "Rows": (512, 512)})
    selection = select_series([pet_summary(), mixed], AssemblySettings())
    assert selection.ct is None
    assert selection.reason == "CT series mixes Bits Allocated 8 and 16 across its slices; cannot stack them"


def test_a_consistent_ct_is_chosen_over_one_with_mixed_slice_sizes() -> None:
    pet = pet_summary()
    mixed = replace(ct_summary([-104.0 + 0.5 * n for n in range(410)]), layout={"Rows": (256, 512)})
    plain = replace(ct_summary(CT_POSITIONS), layout={"BitsAllocated": (16, 16), "Rows": (512, 512)})
    assert select_series([pet, mixed, plain], AssemblySettings()).ct is plain


def test_colour_or_8_bit_slices_are_refused() -> None:
    colour = replace(ct_summary(CT_POSITIONS), layout={"SamplesPerPixel": (3, 3)})
    reason = select_series([pet_summary(), colour], AssemblySettings()).reason
    assert reason is not None and "3 samples per pixel" in reason
    pet = replace(pet_summary(), layout={"BitsAllocated": (8, 8)})
    reason = select_series([pet, ct_summary(CT_POSITIONS)], AssemblySettings()).reason
    assert reason == "PET slices have Bits Allocated 8; CT and PET images need 16 (or 32)"


def test_best_ct_covers_the_pet_is_original_and_thinnest() -> None:
    pet = pet_summary()  # z -100 .. 96
    thick = ct_summary([-105.0 + 5.0 * n for n in range(41)])
    thin = ct_summary([-104.0 + 1.0 * n for n in range(205)])
    derived = ct_summary([-104.0 + 0.5 * n for n in range(410)], image_type=["DERIVED", "SECONDARY", "AXIAL"])
    short = ct_summary([-20.0 + 0.5 * n for n in range(80)])
    coronal = ct_summary([-104.0 + 0.5 * n for n in range(410)], orientation=[1, 0, 0, 0, 0, -1])
    localizer = ct_summary([0.0, 0.0], image_type=["ORIGINAL", "PRIMARY", "LOCALIZER"])
    selection = select_series([pet, thick, derived, short, coronal, localizer, thin], AssemblySettings())
    assert selection.ct is thin


def test_only_non_axial_ct_is_refused() -> None:
    coronal = ct_summary(CT_POSITIONS, orientation=[1, 0, 0, 0, 0, -1])
    selection = select_series([pet_summary(), coronal], AssemblySettings())
    assert selection.reason is not None and "no axial CT" in selection.reason


def test_lossy_pet_is_refused_naming_how_much_and_why() -> None:
    pet = replace(pet_summary(), lossy={"Lossy Image Compression (0028,2110) is 01": 3})
    selection = select_series([pet, ct_summary(CT_POSITIONS)], AssemblySettings())
    assert not selection.ok and selection.reason is not None
    assert selection.reason.startswith(f"PET is lossy-compressed (3 of {pet.count} slices lossy-compressed: "
                                       "Lossy Image Compression (0028,2110) is 01)")


def test_lossy_ct_is_used_when_alone_and_flagged_but_a_lossless_one_wins() -> None:
    lossy = replace(ct_summary(CT_POSITIONS), lossy={"transfer syntax JPEG Extended (Process 2 and 4)": 110})
    alone = select_series([pet_summary(), lossy], AssemblySettings())
    assert alone.ok and alone.ct is lossy
    assert alone.flags["ct_lossy"].startswith("110 of 110 slices lossy-compressed: transfer syntax JPEG Extended")
    lossless = ct_summary(CT_POSITIONS)
    both = select_series([pet_summary(), lossy, lossless], AssemblySettings())
    assert both.ct is lossless and "ct_lossy" not in both.flags

"""PSA / prostatectomy: registered, then DICOM tags, then imputed / inferred; each with its provenance."""

from __future__ import annotations

from pydicom import Dataset

from inference.clinical import ClinicalRules, RegisteredClinical, resolve_prostatectomy, resolve_psa

RULES = ClinicalRules()


def _header(**values: str) -> Dataset:
    header = Dataset()
    for keyword, value in values.items():
        setattr(header, keyword, value)
    return header


def test_registered_values_win_over_tags() -> None:
    headers = [_header(AdditionalPatientHistory="PSA 9.9 ng/ml, no prostatectomy")]
    registered = RegisteredClinical(psa_ng_ml=3.2, prostatectomy=True, detail="registered via cli")
    psa = resolve_psa(registered, headers, RULES)
    px = resolve_prostatectomy(registered, headers, RULES, organ_found="prostate")
    assert (psa.value, psa.source, psa.detail) == (3.2, "given", "registered via cli")
    assert (px.value, px.source) == (True, "given")


def test_tags_are_read_with_the_configured_patterns() -> None:
    headers = [_header(RequestedProcedureComments="restaging, PSA: 0,45 ng/ml, s/p RP 2019")]
    psa = resolve_psa(None, headers, RULES)
    px = resolve_prostatectomy(None, headers, RULES, organ_found="prostate")
    assert (psa.value, psa.source) == (0.45, "tag")
    assert "RequestedProcedureComments" in psa.detail
    assert (px.value, px.source) == (True, "tag")


def test_a_negative_statement_is_checked_before_the_positive_pattern() -> None:
    headers = [_header(ImageComments="no prostatectomy; PSA 12 ng/ml")]
    assert resolve_prostatectomy(None, headers, RULES, organ_found="bladder").value is False
    assert resolve_psa(None, headers, RULES).value == 12.0


def test_custom_tags_and_patterns_from_settings() -> None:
    rules = ClinicalRules(
        tags=("StudyComments",),
        psa_pattern=r"PSA=(\d+)",
        prostatectomy_pattern="RPX",
        no_prostatectomy_pattern="NOOP",
    )
    headers = [_header(StudyComments="PSA=17 RPX", AdditionalPatientHistory="PSA 3 ng/ml")]
    assert resolve_psa(None, headers, rules).value == 17.0
    assert resolve_prostatectomy(None, headers, rules, organ_found="prostate").value is True


def test_without_information_psa_is_imputed_and_prostatectomy_inferred_from_the_organ_found() -> None:
    headers = [_header(AdditionalPatientHistory="routine")]
    psa = resolve_psa(None, headers, RULES)
    assert (psa.value, psa.source) == (30.1, "imputed")
    operated = resolve_prostatectomy(None, headers, RULES, organ_found="bladder")
    intact = resolve_prostatectomy(None, headers, RULES, organ_found="prostate")
    assert (operated.value, operated.source) == (True, "inferred")
    assert (intact.value, intact.source) == (False, "inferred")
    unknown = resolve_prostatectomy(None, headers, RULES, organ_found="given")
    assert (unknown.value, unknown.source) == (False, "imputed")
    no_inference = resolve_prostatectomy(None, headers, ClinicalRules(infer_prostatectomy=False), "bladder")
    assert no_inference.source == "imputed"


def test_a_registration_with_only_one_field_leaves_the_other_to_tags() -> None:
    headers = [_header(AdditionalPatientHistory="PSA 2.5 ng/ml after prostatectomy")]
    registered = RegisteredClinical(psa_ng_ml=None, prostatectomy=False)
    assert resolve_psa(registered, headers, RULES).source == "tag"
    assert resolve_prostatectomy(registered, headers, RULES, "bladder").value is False

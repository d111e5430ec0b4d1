"""PSA / prostatectomy: registered, then DICOM tags, then imputed (organ guess opt-in); with provenance."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from pydicom import Dataset

from dicom_node.cli.main import cli
from dicom_node.synth import SynthOptions, generate_study

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


def test_without_information_psa_is_imputed_and_prostatectomy_imputed_as_operated_as_published() -> None:
    headers = [_header(AdditionalPatientHistory="routine")]
    psa = resolve_psa(None, headers, RULES)
    assert (psa.value, psa.source) == (30.1, "imputed")
    for organ in ("prostate", "bladder", "given", None):
        px = resolve_prostatectomy(None, headers, RULES, organ_found=organ)
        assert (px.value, px.source) == (True, "imputed")
        assert "px = 1" in px.detail


def test_imputation_to_not_operated_is_configurable() -> None:
    rules = ClinicalRules(impute_prostatectomy=False)
    px = resolve_prostatectomy(None, [_header(AdditionalPatientHistory="routine")], rules, "bladder")
    assert (px.value, px.source) == (False, "imputed")
    assert "published imputation is px = 1" in px.detail


def test_guessing_from_the_organ_found_is_an_explicit_opt_in() -> None:
    rules = ClinicalRules(infer_prostatectomy=True)
    headers = [_header(AdditionalPatientHistory="routine")]
    operated = resolve_prostatectomy(None, headers, rules, organ_found="bladder")
    intact = resolve_prostatectomy(None, headers, rules, organ_found="prostate")
    assert (operated.value, operated.source) == (True, "inferred")
    assert (intact.value, intact.source) == (False, "inferred")
    given = resolve_prostatectomy(None, headers, rules, organ_found="given")
    assert (given.value, given.source) == (True, "imputed")


def test_a_registration_with_only_one_field_leaves_the_other_to_tags() -> None:
    headers = [_header(AdditionalPatientHistory="PSA 2.5 ng/ml after prostatectomy")]
    registered = RegisteredClinical(psa_ng_ml=None, prostatectomy=False)
    assert resolve_psa(registered, headers, RULES).source == "tag"
    assert resolve_prostatectomy(registered, headers, RULES, "bladder").value is False


@pytest.fixture(scope="module")
def study_without_history(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("no-history")
    generate_study(
        folder, SynthOptions(ct_matrix=64, pet_matrix=32, extent_mm=150, seed=5, write_clinical_history=False)
    )
    return folder


@pytest.mark.parametrize(("impute", "expected"), [(None, True), (False, False)])
def test_analyze_cli_imputes_unknown_prostatectomy_as_configured(
    study_without_history: Path, tmp_path: Path, impute: bool | None, expected: bool
) -> None:
    config: dict = {"database": {"url": f"sqlite:///{tmp_path / 'node.db'}"},
                    "models": {"models_dir": str(tmp_path / "models")}}
    if impute is not None:
        config["clinical"] = {"impute_prostatectomy": impute}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    outcome = CliRunner().invoke(
        cli,
        ["--config", str(tmp_path / "config.yaml"), "analyze", str(study_without_history), "--json",
         "--center-lps=0,0,0"],
    )
    assert outcome.exit_code == 0, outcome.output
    summary = json.loads(outcome.stdout)
    assert summary["prostatectomy"]["value"] is expected
    assert summary["prostatectomy"]["source"] == "imputed"
    assert (summary["psa"]["value"], summary["psa"]["source"]) == (30.1, "imputed")


def _pet(text: str | None = None, code: tuple[str, str, str] | None = None) -> Dataset:
    item = Dataset()
    if text is not None:
        item.Radiopharmaceutical = text
    if code is not None:
        entry = Dataset()
        entry.CodeValue, entry.CodingSchemeDesignator, entry.CodeMeaning = code
        item.RadiopharmaceuticalCodeSequence = [entry]
    header = Dataset()
    header.RadiopharmaceuticalInformationSequence = [item]
    return header


@pytest.mark.parametrize(
    ("header", "site", "is_1007", "source", "says"),
    [
        (_pet(code=("126758", "DCM", "PSMA-1007 F^18^")), "PSMA-1007", True, "code",
         "Radiopharmaceutical Code Sequence 126758, DCM"),
        (_pet("PSMA", ("C116352", "NCIt", "Piflufolastat F^18^")), "PSMA-1007", False, "code",
         "the text 'PSMA' is not used"),
        (_pet("18F-PSMA-1007"), "DCFPyL", True, "text", "'18F-PSMA-1007'"),
        (_pet("Ga-68 PSMA-11"), "PSMA-1007", False, "text", "'Ga-68 PSMA-11'"),
        (_pet("PSMA"), "PSMA-1007", True, "site", "read as the site's tracer PSMA-1007"),
        (_pet("PSMA"), "DCFPyL", False, "site", "read as the site's tracer DCFPyL"),
        (_pet(), "PSMA-1007", True, "site", "tracer not named in the PET header"),
    ],
)
def test_tracer_is_recognised_from_the_code_then_the_text_then_the_site(
        header: Dataset, site: str, is_1007: bool, source: str, says: str) -> None:
    from inference.clinical import resolve_tracer

    tracer = resolve_tracer(header, site)
    assert (tracer.is_psma_1007, tracer.source) == (is_1007, source)
    assert says in tracer.note

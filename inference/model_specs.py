"""The published models (Korb et al., Cancers 2025) as data: what each one expects as input.

Every number here comes from the authors' training scripts (github.com/BioMeDS/f18-psma-pet-ct-ai,
`code/models/Model_*.py`, validation transforms) so that their checkpoints see exactly the input they were
trained on. Preprocessing and routing read these specs; nothing else hard-codes a model's shape or scaling.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

ZENODO_DOI = "10.5281/zenodo.15174580"
ZENODO_URL = "https://doi.org/10.5281/zenodo.15174580"
PAPER = "Korb M, et al. Cancers 2025;17(9):1575, doi:10.3390/cancers17091575"
NOT_FOR_CLINICAL_USE = (
    "The authors state that none of the models is reliable enough for clinical use. NOT FOR DIAGNOSTIC USE."
)

CUBE_HALF_WIDTH_MM = 100.0
"""Half the edge of the analysed cube (200 mm) around the prostate / bladder centre."""
PSA_SCALE_MAX = 7434.0
"""Maximum PSA of the training set (ng/ml): the fitted MinMaxScaler maps psa to psa / 7434."""
CT_RANGE = (-1024.0, 3071.0)
"""HU window mapped to 0..1 by the fixed-range models (no clipping)."""
PET_SUV_RANGE = (0.0, 106.0)
"""SUV window mapped to 0..1 by the fixed-range models (no clipping)."""

Region = Literal["whole", "cube"]
PetUnits = Literal["bqml", "suv"]
Scaling = Literal["minmax", "range"]


@dataclass(frozen=True)
class ModelSpec:
    """One published model: its input contract, weights file and published performance."""

    id: str
    in_channels: int
    region: Region
    pet_units: PetUnits
    scaling: Scaling
    resize: tuple[int, int, int]
    roi: tuple[int, int, int] | None
    weights_file: str
    description: str
    published_accuracy: str
    expected_sha256: str | None = None

    @property
    def uses_metadata(self) -> bool:
        """Models with 4 channels get PSA and prostatectomy status as constant volumes."""
        return self.in_channels == 4

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one sample fed to the network: (channels, *spatial)."""
        return (self.in_channels, *(self.roi or self.resize))


SPECS: dict[str, ModelSpec] = {
    spec.id: spec
    for spec in (
        ModelSpec(
            id="A",
            in_channels=2,
            region="whole",
            pet_units="bqml",
            scaling="minmax",
            resize=(150, 150, 150),
            roi=None,
            weights_file="model_A.pt",
            description="Whole PET/CT, PET in Bq/ml, per-volume min-max, resized to 150^3; CT, PET.",
            published_accuracy="validation accuracy 56 %",
        ),
        ModelSpec(
            id="B",
            in_channels=2,
            region="cube",
            pet_units="suv",
            scaling="minmax",
            resize=(70, 70, 70),
            roi=None,
            weights_file="model_B.pt",
            description="200 mm cube around prostate/bladder, SUVbw, per-volume min-max, 70^3; CT, PET.",
            published_accuracy="validation accuracy 71 %",
        ),
        ModelSpec(
            id="C",
            in_channels=4,
            region="cube",
            pet_units="suv",
            scaling="minmax",
            resize=(70, 70, 70),
            roi=(30, 40, 30),
            weights_file="model_C.pt",
            description=(
                "Model C as published (the authors' Model_C.py, runs/model_C behind the paper's figure): "
                "200 mm cube, SUVbw, per-volume min-max, 70^3, centre crop 30x40x30; "
                "CT, PET, PSA, prostatectomy."
            ),
            published_accuracy="validation accuracy 76.5 % (all patients)",
        ),
        ModelSpec(
            id="C-range",
            in_channels=4,
            region="cube",
            pet_units="suv",
            scaling="range",
            resize=(70, 70, 70),
            roi=(30, 40, 30),
            weights_file="model_C_range.pt",
            description=(
                "Fixed-range variant of C (the authors' Model_C_scaleRange.py): CT -1024..3071 HU and PET "
                "0..106 SUV to 0..1 (no clipping), 70^3, centre crop 30x40x30; CT, PET, PSA, prostatectomy."
            ),
            published_accuracy="validation accuracy 75.3 % (fixed-range variant of C, all patients)",
        ),
        ModelSpec(
            id="D",
            in_channels=4,
            region="cube",
            pet_units="suv",
            scaling="minmax",
            resize=(70, 70, 70),
            roi=(65, 46, 69),
            weights_file="model_D.pt",
            description=(
                "Final released model: 200 mm cube, SUVbw, per-volume min-max, 70^3, centre crop 65x46x69; "
                "CT, PET, PSA, prostatectomy."
            ),
            published_accuracy=(
                "validation accuracy 77.1 % (all patients, best epoch 4); "
                "independent test set: accuracy 0.71, "
                "balanced accuracy 0.728, sensitivity 0.568, specificity 0.888"
            ),
        ),
        ModelSpec(
            id="D-range",
            in_channels=4,
            region="cube",
            pet_units="suv",
            scaling="range",
            resize=(70, 70, 70),
            roi=(65, 46, 69),
            weights_file="model_D_range.pt",
            description=(
                "Fixed-range variant of D: CT -1024..3071 HU and PET 0..106 SUV to 0..1 (no clipping), "
                "70^3, centre crop 65x46x69; CT, PET, PSA, prostatectomy."
            ),
            published_accuracy="validation accuracy (fixed-range variant of D)",
        ),
    )
}


class UnknownModel(ValueError):
    """A model id that is not one of the published models."""


def get_spec(model_id: str, expected_sha256: dict[str, str] | None = None) -> ModelSpec:
    """The spec for `model_id` (case-insensitive), with a configured expected sha256 applied."""
    for spec in SPECS.values():
        if spec.id.lower() == model_id.strip().lower():
            sha = (expected_sha256 or {}).get(spec.id) or spec.expected_sha256
            if sha is None:
                return spec
            return ModelSpec(**{**spec.__dict__, "expected_sha256": sha.lower()})
    raise UnknownModel(f"unknown model {model_id!r}; published models are {', '.join(SPECS)}")


def route(routing: str, default_model: str, prostatectomy: bool | None) -> str:
    """Which model analyses a study.

    published-test: the authors applied the final model (default D) to every test examination.
    by-prostatectomy: C if operated, else the default model; a local choice, not the published method
    (the authors trained and validated C and D alike on all patients).
    """
    if routing == "published-test":
        return get_spec(default_model).id
    if routing == "by-prostatectomy":
        return "C" if prostatectomy else get_spec(default_model).id
    raise ValueError(f"unknown routing {routing!r} (published-test or by-prostatectomy)")


def routable_models(routing: str, default_model: str) -> list[str]:
    """Every model `route` can pick under this routing: the checkpoints a site must install."""
    return sorted({route(routing, default_model, operated) for operated in (False, True)})

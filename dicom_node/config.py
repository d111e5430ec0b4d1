"""The node's configuration: one typed object, loaded from YAML plus environment overrides.

Every setting lives here with its type, default and meaning, so that `config check`, the generated
configuration reference and the validation messages all come from a single source. No other module reads
configuration files or environment variables on its own. That single source is why this module is longer than
the others (over 500 lines): splitting the sections across files would scatter what an admin looks up at once.
"""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path
from typing import Any, Literal, get_args

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

ENV_PREFIX = "PSMA_NODE_"
_SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
"""libyaml's safe loader where PyYAML was built with it: the documented example parses in ~1 ms instead of
~10 ms, on every command."""
DEFAULT_CONFIG_FILE = Path(__file__).resolve().parent.parent / "config.yaml"
"""The repository's config.yaml: the default in a checkout; an installed wheel has none."""
EXAMPLE_CONFIG_FILE = Path(__file__).resolve().parent / "config.example.yaml"
"""The documented example shipped inside the package (`psma-node config example`): a copy of the repository's
config.yaml, kept identical by tests/dicom_node/test_config_example.py."""


class ConfigError(Exception):
    """A configuration that cannot be used; the message names the key and the file."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class CallingAE(_Section):
    """A peer allowed to open associations, optionally bound to source addresses."""

    ae_title: str = Field(description="Calling AE title of the peer.")
    hosts: list[str] = Field(
        default_factory=list,
        description="Source IP addresses or networks (10.1.2.0/24) the AE may connect from; empty = any.",
    )
    port: int | None = Field(
        default=None, description="Port of the peer's own SCP, used when results go back to the sender."
    )


class TLSSettings(_Section):
    enabled: bool = Field(default=False, description="Serve DICOM over TLS.")
    certificate: Path | None = Field(default=None, description="Server certificate (PEM).")
    private_key: Path | None = Field(default=None, description="Server private key (PEM).")
    ca_certificates: Path | None = Field(default=None, description="CA bundle to verify client certificates.")
    require_client_certificate: bool = Field(
        default=False, description="Reject peers without a certificate signed by ca_certificates."
    )

    @model_validator(mode="after")
    def _complete(self) -> TLSSettings:
        if self.enabled and (self.certificate is None or self.private_key is None):
            raise ValueError("TLS enabled but certificate or private_key not set")
        if self.require_client_certificate and self.ca_certificates is None:
            raise ValueError("require_client_certificate needs ca_certificates")
        return self


class NodeSettings(_Section):
    """The DICOM service class provider that modalities and the PACS send to."""

    ae_title: str = Field(default="PSMA_NODE", max_length=16, description="The node's own AE title.")
    bind: str = Field(default="0.0.0.0", description="Address the DICOM listener binds to.")
    port: int = Field(default=11112, ge=1, le=65535, description="DICOM listener port.")
    check_called_ae: bool = Field(
        default=True, description="Reject associations whose called AE title is not ae_title."
    )
    allow_any_calling_ae: bool = Field(
        default=False, description="Accept any calling AE title (testing only); otherwise use allowed_calling_aes."
    )
    allowed_calling_aes: list[CallingAE] = Field(
        default_factory=lambda: [CallingAE(ae_title="PACS")],
        description="Calling AE titles allowed to associate (and where results go back to). Bind each to the "
                    "addresses it sends from (hosts): AE titles are not secret, and an entry without hosts lets "
                    "any host that reaches the port use it.",
    )
    demo_calling_aes: list[str] = Field(
        default_factory=lambda: ["STORESCU", "PSMA_SYNTH"],
        description="Calling AE titles of the demo tools (dcmtk storescu's default, `psma-node synth --send`), "
                    "accepted from loopback addresses only; an AE title also listed under allowed_calling_aes "
                    "follows that entry instead. [] refuses them.",
    )
    max_associations: int = Field(default=8, ge=1, description="Concurrent associations before refusing.")
    max_associations_per_ae: int = Field(
        default=4, ge=1,
        description="Associations one calling AE title may hold at once (more are rejected): no title, forged "
                    "or not, takes every slot.",
    )
    reserved_for_bound_aes: int = Field(
        default=2, ge=0,
        description="Association slots only callers matched by an allowed_calling_aes entry with hosts may take: "
                    "callers bound to no host (entries without hosts, demo entries, allow_any_calling_ae) share "
                    "the other max_associations minus this, so a PACS bound to its address always gets in. "
                    "Applies when some entry has hosts, and must then be below max_associations.",
    )
    max_pdu_bytes: int = Field(default=262144, ge=0, description="Maximum PDU size offered (0 = unlimited).")
    max_instance_bytes: int = Field(
        default=2 * 1024**3, ge=1024, description="Largest instance accepted; larger ones are refused."
    )
    min_free_disk_mb: int = Field(
        default=1024, ge=0, description="Refuse instances with status A700 when free disk falls below this."
    )
    other_storage_classes: Literal["store", "refuse"] = Field(
        default="store",
        description="Storage SOP classes other than PET/CT: store as 'not analysed', or refuse the context.",
    )
    network_timeout_s: float = Field(
        default=60.0, gt=0, description="DIMSE timeout, and idle time after which an association is closed (seconds)."
    )
    acse_timeout_s: float = Field(
        default=30.0, gt=0,
        description="A new connection must deliver its whole A-ASSOCIATE-RQ within this time, else it is closed "
                    "(dcmtk's default ACSE timeout is 30 s).",
    )
    pdu_timeout_s: float = Field(
        default=30.0, gt=0,
        description="Once a PDU (its header or its body) has begun, the rest must arrive within this time, else "
                    "the connection is closed: a peer stalling mid-PDU cannot hold a slot.",
    )
    max_pending_connections: int = Field(
        default=32, ge=1,
        description="Connections not yet through their A-ASSOCIATE-RQ, held without a thread; when full, an idle "
                    "one is closed, of sources closed lately or holding the most first. Separate from max_associations.",
    )
    max_connections_per_host: int = Field(
        default=4, ge=1,
        description="Per source address: at most this many connections waiting to associate (more are closed at "
                    "once) and this many associations (more are rejected). Keep it below max_associations so one "
                    "host cannot take every slot.",
    )
    connection_report_seconds: float = Field(
        default=60.0, gt=0,
        description="Connections the node closes or refuses are logged and audited once per source and interval: "
                    "the first at once, the rest as one summary.",
    )
    receiving_processes: int | Literal["auto"] = Field(
        default="auto",
        description="Processes the associations run in (each a Python interpreter, so receiving uses several "
                    "cores); the port and its gate stay in `serve`, which hands each connection to the least busy "
                    "one. 0 = in serve's own threads; auto = one per CPU core, at most 4 (0 on one core). With "
                    "tls.enabled the associations run in serve (a TLS session cannot move to another process).",
    )
    tls: TLSSettings = Field(default_factory=TLSSettings, description="DICOM TLS.")

    @model_validator(mode="after")
    def _room_for_unbound_callers(self) -> NodeSettings:
        if self.reserves_for_bound_aes() and self.reserved_for_bound_aes >= self.max_associations:
            raise ValueError(
                f"reserved_for_bound_aes ({self.reserved_for_bound_aes}) must be below max_associations "
                f"({self.max_associations}), or callers bound to no host could never associate"
            )
        return self

    def reserves_for_bound_aes(self) -> bool:
        """Whether some slots are kept for host-bound callers: only when there are such callers."""
        return (self.reserved_for_bound_aes > 0 and not self.allow_any_calling_ae
                and any(entry.hosts for entry in self.allowed_calling_aes))

    @field_validator("receiving_processes", mode="before")
    @classmethod
    def _process_count(cls, value: Any) -> int | str:
        if value == "auto":
            return value
        try:
            count = int(value)
        except (TypeError, ValueError):
            count = -1
        if isinstance(value, bool) or not 0 <= count <= 64 or str(count) != str(value).strip():
            raise ValueError("must be 'auto' or a number from 0 to 64")
        return count

    def receiving_process_count(self) -> int:
        """How many receiving processes to start (0: associations run in serve's threads)."""
        if self.tls.enabled:
            return 0
        if self.receiving_processes == "auto":
            cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
            return min(cores, 4) if cores > 1 else 0
        return int(self.receiving_processes)


class StorageSettings(_Section):
    directory: Path = Field(default=Path("./var/storage"), description="Where received instances are kept.")
    results_directory: Path = Field(
        default=Path("./var/results"), description="Where result objects wait for delivery."
    )


class DatabaseSettings(_Section):
    url: SecretStr = Field(
        default=SecretStr("sqlite:///./var/psma-node.db"),
        description="SQLAlchemy URL: sqlite:///path or postgresql://user:pass@host/db (postgres:// works too).",
    )
    auto_upgrade: bool = Field(
        default=True, description="Run pending migrations on start instead of refusing to start."
    )

    @field_validator("url", mode="before")
    @classmethod
    def _installed_driver(cls, value: Any) -> Any:
        """postgresql:// and postgres:// run on the installed driver, for every part of the node."""
        from db.urls import with_installed_driver

        plain = value.get_secret_value() if isinstance(value, SecretStr) else value
        return with_installed_driver(plain) if isinstance(plain, str) else value


class AssemblySettings(_Section):
    """When a study counts as complete, and which series are analysed."""

    tick_seconds: float = Field(
        default=0.5, gt=0, le=1.0,
        description="How often assembly runs (also at once when a sender releases its association).",
    )
    settle_seconds: float = Field(
        default=2.0, ge=0,
        description=(
            "Wait after completeness is proven, for stragglers; skipped when every association that "
            "delivered the study was released after its last instance."
        ),
    )
    quiet_seconds: float = Field(
        default=60.0, gt=0, description="Quiet period after which unprovable studies are judged."
    )
    ceiling_seconds: float = Field(
        default=900.0, gt=0,
        description="Hard limit after the FIRST instance: a study still trickling in is judged then.",
    )
    process_incomplete: bool = Field(
        default=False, description="At the ceiling, analyse an incomplete PET instead of rejecting it."
    )
    accepted_tracers: list[str] = Field(
        default_factory=lambda: ["PSMA-1007"],
        description="Radiopharmaceutical names (case-insensitive substrings) analysed without a flag.",
    )
    flagged_tracers: list[str] = Field(
        default_factory=list,
        description="Other PSMA tracers (e.g. DCFPyL, PSMA-11) accepted but flagged in the result.",
    )
    half_life_range_s: tuple[float, float] = Field(
        default=(6000.0, 7200.0), description="Plausible radionuclide half-life for F-18 (seconds)."
    )
    allow_different_frame_of_reference: bool = Field(
        default=False,
        description=(
            "Opt-in: pair a PET with an overlapping CT of another Frame of Reference (coordinates assumed to "
            "coincide, said in the result). Default: such a study is rejected."
        ),
    )


class WorkerSettings(_Section):
    count: int = Field(default=1, ge=0, description="Analysis worker processes started by `serve`.")
    lease_seconds: float = Field(default=30.0, gt=1, description="Job lease; renewed while a worker lives.")
    poll_seconds: float = Field(
        default=0.5, gt=0, description="How often an idle worker looks for jobs (a queued job also wakes it)."
    )
    max_attempts: int = Field(default=3, ge=1, description="Attempts before a job is failed for good.")
    torch_threads: int = Field(default=0, ge=0, description="torch threads per worker (0 = torch default).")
    stop_grace_seconds: float = Field(
        default=10.0, ge=0, description="On stop, time a worker gets to release its job before it is killed."
    )


class ModelSettings(_Section):
    models_dir: Path = Field(default=Path("./var/models"), description="Where imported checkpoints live.")
    routing: Literal["published-test", "by-prostatectomy"] = Field(
        default="published-test",
        description=(
            "published-test (the paper's method): the default model, D, for every patient. "
            "by-prostatectomy: C if operated, else D; a local choice, not the published method "
            "(the authors trained and validated C and D on all patients and applied D to everyone)."
        ),
    )
    default_model: str = Field(default="D", description="Model used under published-test routing.")
    threshold: float = Field(default=0.5, ge=0, le=1, description="Probability at or above which = Present.")
    device: Literal["auto", "cpu", "cuda"] = Field(default="auto", description="auto picks CUDA when present.")
    expected_sha256: dict[str, str] = Field(
        default_factory=dict,
        description="Published sha256 per model id (e.g. D: <hex>); import and every load refuse other files.",
    )
    gradcam: bool = Field(default=True, description="Compute the Grad-CAM attention map shown in the result.")
    gradcam_layer: str = Field(
        default="features.denseblock3",
        description="DenseNet121 layer for Grad-CAM (class_layers.relu leaves a 2x1x2 map for model D).",
    )

    @field_validator("default_model")
    @classmethod
    def _published_model(cls, value: str) -> str:
        from inference.model_specs import SPECS

        if value not in SPECS:
            raise ValueError(f"unknown model {value!r}; published models are {', '.join(SPECS)}")
        return value

    @field_validator("expected_sha256")
    @classmethod
    def _hex_digests(cls, value: dict[str, str]) -> dict[str, str]:
        from inference.model_specs import SPECS

        for model_id, digest in value.items():
            if model_id not in SPECS:
                raise ValueError(f"unknown model {model_id!r}; published models are {', '.join(SPECS)}")
            if len(digest) != 64 or any(c not in "0123456789abcdefABCDEF" for c in digest):
                raise ValueError(f"sha256 for model {model_id} must be 64 hex digits, got {digest!r}")
        return {k: v.lower() for k, v in value.items()}


class LocalizerSettings(_Section):
    kind: Literal["anatomical", "totalsegmentator"] = Field(
        default="anatomical", description="How the centre of the 200 mm cube is found."
    )
    totalsegmentator_home: Path = Field(
        default=Path("~/.totalsegmentator"), description="TOTALSEG_HOME_DIR holding its weights."
    )
    totalsegmentator_command: str = Field(
        default="TotalSegmentator", description="Executable run in a subprocess."
    )
    totalsegmentator_fast: bool = Field(default=False, description="Use the 3 mm model (--fast).")
    totalsegmentator_timeout_seconds: float = Field(
        default=1800.0, gt=0, description="TotalSegmentator run longer than this is killed and reported."
    )
    anatomical_grid_mm: float = Field(
        default=4.0, ge=2.0, le=8.0, description="Coarse grid (mm) the anatomical localiser works on."
    )


class ClinicalSettings(_Section):
    """Where PSA and prostatectomy status come from, in order."""

    tags: list[str] = Field(
        default_factory=lambda: ["AdditionalPatientHistory", "RequestedProcedureComments", "ImageComments"],
        description="DICOM keywords searched for PSA / prostatectomy text.",
    )
    psa_pattern: str = Field(
        default=r"PSA[^0-9]{0,12}([0-9]+(?:[.,][0-9]+)?)\s*(?:ng/?ml)?",
        description="Regex whose first group is the PSA value in ng/ml.",
    )
    prostatectomy_pattern: str = Field(
        default=r"(?i)(prostatectomy|\bRPE\b|\bRP\b|s/p\s+RP)",
        description="Regex meaning the patient had a prostatectomy.",
    )
    no_prostatectomy_pattern: str = Field(
        default=r"(?i)(no prostatectomy|not operated|non-operated|without prostatectomy)",
        description="Regex meaning the patient did not have a prostatectomy (checked first).",
    )
    impute_psa: float = Field(default=30.1, ge=0, description="PSA used when none is known (published).")
    impute_prostatectomy: bool = Field(
        default=True,
        description=(
            "Status assumed when none is registered or in the tags: true = post-prostatectomy "
            "(px = 1, the authors' imputation for their test set), false = not operated."
        ),
    )
    infer_prostatectomy: bool = Field(
        default=False,
        description=(
            "Opt-in, not the published method: when the status is unknown, guess it from the localiser "
            "(prostate found = not operated, bladder only = operated) before imputing."
        ),
    )
    site_tracer: str = Field(
        default="PSMA-1007", min_length=1,
        description=(
            "The PSMA tracer this site uses: a PET naming no tracer, or only 'PSMA', is read as this one "
            "(it picks the miPSMA score's references: spleen for PSMA-1007, else liver)."
        ),
    )

    @field_validator("psa_pattern", "prostatectomy_pattern", "no_prostatectomy_pattern")
    @classmethod
    def _compiles(cls, value: str, info: ValidationInfo) -> str:
        import re

        try:
            compiled = re.compile(value)
        except re.error as exc:
            raise ValueError(f"not a valid regular expression: {exc}") from exc
        if info.field_name == "psa_pattern" and compiled.groups < 1:
            raise ValueError("the PSA pattern needs a group capturing the number")
        return value


class Destination(_Section):
    name: str = Field(description="Short name used in the audit trail and CLI.")
    kind: Literal["dicom", "stow"] = Field(default="dicom", description="DIMSE C-STORE or DICOMweb STOW-RS.")
    ae_title: str | None = Field(default=None, description="Called AE title (dicom).")
    host: str | None = Field(default=None, description="Host (dicom).")
    port: int | None = Field(default=None, description="Port (dicom).")
    tls: bool = Field(default=False, description="Use DICOM TLS to this peer.")
    ca_certificates: Path | None = Field(default=None, description="CA bundle to verify the peer.")
    client_certificate: Path | None = Field(
        default=None, description="Certificate (PEM) the node presents to a peer that requires one (tls)."
    )
    client_private_key: Path | None = Field(default=None, description="Key (PEM) of client_certificate.")
    url: str | None = Field(default=None, description="DICOMweb base URL (stow).")
    username: str | None = Field(default=None, description="HTTP basic-auth user (stow).")
    password: SecretStr | None = Field(default=None, description="HTTP basic-auth password (stow).")
    confirm_with_cfind: bool = Field(
        default=False, description="After storing, C-FIND (DICOMweb: QIDO-RS) the objects back; an object the "
                                   "peer acknowledged but cannot find stays 'delivered' with a warning (both "
                                   "ask again for 1.7 s first).")
    evaluation: bool = Field(
        default=False, description="An evaluation destination (e.g. a research PACS): the only kind that gets "
                                   "results when results.mode is shadow.")

    @model_validator(mode="after")
    def _addressable(self) -> Destination:
        if self.kind == "dicom" and not (self.ae_title and self.host and self.port):
            raise ValueError(f"destination {self.name!r}: dicom needs ae_title, host and port")
        if self.kind == "stow" and not self.url:
            raise ValueError(f"destination {self.name!r}: stow needs url")
        return self


class RetrySettings(_Section):
    initial_seconds: float = Field(default=10.0, gt=0, description="First retry delay.")
    max_seconds: float = Field(default=1800.0, gt=0, description="Longest delay between attempts.")
    jitter: float = Field(default=0.2, ge=0, le=1, description="Random fraction added to each delay.")
    give_up_after_seconds: float = Field(
        default=86400.0, gt=0, description="Age after which delivery is FAILED."
    )


class ResultSettings(_Section):
    sr_storage: Literal["comprehensive3d", "comprehensive"] = Field(
        default="comprehensive3d", description="SR IOD: Comprehensive 3D SR (88.34) or Comprehensive SR (88.33)."
    )
    fallback_to_comprehensive: bool = Field(
        default=True, description="If a PACS refuses 88.34, send the SR as 88.33."
    )
    mode: Literal["live", "shadow"] = Field(
        default="live",
        description="live: results go to every destination. shadow (local validation before going live): results "
                    "are made, stored, audited and shown on the dashboard, but sent only to destinations marked "
                    "evaluation: true, never to clinical ones nor back to the sender.",
    )
    return_to_sender: bool = Field(
        default=False, description="Also send results to the calling AE (needs its port in allowed_calling_aes)."
    )
    destinations: list[Destination] = Field(default_factory=list, description="Where results are sent.")
    retry: RetrySettings = Field(default_factory=RetrySettings, description="Delivery retry policy.")
    send_tick_seconds: float = Field(
        default=2.0, gt=0,
        description="How often the outbox is looked at (a published result also wakes the sender).",
    )
    institution_name: str = Field(default="", description="Written into result objects when set.")
    sr_series_number: int = Field(default=9900, ge=1, description="Series Number of the AI SR series.")
    sc_series_number: int = Field(default=9901, ge=1, description="Series Number of the AI Secondary Capture series.")
    seg_series_number: int = Field(default=9902, ge=1, description="Series Number of the AI Segmentation (SEG) series.")
    seg_enabled: bool = Field(
        default=True, description="Build and send the DICOM SEG (turn off for a PACS that refuses Segmentation Storage)."
    )
    body_part_examined: str = Field(
        default="PELVIS", max_length=16, description="BodyPartExamined written into the Secondary Capture."
    )
    sending_timeout_seconds: float = Field(
        default=300.0, gt=0, description="An item left 'sending' this long (crash mid-send) is sent again."
    )
    max_items_per_association: int = Field(
        default=100, ge=1, description="Objects sent to one destination per association and tick."
    )
    assessment_intake_seconds: float = Field(
        default=5.0, gt=0,
        description="How often `serve` reads received SRs for readers' assessments of the node's results "
                    "(docs/assessments.md).",
    )


class DashboardUser(_Section):
    name: str = Field(min_length=1, description="Login name, recorded as the actor of the user's actions.")
    password_hash: SecretStr = Field(
        description="pbkdf2_sha256$iterations$salt$hash (from `psma-node dashboard hash-password`)."
    )

    @field_validator("password_hash")
    @classmethod
    def _well_formed(cls, value: SecretStr) -> SecretStr:
        parts = value.get_secret_value().split("$")
        scheme_ok = len(parts) == 4 and parts[0] == "pbkdf2_sha256"
        well_formed = scheme_ok and parts[1].isdigit() and all(parts[2:])
        if not well_formed:
            raise ValueError(
                "not a pbkdf2_sha256$iterations$salt$hash value: "
                "create one with `psma-node dashboard hash-password`"
            )
        return value


class DashboardSettings(_Section):
    enabled: bool = Field(default=True, description="Serve the web dashboard from `serve`.")
    bind: str = Field(default="127.0.0.1", description="Dashboard bind address.")
    port: int = Field(default=8080, ge=0, le=65535, description="Dashboard port (0 = pick a free one).")
    users: list[DashboardUser] = Field(default_factory=list, description="Users allowed to log in.")
    tokens: list[SecretStr] = Field(default_factory=list, description="Bearer tokens for RIS/API clients.")
    allow_anonymous: bool = Field(
        default=False,
        description="Allow read-only access without logging in (loopback bind only; writes need a user or token).",
    )
    allowed_hosts: list[str] = Field(
        default_factory=list,
        description=(
            "Host names the dashboard is reached by (e.g. psma-node.hospital.org), besides IP addresses, "
            "localhost and this machine's name; other Host headers are refused (DNS rebinding)."
        ),
    )
    session_secret: SecretStr = Field(
        default=SecretStr("change-me"),
        description="Secret signing login cookies; 'change-me' = random per start (logins end on restart).",
    )
    session_hours: float = Field(default=12.0, gt=0, description="Lifetime of a login session.")
    public_metrics: bool = Field(
        default=False, description="Serve /metrics without authentication (it holds no patient data)."
    )

    @field_validator("tokens")
    @classmethod
    def _no_blank_token(cls, value: list[SecretStr]) -> list[SecretStr]:
        for position, token in enumerate(value):
            if not token.get_secret_value().strip():
                raise ValueError(
                    f"token {position} is empty, which would let any caller in: "
                    "remove it or set a long random value (e.g. `openssl rand -hex 32`)"
                )
        return value


MIN_RECORDS_DAYS = 183.0
"""Six months: the least the records of a high-risk AI system are kept (EU AI Act Art. 26(6))."""


class RetentionSettings(_Section):
    enabled: bool = Field(default=False, description="Purge stored images of delivered studies.")
    keep_days: float = Field(default=30.0, gt=0, description="Days after delivery before purging.")
    tick_seconds: float = Field(
        default=3600.0, gt=0, description="How often `serve` looks for studies to purge."
    )
    keep_records_days: float = Field(
        default=MIN_RECORDS_DAYS,
        description="Results, reader assessments, reference standards and the audit trail are kept at least this "
                    "long (the node itself never deletes them; retention purges images only). At least 183 days: "
                    "EU AI Act Art. 26(6) asks deployers to keep the logs at least six months.",
    )

    @field_validator("keep_records_days")
    @classmethod
    def _six_months(cls, value: float) -> float:
        if value < MIN_RECORDS_DAYS:
            raise ValueError(
                f"must be at least {MIN_RECORDS_DAYS:g} days: EU AI Act Art. 26(6) asks deployers to keep the logs "
                "of a high-risk AI system at least six months"
            )
        return value


class EnvelopeSettings(_Section):
    """The conditions the model was validated for; a result outside them is flagged and counted."""

    enabled: bool = Field(default=True, description="Check every result against the validated envelope.")
    tracers: list[str] = Field(
        default_factory=lambda: ["PSMA-1007"],
        description="Radiopharmaceutical names (case-insensitive parts) the model was validated for. Source: the "
                    "paper (Korb et al. 2025: 1404 [18F]PSMA-1007 PET/CTs).",
    )
    pet_voxel_mm: tuple[float, float] = Field(
        default=(1.5, 6.0),
        description="Range of the PET voxel size (row, column and slice spacing, mm). Site-set: the paper's "
                    "reconstruction could not be confirmed here; the authors' 200 mm crops are ~50 PET voxels wide (~4 mm).",
    )
    pet_slice_thickness_mm: tuple[float, float] = Field(
        default=(1.5, 6.0), description="Range of the PET Slice Thickness (mm). Site-set: not confirmed from the paper."
    )
    uptake_time_min: tuple[float, float] = Field(
        default=(45.0, 150.0),
        description="Range of the time from injection to the PET scan (min). Site-set: not confirmed from the paper; "
                    "covers the 60-120 min protocols in use for [18F]PSMA-1007.",
    )
    injected_activity_mbq: tuple[float, float] = Field(
        default=(100.0, 500.0),
        description="Range of the injected activity (MBq). Site-set: not confirmed from the paper; covers ~3-4 MBq/kg.",
    )
    scanners: list[str] = Field(
        default_factory=list,
        description="Scanners validated here (case-insensitive parts of 'Manufacturer ModelName', e.g. "
                    "'Biograph mCT'); empty = any. Site-set: the paper's scanners could not be confirmed here.",
    )

    @field_validator("pet_voxel_mm", "pet_slice_thickness_mm", "uptake_time_min", "injected_activity_mbq")
    @classmethod
    def _range(cls, value: tuple[float, float]) -> tuple[float, float]:
        low, high = value
        if not 0 <= low <= high:
            raise ValueError(f"must be [low, high] with 0 <= low <= high, got [{low:g}, {high:g}]")
        return value


MonitoredStatistic = Literal[
    "positive_rate", "mean_probability", "disagreement_rate", "envelope_violation_rate", "uptake_time_min",
    "injected_activity_mbq", "weight_kg", "pet_pixel_spacing_mm", "pet_slice_spacing_mm",
    "pet_slice_thickness_mm",
]
"""What drift monitoring can watch per scanner and day (docs/monitoring.md defines each)."""


class MonitoringSettings(_Section):
    """Watching the AI's inputs and outputs over time, per scanner: drift and novelty alarms."""

    enabled: bool = Field(default=True, description="Compute daily monitoring statistics and raise alarms.")
    tick_seconds: float = Field(
        default=3600.0, gt=0, description="How often `serve` evaluates monitoring (alarms are judged per day)."
    )
    baseline_days: int = Field(
        default=30, ge=1,
        description="Days, from a scanner's first result (or baseline_start), whose results form its baseline.",
    )
    baseline_min_results: int = Field(
        default=30, ge=2,
        description="A baseline extends past baseline_days until it holds at least this many results.",
    )
    baseline_start: dt.date | None = Field(
        default=None,
        description="First day of every baseline (YYYY-MM-DD; empty = each scanner's first result): set it "
                    "after a deliberate change to start a new baseline. Earlier results are not judged.",
    )
    consecutive_days: int = Field(
        default=7, ge=1,
        description="Days in a row a statistic must lie outside its baseline's 95 % interval before an alarm "
                    "(7, as in Sorin et al., JACR 2025). Days with too few results neither count nor break the run.",
    )
    min_daily_results: int = Field(
        default=3, ge=1, description="Observations a day needs before its statistic is judged."
    )
    statistics: list[MonitoredStatistic] = Field(
        default_factory=lambda: list(get_args(MonitoredStatistic)),
        description="Statistics watched per scanner (default: all).",
    )


class LoggingSettings(_Section):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(default="INFO", description="Log level.")
    format: Literal["json", "text"] = Field(default="json", description="Structured JSON lines or text.")
    file: Path | None = Field(default=None, description="Also write logs here.")


class Settings(_Section):
    """The whole configuration."""

    node: NodeSettings = Field(default_factory=NodeSettings)
    storage: StorageSettings = Field(default_factory=StorageSettings)
    database: DatabaseSettings = Field(default_factory=DatabaseSettings)
    assembly: AssemblySettings = Field(default_factory=AssemblySettings)
    workers: WorkerSettings = Field(default_factory=WorkerSettings)
    models: ModelSettings = Field(default_factory=ModelSettings)
    localizer: LocalizerSettings = Field(default_factory=LocalizerSettings)
    clinical: ClinicalSettings = Field(default_factory=ClinicalSettings)
    results: ResultSettings = Field(default_factory=ResultSettings)
    dashboard: DashboardSettings = Field(default_factory=DashboardSettings)
    retention: RetentionSettings = Field(default_factory=RetentionSettings)
    envelope: EnvelopeSettings = Field(default_factory=EnvelopeSettings)
    monitoring: MonitoringSettings = Field(default_factory=MonitoringSettings)
    logging: LoggingSettings = Field(default_factory=LoggingSettings)

    @field_validator("*", mode="before")
    @classmethod
    def _none_is_default(cls, value: Any) -> Any:
        return {} if value is None else value

    def resolve_paths(self, base: Path) -> Settings:
        """Make relative paths relative to the config file's folder, so the node runs from anywhere."""
        data = self.model_copy(deep=True)
        for section, key in _PATH_KEYS:
            sub = getattr(data, section)
            value = getattr(sub, key)
            if value is not None:
                setattr(sub, key, _absolute(value, base))
        url = data.database.url.get_secret_value()
        if url.startswith("sqlite:///") and not url.startswith("sqlite:////") and ":memory:" not in url:
            data.database.url = SecretStr("sqlite:///" + str(_absolute(Path(url[len("sqlite:///"):]), base)))
        return data


_PATH_KEYS = [
    ("storage", "directory"),
    ("storage", "results_directory"),
    ("models", "models_dir"),
    ("localizer", "totalsegmentator_home"),
    ("logging", "file"),
]


def _absolute(path: Path, base: Path) -> Path:
    path = Path(os.path.expanduser(str(path)))
    return path if path.is_absolute() else (base / path).resolve()


def _env_overrides(environ: dict[str, str]) -> dict[str, Any]:
    """PSMA_NODE_<SECTION>__<KEY>[__<SUBKEY>]=value, value parsed as YAML (so lists and numbers work)."""
    overrides: dict[str, Any] = {}
    for name, raw in environ.items():
        if not name.startswith(ENV_PREFIX) or "__" not in name:
            continue
        path = [part.lower() for part in name[len(ENV_PREFIX):].split("__")]
        target = overrides
        for part in path[:-1]:
            target = target.setdefault(part, {})
        target[path[-1]] = yaml.safe_load(raw) if raw != "" else ""
    return overrides


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


_SECRET_KEYS = ("password", "token", "secret", "url")
"""Keys whose values are never echoed back in an error message (a URL may hold a password)."""


def _describe(error: ValidationError, source: str) -> str:
    """One line for one mistake (the usual case), else one line per mistake under a heading."""
    lines = []
    for item in error.errors():
        key = ".".join(str(p) for p in item["loc"]) or "(top level)"
        kind = item["type"]
        if kind == "extra_forbidden":
            message = "unknown key"
        else:
            message = item["msg"]
        got = item.get("input")
        secret = any(word in key for word in _SECRET_KEYS)
        hidden = kind == "extra_forbidden" or isinstance(got, dict) or secret
        shown = "" if hidden else f" (got {got!r})"
        lines.append(f"{key}: {message}{shown}")
    if len(lines) == 1:
        return f"invalid configuration in {source}: {lines[0]}"
    return "\n  ".join([f"invalid configuration in {source}:", *lines])


def load_settings(path: Path | None = None, environ: dict[str, str] | None = None) -> Settings:
    """Read the YAML file (default: the embedded config.yaml), apply environment overrides, validate."""
    source = Path(path) if path is not None else DEFAULT_CONFIG_FILE
    environ = dict(os.environ) if environ is None else environ
    if path is None and not source.exists():
        raise ConfigError(
            "no configuration file given (--config or PSMA_NODE_CONFIG) and none next to the installed "
            "package: write the documented example with `psma-node config example > config.yaml`, "
            "edit it, and pass --config config.yaml"
        )
    try:
        text = source.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read configuration file {source}: {exc.strerror or exc}") from exc
    try:
        data = yaml.load(text, Loader=_SAFE_LOADER)
    except yaml.YAMLError as exc:
        raise ConfigError(f"configuration file {source} is not valid YAML: {' '.join(str(exc).split())}") from exc
    if data is None:
        # Built-in defaults listen on 0.0.0.0: an empty file (a failed copy, a wrong path) must not start that.
        raise ConfigError(
            f"configuration file {source} is empty: write the node's settings into it "
            f"(start from {DEFAULT_CONFIG_FILE}), or write {{}} to run on the built-in defaults"
        )
    if not isinstance(data, dict):
        raise ConfigError(f"configuration file {source}: top level must be a mapping of sections")
    overrides = _env_overrides(environ)
    label = str(source) + (" (with PSMA_NODE_* environment overrides)" if overrides else "")
    try:
        settings = Settings.model_validate(_merge(data, overrides))
    except ValidationError as exc:
        raise ConfigError(_describe(exc, label)) from exc
    settings = settings.resolve_paths(source.resolve().parent)
    _check_files(settings, label)
    return settings


def _check_files(settings: Settings, source: str) -> None:
    """Files the node must read at start-up are checked now, so a typo stops it before it serves."""
    tls = settings.node.tls
    for key in ("certificate", "private_key", "ca_certificates"):
        value = getattr(tls, key)
        if value is not None and not os.access(_absolute(value, Path.cwd()), os.R_OK):
            raise ConfigError(
                f"invalid configuration in {source}: node.tls.{key}: cannot read {value} "
                "(check the path and that the node's user may read it)"
            )


def effective_config(settings: Settings) -> dict[str, Any]:
    """The configuration as plain data with secrets masked, for `config check` and the dashboard."""
    return settings.model_dump(mode="json")

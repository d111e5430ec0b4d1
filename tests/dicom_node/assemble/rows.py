"""Builders of Study/Instance rows as the receiver writes them, for fast tests of assembly and jobs."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterable, Sequence
from typing import Any

from pydicom.uid import CTImageStorage, PositronEmissionTomographyImageStorage
from sqlalchemy import update
from sqlalchemy.orm import Session, sessionmaker

from db.models import Instance, Study
from db.session import make_engine, make_session_factory, transaction, upgrade
from dicom_node.series_selection import SeriesSummary

AXIAL = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]


def uid() -> str:
    return "2.25." + str(uuid.uuid4().int)


def sessions_for(url: str) -> sessionmaker[Session]:
    upgrade(url)
    return make_session_factory(make_engine(url))


def pet_header(
    tracer: str = "PSMA-1007",
    corrected: Sequence[str] = ("DECY", "ATTN"),
    half_life: float | None = 6586.2,
    for_uid: str = "1.2.3",
    **extra: Any,
) -> dict[str, Any]:
    header: dict[str, Any] = {
        "Modality": "PT",
        "SOPClassUID": PositronEmissionTomographyImageStorage,
        "FrameOfReferenceUID": for_uid,
        "ImageType": ["ORIGINAL", "PRIMARY"],
        "CorrectedImage": list(corrected),
        "Units": "BQML",
        "RadiopharmaceuticalName": tracer,
        "RadionuclideHalfLife": half_life,
        "SeriesNumber": 2,
        "ImageOrientationPatient": AXIAL,
        "SliceThickness": 4.0,
        "SeriesType": ["WHOLE BODY", "IMAGE"],
    }
    header.update(extra)
    return header


def ct_header(
    for_uid: str = "1.2.3",
    image_type: Sequence[str] = ("ORIGINAL", "PRIMARY", "AXIAL"),
    thickness: float = 2.0,
    orientation: Sequence[float] = AXIAL,
    **extra: Any,
) -> dict[str, Any]:
    header: dict[str, Any] = {
        "Modality": "CT",
        "SOPClassUID": CTImageStorage,
        "FrameOfReferenceUID": for_uid,
        "ImageType": list(image_type),
        "SliceThickness": thickness,
        "SeriesNumber": 1,
        "ImageOrientationPatient": list(orientation),
    }
    header.update(extra)
    return header


def pet_summary(
    slices: int = 50,
    received: Iterable[int] | None = None,
    spacing: float = 4.0,
    z0: float = -100.0,
    **header: Any,
) -> SeriesSummary:
    """A PET series summary as the aggregate query gives it (image indices `received` of 1..slices)."""
    indices = sorted(received) if received is not None else list(range(1, slices + 1))
    return SeriesSummary(
        series_uid=uid(),
        modality="PT",
        sop_class_uid=header.pop("sop_class_uid", PositronEmissionTomographyImageStorage),
        frame_of_reference_uid=header.get("for_uid", "1.2.3"),
        count=len(indices),
        header=pet_header(**header),
        image_index_count=len(indices),
        distinct_image_index=len(set(indices)),
        min_image_index=min(indices) if indices else None,
        max_image_index=max(indices) if indices else None,
        number_of_slices=slices,
        min_position=z0,
        max_position=z0 + spacing * (slices - 1),
    )


def ct_summary(
    positions: Sequence[float], numbers: Sequence[int] | None = None, for_uid: str = "1.2.3", **header: Any
) -> SeriesSummary:
    numbers = list(numbers) if numbers is not None else list(range(1, len(positions) + 1))
    return SeriesSummary(
        series_uid=uid(),
        modality="CT",
        sop_class_uid=CTImageStorage,
        frame_of_reference_uid=for_uid,
        count=len(positions),
        header=ct_header(for_uid=for_uid, **header),
        instance_number_count=len(numbers),
        distinct_instance_number=len(set(numbers)),
        min_instance_number=min(numbers),
        max_instance_number=max(numbers),
        min_position=min(positions),
        max_position=max(positions),
        positions=tuple(sorted(positions)),
    )


def add_study(sessions: sessionmaker[Session], accession: str = "ACC1") -> tuple[int, str]:
    study_uid = uid()
    with transaction(sessions) as session:
        study = Study(study_uid=study_uid, accession_number=accession, patient_id="PID", instance_count=0)
        session.add(study)
        session.flush()
        return study.id, study_uid


def add_instances(
    sessions: sessionmaker[Session],
    study_id: int,
    *,
    modality: str,
    series_uid: str,
    positions: Sequence[float],
    header: dict[str, Any],
    indices: Sequence[int | None] | None = None,
    number_of_slices: int | None = None,
    when: dt.datetime | None = None,
    first_number: int = 1,
) -> None:
    """Instances the way the receiver records them: study counters and last_received_at move with them."""
    when = when or dt.datetime.now(dt.timezone.utc)
    with transaction(sessions) as session:
        study = session.get(Study, study_id)
        assert study is not None
        for n, z in enumerate(positions):
            index = indices[n] if indices is not None else None
            session.add(
                Instance(
                    study_id=study_id,
                    study_uid=study.study_uid,
                    series_uid=series_uid,
                    sop_instance_uid=uid(),
                    sop_class_uid=header["SOPClassUID"],
                    transfer_syntax_uid="1.2.840.10008.1.2.1",
                    path=f"/nonexistent/{uid()}.dcm",
                    size_bytes=1,
                    sha256="0" * 64,
                    modality=modality,
                    frame_of_reference_uid=header.get("FrameOfReferenceUID"),
                    instance_number=(index if index is not None else first_number + n),
                    image_index=index,
                    number_of_slices=number_of_slices,
                    slice_position=float(z),
                    header=header,
                    received_at=when,
                )
            )
        session.execute(
            update(Study)
            .where(Study.id == study_id)
            .values(instance_count=Study.instance_count + len(positions), last_received_at=when)
        )


def add_pet(
    sessions: sessionmaker[Session],
    study_id: int,
    *,
    slices: int = 20,
    spacing: float = 4.0,
    z0: float = -40.0,
    skip: Iterable[int] = (),
    when: dt.datetime | None = None,
    series_uid: str | None = None,
    **header: Any,
) -> str:
    series_uid = series_uid or uid()
    indices = [i for i in range(1, slices + 1) if i not in set(skip)]
    add_instances(
        sessions,
        study_id,
        modality="PT",
        series_uid=series_uid,
        positions=[z0 + spacing * (i - 1) for i in indices],
        header=pet_header(**header),
        indices=indices,
        number_of_slices=slices,
        when=when,
    )
    return series_uid


def add_ct(
    sessions: sessionmaker[Session],
    study_id: int,
    *,
    slices: int = 45,
    spacing: float = 2.0,
    z0: float = -44.0,
    when: dt.datetime | None = None,
    series_uid: str | None = None,
    first_number: int = 1,
    **header: Any,
) -> str:
    series_uid = series_uid or uid()
    add_instances(
        sessions,
        study_id,
        modality="CT",
        series_uid=series_uid,
        positions=[z0 + spacing * n for n in range(slices)],
        header=ct_header(**header),
        when=when,
        first_number=first_number,
    )
    return series_uid

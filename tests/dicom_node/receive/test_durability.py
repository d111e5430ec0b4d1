"""What the node acknowledged is on disk and in the database, also across kill -9; re-sends are handled."""

from __future__ import annotations

from pathlib import Path

from pydicom import dcmread

from db.session import make_engine, make_session_factory, upgrade
from dicom_node.config import Settings
from dicom_node.patient_identity import IDENTITY_ATTRIBUTES
from dicom_node.store import reconcile_storage
from dicom_node.store.file_meta import content_digest
from dicom_node.store.headers import HEADER_KEYWORDS
from tests.dicom_node.receive.clients import (
    NodeDatabase,
    acknowledged_before_a_kill,
    echoscu,
    send_raw_files,
    storescu,
    wait_for,
)
from tests.dicom_node.receive.dicom_files import image, write_series
from tests.support.node import NodeProcess


def _storage(node: NodeProcess) -> Path:
    return Path(node.config["storage"]["directory"])


def test_instances_are_stored_with_rows_headers_and_study(tmp_path: Path, db_url: str, receiving_node,
                                                          node_db) -> None:
    pet = write_series(tmp_path / "pt", "PT", 4, patient_name="Secret^Patient")
    study_uid = str(dcmread(pet[0]).StudyInstanceUID)
    ct = write_series(tmp_path / "ct", "CT", 3, study_uid=study_uid, patient_name="Secret^Patient")
    node = receiving_node(db_url=db_url)
    run = storescu(node.port, pet + ct, calling="MODALITY")
    assert len(run.succeeded) == 7, run.output
    db = node_db(node)
    rows = db.instances()
    assert len(rows) == 7
    for row in rows:
        source = dcmread(next(p for p in pet + ct if dcmread(p).SOPInstanceUID == row.sop_instance_uid))
        path = Path(row.path)
        assert path == _storage(node) / study_uid / row.series_uid / f"{row.sop_instance_uid}.dcm"
        assert content_digest(path.read_bytes()) == row.sha256 and row.size_bytes == path.stat().st_size
        assert row.current and row.revision == 1 and row.analysable and not row.missing_file
        assert row.calling_ae == "MODALITY" and row.study_uid == study_uid
        assert row.slice_position == float(source.ImagePositionPatient[2])  # axial: normal is +z
        assert set(row.header) <= set(HEADER_KEYWORDS) | set(IDENTITY_ATTRIBUTES.values()) | {
            "RadiopharmaceuticalName", "RadionuclideHalfLife", "RadionuclideCodeMeaning",
            "RadiopharmaceuticalCodeMeaning"}
        assert row.header["InstanceNumber"] == source.InstanceNumber
        assert row.header["PixelSpacing"] == [4.0, 4.0] and row.header["Modality"] == row.modality
    pet_row = next(row for row in rows if row.modality == "PT")
    assert pet_row.header["RadiopharmaceuticalName"] == "PSMA-1007"
    assert pet_row.header["RadionuclideHalfLife"] == 6586.2
    assert pet_row.header["RadionuclideCodeMeaning"] == "^18^Fluorine"
    assert pet_row.header["CorrectedImage"] == ["ATTN", "DECY"] and pet_row.image_index is not None
    (study,) = db.studies()
    assert (study.study_uid, study.patient_name, study.patient_id, study.accession_number, study.study_date,
            study.calling_ae, study.calling_host, study.instance_count, study.state) == (
        study_uid, "Secret^Patient", "PID-1", "ACC-1", "20250101", "MODALITY", "127.0.0.1", 7, "receiving")
    assert study.first_received_at <= study.last_received_at
    assert not list(_storage(node).rglob("*.tmp"))
    node.stop()
    assert "Secret" not in (Path(node.config["logging"]["file"]).read_text() + node.log_text())


def test_resent_identical_is_no_duplicate_and_changed_is_a_new_revision(tmp_path: Path, db_url: str,
                                                                       receiving_node, node_db) -> None:
    files = write_series(tmp_path / "pt", "PT", 3)
    node = receiving_node(db_url=db_url)
    db = node_db(node)
    assert len(storescu(node.port, files).succeeded) == 3
    first_last_received = db.studies()[0].last_received_at
    # Re-sent by another implementation (pynetdicom, not dcmtk): the file meta the node writes differs
    # (Implementation Class UID), the data set does not.
    assert send_raw_files(node.port, files, calling="OTHER_SENDER") == [0, 0, 0]
    assert len(db.instances()) == 3
    released = wait_for(lambda: len(db.audit("association", "released")) == 2
                        and db.audit("association", "released"))
    assert released[-1].detail["counts"] == {"duplicate": 3}

    changed = dcmread(files[0])
    changed.SeriesDescription = "corrected"
    changed.save_as(tmp_path / "changed.dcm")
    assert storescu(node.port, [tmp_path / "changed.dcm"]).succeeded
    rows = [row for row in db.instances() if row.sop_instance_uid == changed.SOPInstanceUID]
    assert [(row.revision, row.current) for row in rows] == [(1, False), (2, True)]
    assert rows[0].path != rows[1].path and all(Path(row.path).exists() for row in rows)
    assert dcmread(rows[1].path).SeriesDescription == "corrected"
    assert dcmread(rows[0].path).SeriesDescription == "PT test"
    (study,) = db.studies()
    assert study.instance_count == 3 and study.last_received_at > first_last_received
    (revised,) = db.audit("instance", "revised")
    assert revised.sop_instance_uid == changed.SOPInstanceUID and revised.detail["revision"] == 2
    assert echoscu(node.port).returncode == 0


def test_kill_during_receive_loses_nothing_acknowledged(tmp_path: Path, db_url: str, receiving_node) -> None:
    files = write_series(tmp_path / "pt", "PT", 200)
    node = receiving_node(db_url=db_url)
    # SIGKILL to the whole process group (serve and its receiving process), mid-association
    acknowledged = acknowledged_before_a_kill(node.port, files, node.kill)

    restarted = NodeProcess(node.config_path).start()
    try:
        db = NodeDatabase(node.config["database"]["url"])
        rows = {row.sop_instance_uid: row for row in db.instances()}
        for path in acknowledged:
            uid = str(dcmread(path, stop_before_pixels=True).SOPInstanceUID)
            assert uid in rows, f"acknowledged {path} lost"
            stored = Path(rows[uid].path)
            assert content_digest(stored.read_bytes()) == rows[uid].sha256
        assert not list(_storage(node).rglob("*.tmp"))
        assert all(Path(row.path).exists() and not row.missing_file for row in rows.values())
        assert db.studies()[0].instance_count == len(rows)
        db.close()
        assert echoscu(restarted.port).returncode == 0
    finally:
        restarted.stop()


def test_reconciliation_adopts_flags_and_cleans(tmp_path: Path, db_url: str) -> None:
    storage = tmp_path / "storage"
    settings = Settings.model_validate({"storage": {"directory": str(storage)}, "database": {"url": db_url}})
    upgrade(db_url)
    engine = make_engine(db_url)
    sessions = make_session_factory(engine)
    try:
        reconcile_storage(settings, sessions)  # empty: nothing to do
        ds = image("PT", "1.2.3.4", "1.2.3.4.5", 0)
        orphan = storage / "1.2.3.4" / "1.2.3.4.5" / f"{ds.SOPInstanceUID}.dcm"
        orphan.parent.mkdir(parents=True)
        ds.save_as(orphan, enforce_file_format=True)
        leftover = orphan.parent / f".{ds.SOPInstanceUID}.dcm.1a2b3c4d.tmp"
        leftover.write_bytes(b"partial")
        reconcile_storage(settings, sessions)
        db = NodeDatabase(db_url)
        (row,) = db.instances()
        assert (row.sop_instance_uid, row.path, row.current, row.revision) == (
            ds.SOPInstanceUID, str(orphan), True, 1)
        assert db.studies()[0].instance_count == 1
        assert not leftover.exists()
        assert [row.category for row in db.audit("instance", "adopted")] == ["instance"]
        assert len(db.audit("instance", "temporary-removed")) == 1

        orphan.unlink()
        reconcile_storage(settings, sessions)
        (row,) = db.instances()
        assert row.missing_file is True
        assert db.audit("instance", "file-missing")[0].outcome == "error"
        reconcile_storage(settings, sessions)  # idempotent: no second audit row
        assert len(db.audit("instance", "file-missing")) == 1
        db.close()
    finally:
        engine.dispose()


def test_missing_or_cut_short_file_is_restored_by_the_resend(tmp_path: Path, db_url: str, receiving_node,
                                                             node_db) -> None:
    files = write_series(tmp_path / "ct", "CT", 2)
    node = receiving_node(db_url=db_url)
    db = node_db(node)
    assert len(storescu(node.port, files).succeeded) == 2
    rows = sorted(db.instances(), key=lambda row: row.instance_number)
    removed, cut = Path(rows[0].path), Path(rows[1].path)

    # File gone while the node runs: its row still exists, so the re-send restores it (no second row).
    removed.unlink()
    assert storescu(node.port, [files[0]]).succeeded
    assert content_digest(removed.read_bytes()) == rows[0].sha256

    # A flush cut short by power loss leaves the file shorter than its row says: flagged at start-up,
    # then restored by the re-send of the sender that was never answered.
    node.stop()
    with cut.open("r+b") as stored:
        stored.truncate(cut.stat().st_size // 2)
    restarted = NodeProcess(node.config_path).start()
    try:
        flagged = wait_for(lambda: db.audit("instance", "file-missing"))
        assert "shorter" in flagged[0].reason
        assert [row.missing_file for row in db.instances() if row.path == str(cut)] == [True]
        assert storescu(restarted.port, [files[1]]).succeeded
        assert content_digest(cut.read_bytes()) == rows[1].sha256
        assert len(db.audit("instance", "restored")) == 2
        assert len(db.instances()) == 2 and not any(row.missing_file for row in db.instances())
        assert db.studies()[0].instance_count == 2
    finally:
        restarted.stop()

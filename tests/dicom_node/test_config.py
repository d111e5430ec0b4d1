"""Configuration: the embedded default is valid, overrides apply, and every mistake is named clearly."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from dicom_node.config import DEFAULT_CONFIG_FILE, ConfigError, Settings, load_settings


def _write(tmp_path: Path, data: object) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(data) if not isinstance(data, str) else data)
    return path


def _check(config: Path | None, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    args = [sys.executable, "-m", "dicom_node.cli.main"]
    if config is not None:
        args += ["--config", str(config)]
    return subprocess.run(args + ["config", "check"], capture_output=True, text=True, env=env, timeout=60)


def test_embedded_default_is_valid_and_uses_documented_defaults() -> None:
    settings = load_settings(DEFAULT_CONFIG_FILE, environ={})
    assert settings.node.port == 11112
    assert settings.node.ae_title == "PSMA_NODE"
    assert settings.storage.directory == DEFAULT_CONFIG_FILE.parent / "var" / "storage"
    assert settings.database.url.get_secret_value().startswith("sqlite:///")
    assert settings.assembly.settle_seconds == 2
    assert settings.localizer.kind == "anatomical"


def test_every_setting_is_documented_in_the_embedded_config() -> None:
    documented = yaml.safe_load(DEFAULT_CONFIG_FILE.read_text())

    def keys(model: type, prefix: str = "") -> list[str]:
        found = []
        for name, field in model.model_fields.items():
            annotation = field.annotation
            if isinstance(annotation, type) and hasattr(annotation, "model_fields") and prefix.count(".") < 2:
                found += keys(annotation, f"{prefix}{name}.")
            else:
                found.append(prefix + name)
        return found

    missing = []
    for key in keys(Settings):
        node: object = documented
        for part in key.split("."):
            if not isinstance(node, dict) or part not in node:
                missing.append(key)
                break
            node = node[part]
    assert missing == []


def test_unknown_key_names_the_key_and_the_file(tmp_path: Path) -> None:
    path = _write(tmp_path, {"node": {"portt": 104}})
    with pytest.raises(ConfigError) as info:
        load_settings(path, environ={})
    assert "node.portt: unknown key" in str(info.value)
    assert str(path) in str(info.value)


def test_wrong_type_names_the_key_and_the_value(tmp_path: Path) -> None:
    path = _write(tmp_path, {"assembly": {"settle_seconds": "soon"}})
    with pytest.raises(ConfigError) as info:
        load_settings(path, environ={})
    assert "assembly.settle_seconds" in str(info.value)
    assert "'soon'" in str(info.value)


def test_environment_overrides_the_file(tmp_path: Path) -> None:
    path = _write(tmp_path, {"node": {"port": 104}})
    settings = load_settings(path, environ={"PSMA_NODE_NODE__PORT": "4242", "PSMA_NODE_WORKERS__COUNT": "3"})
    assert settings.node.port == 4242
    assert settings.workers.count == 3


def test_bad_environment_override_is_named(tmp_path: Path) -> None:
    path = _write(tmp_path, {})
    with pytest.raises(ConfigError) as info:
        load_settings(path, environ={"PSMA_NODE_NODE__NO_SUCH": "1"})
    assert "node.no_such: unknown key" in str(info.value)
    assert "environment" in str(info.value)


def test_unreadable_tls_certificate_is_refused(tmp_path: Path) -> None:
    path = _write(tmp_path, {"node": {"tls": {"enabled": True, "certificate": str(tmp_path / "nope.pem"),
                                              "private_key": str(tmp_path / "nope.key")}}})
    with pytest.raises(ConfigError) as info:
        load_settings(path, environ={})
    assert "node.tls.certificate: cannot read" in str(info.value)


def test_relative_paths_resolve_against_the_config_folder(tmp_path: Path) -> None:
    path = _write(tmp_path, {"storage": {"directory": "data/in"}, "database": {"url": "sqlite:///db/x.db"}})
    settings = load_settings(path, environ={})
    assert settings.storage.directory == tmp_path / "data" / "in"
    assert settings.database.url.get_secret_value() == f"sqlite:///{tmp_path / 'db' / 'x.db'}"


def test_config_check_exits_2_with_one_clear_message(tmp_path: Path) -> None:
    result = _check(_write(tmp_path, {"node": {"port": "eleven"}}))
    assert result.returncode == 2
    assert "node.port" in result.stderr and "config.yaml" in result.stderr
    assert "Traceback" not in result.stderr


def test_config_check_on_missing_file_exits_2(tmp_path: Path) -> None:
    result = _check(tmp_path / "absent.yaml")
    assert result.returncode == 2
    assert "cannot read configuration file" in result.stderr


def test_config_check_on_invalid_yaml_exits_2(tmp_path: Path) -> None:
    result = _check(_write(tmp_path, "node: [unclosed"))
    assert result.returncode == 2
    assert "not valid YAML" in result.stderr


def test_config_check_prints_effective_config_with_secrets_masked(tmp_path: Path) -> None:
    path = _write(tmp_path, {"database": {"url": "postgresql+psycopg2://u:hunter2@db/x"},
                             "dashboard": {"session_secret": "s3cret"}})
    result = _check(path)
    assert result.returncode == 0, result.stderr
    effective = yaml.safe_load(result.stdout)
    assert effective["node"]["port"] == 11112
    assert "hunter2" not in result.stdout and "s3cret" not in result.stdout
    assert "configuration OK" in result.stderr


def test_serve_with_bad_config_starts_nothing(tmp_path: Path) -> None:
    path = _write(tmp_path, {"storage": {"directory": str(tmp_path / "store")}, "node": {"bogus": 1}})
    result = subprocess.run([sys.executable, "-m", "dicom_node.cli.main", "--config", str(path), "serve"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "node.bogus: unknown key" in result.stderr
    assert not (tmp_path / "store").exists()


def test_mistake_in_a_secret_does_not_echo_it(tmp_path: Path) -> None:
    path = _write(tmp_path, {"dashboard": {"session_secret": ["hunter2"]},
                             "database": {"url": {"nested": "postgresql://u:hunter2@db/x"}}})
    with pytest.raises(ConfigError) as info:
        load_settings(path, environ={})
    assert "dashboard.session_secret" in str(info.value) and "database.url" in str(info.value)
    assert "hunter2" not in str(info.value)


def test_one_mistake_is_one_line(tmp_path: Path) -> None:
    result = _check(_write(tmp_path, "node:\n  port: [unclosed\n"))
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1, result.stderr
    result = _check(_write(tmp_path, {"node": {"port": "eleven"}}))
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


@pytest.mark.parametrize("value", ["many", 99, -1, True])
def test_receiving_processes_must_be_auto_or_a_count(tmp_path: Path, value: object) -> None:
    path = _write(tmp_path, {"node": {"receiving_processes": value}})
    with pytest.raises(ConfigError) as info:
        load_settings(path, environ={})
    assert "node.receiving_processes: Value error, must be 'auto' or a number from 0 to 64" in str(info.value)


@pytest.mark.parametrize(("value", "tls", "cores", "expected"), [
    ("auto", False, {0, 1}, 2), ("auto", False, {0}, 0), ("auto", False, set(range(8)), 4),
    (3, False, {0}, 3), (0, False, {0, 1}, 0), ("auto", True, {0, 1}, 0),
])
def test_receiving_process_count_follows_the_cores_and_stays_in_serve_with_tls(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, value: object, tls: bool, cores: set[int],
        expected: int) -> None:
    monkeypatch.setattr("os.sched_getaffinity", lambda _pid: cores)
    node: dict[str, object] = {"receiving_processes": value}
    if tls:
        (tmp_path / "cert.pem").write_text("x")
        node["tls"] = {"enabled": True, "certificate": str(tmp_path / "cert.pem"),
                       "private_key": str(tmp_path / "cert.pem")}
    settings = load_settings(_write(tmp_path, {"node": node}), environ={})
    assert settings.node.receiving_process_count() == expected

"""One device rule: `models.device: cuda` on a machine without CUDA gets the same clear answer from every
command that would run inference (`serve`, `worker`, `analyze`) and from `doctor`, through the real CLI."""

from __future__ import annotations

import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch

from tests.support.node import write_config

PSMA_NODE = str(Path(sys.executable).parent / "psma-node")
ANSWER = "models.device is 'cuda' but this machine has no CUDA device ("
FIX = "); set models.device: auto or cpu"

pytestmark = pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA device")


def _run(config: Path, *command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([PSMA_NODE, "--config", str(config), *command],
                          capture_output=True, text=True, timeout=180)


def _answer(text: str) -> str:
    """The device sentence, from its start to the fix, wherever the command put it in its line."""
    start = text.index(ANSWER)
    return text[start:text.index(FIX, start) + len(FIX)]


def test_cuda_without_a_gpu_is_refused_alike_by_serve_worker_analyze_and_doctor(tmp_path: Path) -> None:
    config = write_config(tmp_path / "node", {"models": {"device": "cuda"}, "workers": {"count": 1}})
    empty = tmp_path / "dicom"
    empty.mkdir()

    answers = {}
    commands = (("serve",), ("worker",), ("analyze", str(empty)), ("doctor", "--timeout", "1"))
    with ThreadPoolExecutor(len(commands)) as pool:  # each command imports torch (~4 s CPU): use both cores
        results = dict(zip(commands, pool.map(lambda command: _run(config, *command), commands)))
    doctor = results.pop(commands[-1])
    for command, result in results.items():
        assert result.returncode == 2, (command, result.stderr)
        assert "Traceback" not in result.stderr
        (line,) = result.stderr.strip().splitlines()
        assert line.startswith("error: ")
        answers[command[0]] = _answer(line)
    assert not (tmp_path / "node" / "storage").exists(), "serve started nothing"

    assert doctor.returncode == 1
    (line,) = [line for line in doctor.stdout.splitlines() if line.startswith("FAIL  device:")]
    answers["doctor"] = _answer(line)

    assert len(set(answers.values())) == 1, answers
    assert "built without CUDA" in answers["serve"] or "no GPU is visible" in answers["serve"]

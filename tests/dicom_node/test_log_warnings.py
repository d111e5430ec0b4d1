"""Python's and PyTorch's warnings reach the structured log as JSON events, once per kind, never raw on
stderr: in a fresh interpreter set up as every node process is (`configure_logging`), with a library's "always"
filter in force, PyTorch's real "no deterministic implementation" warning (the one Grad-CAM raises on a GPU;
`put_` raises it on the CPU) and Python warnings from the main thread and another thread."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

from tests.support.node import REPO

SCRIPT = textwrap.dedent("""
    import threading, warnings
    from dicom_node.config import LoggingSettings
    from dicom_node.log import configure_logging
    configure_logging(LoggingSettings(format="json", level="INFO"))
    import torch
    from inference.network import make_deterministic
    make_deterministic()  # as every worker: deterministic kernels, a warning where torch has none
    for study in range(3):
        torch.zeros(4).put_(torch.tensor([1, 1]), torch.tensor([1.0, 2.0]))
        warnings.warn(f"study {study}: something to say", UserWarning)
    worker = threading.Thread(target=lambda: warnings.warn("from another thread", RuntimeWarning))
    worker.start()
    worker.join()
""")


def test_warnings_become_one_json_event_per_kind() -> None:
    run = subprocess.run([sys.executable, "-W", "always", "-c", SCRIPT], capture_output=True, text=True,
                         cwd=REPO, timeout=120)
    assert run.returncode == 0, run.stderr
    lines = run.stderr.splitlines()
    events = [json.loads(line) for line in lines]  # every line is JSON: nothing raw
    warned = [event for event in events if event["event"] == "python warning"
              and event["source"].startswith("<string>:")]  # not what an import may warn about
    assert [(event["category"], event["logger"], event["level"]) for event in warned] == [
        ("UserWarning", "py.warnings", "WARNING")] * 2 + [("RuntimeWarning", "py.warnings", "WARNING")]
    assert "put_ does not have a deterministic implementation" in warned[0]["warning"]
    assert warned[1]["warning"] == "study 0: something to say"  # studies 1 and 2: the same kind, dropped
    assert warned[2]["warning"] == "from another thread"

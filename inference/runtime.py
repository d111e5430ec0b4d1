"""Process-wide settings torch must see before it is first imported."""

from __future__ import annotations

import os


def prefer_passive_openmp() -> None:
    """Stop OpenMP threads from busy-waiting between torch operations.

    On shared cores (the receiver, other workers) spinning threads slow the forward pass and Grad-CAM
    down up to tenfold; a passive wait costs nothing measurable on an idle machine. Must run before torch
    is imported; an explicit OMP_WAIT_POLICY in the environment wins.
    """
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

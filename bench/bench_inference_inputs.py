"""Inference inputs at full size: DICOM scan/read vs dcm2niix, memory of partial reads, anatomical localisation.

Run: .venv/bin/python -m bench.bench_inference_inputs  (generates a 512² x 200-slice CT study in a temporary folder)
"""

from __future__ import annotations

import subprocess
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np

from dicom_node.synth import SynthOptions, generate_study
from inference.localize.anatomical import AnatomicalLocalizer
from inference.suv import suv_factor
from inference.volume import Series


def _timed(label: str, action):  # type: ignore[no-untyped-def]
    start = time.perf_counter()
    value = action()
    seconds = time.perf_counter() - start
    print(f"{label:<46} {seconds:7.3f} s")
    return value, seconds


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="bench-inputs-") as work:
        root = Path(work)
        truth = generate_study(root / "study", SynthOptions(seed=3, ct_matrix=512, pet_matrix=200, extent_mm=600))
        ct_files = sorted((root / "study" / "CT").iterdir())
        pet_files = sorted((root / "study" / "PT").iterdir())
        print(f"CT {truth.ct_shape} files {len(ct_files)}, PET {truth.pet_shape}")

        ct, scan_s = _timed("Series.scan CT (headers only)", lambda: Series.scan(ct_files))
        volume, read_s = _timed("Series.read CT float32 (all slices)", lambda: ct.read())
        (root / "nii").mkdir()
        _, ref_s = _timed(
            "dcm2niix CT (reference, uncompressed .nii)",
            lambda: subprocess.run(["dcm2niix", "-z", "n", "-b", "n", "-o", str(root / "nii"), str(root / "study" / "CT")],
                                   check=True, capture_output=True),
        )
        print(f"  ratio scan+read / dcm2niix: {(scan_s + read_s) / ref_s:.2f}")
        del volume

        tracemalloc.start()
        part = ct.read(k_range=(80, 120))
        _, peak_part = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        tracemalloc.start()
        full16 = ct.read(dtype=np.int16)
        _, peak_int16 = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        full_f32_mb = full16.array.size * 4 / 1e6
        print(f"read k 80..120 peak {peak_part / 1e6:.0f} MB (array {part.array.nbytes / 1e6:.0f} MB); "
              f"full int16 peak {peak_int16 / 1e6:.0f} MB vs float32 array {full_f32_mb:.0f} MB")
        del full16, part

        pet, _ = _timed("Series.scan PET", lambda: Series.scan(pet_files))
        _timed("suv_factor PET", lambda: suv_factor(pet.headers))
        localizer = AnatomicalLocalizer()
        result, ct_only_s = _timed("anatomical locate (CT only)", lambda: localizer.locate(ct))
        result_pet, _ = _timed("anatomical locate (CT + PET)", lambda: localizer.locate(ct, pet))
        target = truth.prostate_centroid_lps if result.organ == "prostate" else truth.bladder_centroid_lps
        error = float(np.linalg.norm(np.subtract(result.center_lps, target)))
        print(f"  organ {result.organ}, error {error:.1f} mm, confidence {result.confidence:.2f}; "
              f"with PET: {result_pet.organ}")


if __name__ == "__main__":
    main()

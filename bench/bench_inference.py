"""The whole analysis of one default study, per stage, with peak memory, against reference tools.

Study: the synthetic default (512² CT at 3 mm, 200² PET at 4 mm, 600 mm extent), generated once into
bench/out/inference-study. Weights: a randomly initialised DenseNet121 imported the real way
(`psma-node models import FILE --as D`). Each analysis runs in a fresh process (cold caches for torch,
warm page cache for the files), so the peak RSS is the analysis's own.
Reference tools, same run: dcm2niix converting the CT and the PET (the first step of the authors' pipeline),
and the authors' preprocessing after it (nibabel load, crop, MONAI transforms) on those NIfTI files.
Targets (2 cores): whole analysis <= 10 s with the anatomical localiser, peak RSS <= 2 GB.
Run: `.venv/bin/python -m bench.bench_inference` (or `-m bench inference`).
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

OUT = Path(__file__).resolve().parent / "out"
STUDY = OUT / "inference-study"
REPEATS = 3
TARGET_SECONDS = 10.0
TARGET_RSS_MB = 2048.0


def _study() -> Path:
    if not (STUDY / "ground_truth.json").is_file():
        from dicom_node.synth import SynthOptions, generate_study

        shutil.rmtree(STUDY, ignore_errors=True)
        generate_study(STUDY, SynthOptions(seed=3))
    return STUDY


def _models(work: Path) -> Path:
    """A random checkpoint imported through the CLI, as an admin would import the Zenodo file."""
    import torch

    from inference.network import build_network

    torch.manual_seed(0)
    source = work / "checkpoint_epoch=4.pt"
    torch.save({"net": build_network(4).state_dict()}, source)
    config = work / "config.yaml"
    config.write_text(f"models:\n  models_dir: {work / 'models'}\n")
    subprocess.run(
        [
            str(Path(sys.executable).parent / "psma-node"),
            "--config",
            str(config),
            "models",
            "import",
            str(source),
            "--as",
            "D",
        ],
        check=True,
        capture_output=True,
    )
    return work / "models"


def _child(study: Path, models_dir: Path) -> None:
    """One analysis in this (fresh) process; prints timings and peak RSS as JSON."""
    from inference.analysis import AnalysisOptions, analyse
    from inference.network import resolve_device

    started = time.perf_counter()
    result = analyse(
        sorted((study / "PT").glob("*.dcm")),
        sorted((study / "CT").glob("*.dcm")),
        AnalysisOptions(models_dir=models_dir, device=resolve_device("auto").type),
    )
    total = time.perf_counter() - started
    print(
        json.dumps(
            {
                "total": total,
                "timings": result.timings,
                "finding": result.finding.value,
                "organ": result.localisation.organ,
                "suv_max": result.quantification.suv_max if result.quantification else None,
                "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            }
        )
    )


def _run_child(study: Path, models_dir: Path, passive: bool) -> dict:
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE"} if passive else None
    done = subprocess.run(
        [sys.executable, "-m", "bench.bench_inference", "--child", str(study), str(models_dir)],
        check=True,
        capture_output=True,
        text=True,
        env=env,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def _reference(study: Path, work: Path, center_lps: list[float]) -> dict[str, float]:
    """dcm2niix, then the authors' preprocessing (nibabel, crop, SUV, MONAI) for model D."""
    import nibabel
    import torch
    from monai.transforms import CenterSpatialCrop, Compose, Resize, ScaleIntensity

    truth = json.loads((study / "ground_truth.json").read_text())
    started = time.perf_counter()
    images = {}
    for name in ("CT", "PT"):
        out = work / f"nifti-{name}"
        out.mkdir()
        subprocess.run(
            ["dcm2niix", "-z", "n", "-f", "%s", "-o", str(out), str(study / name)],
            check=True,
            capture_output=True,
        )
        images[name] = next(out.glob("*.nii"))
    converted = time.perf_counter()
    center_ras = np.array([-center_lps[0], -center_lps[1], center_lps[2]])
    channels = []
    for name in ("CT", "PT"):
        image = nibabel.load(images[name])
        inverse = np.linalg.inv(image.affine[:3, :3])
        ends = [
            np.clip(np.round(inverse @ (center_ras + s - image.affine[:3, 3])), 0, image.shape).astype(int)
            for s in (-100, 100)
        ]
        low, high = np.minimum(*ends), np.maximum(*ends)
        array = np.asarray(image.dataobj)[low[0] : high[0], low[1] : high[1], low[2] : high[2]].astype(
            np.float32
        )
        if name == "PT":
            array = array * truth["suv_factor"]
        transform = Compose([ScaleIntensity(), Resize((70, 70, 70)), CenterSpatialCrop((65, 46, 69))])
        channels.append(torch.as_tensor(transform(torch.from_numpy(array)[None])))
    finished = time.perf_counter()
    return {"dcm2niix": converted - started, "authors_preprocess": finished - converted}


STAGES = ["read", "suv", "localise", "quantify", "preprocess", "load_model", "forward", "gradcam"]


def _report(label: str, runs: list[dict]) -> float:
    print(f"{label}: {len(runs)} fresh processes")
    for stage in STAGES:
        values = [run["timings"].get(stage, 0.0) for run in runs]
        print(
            f"  {stage:<10} median {statistics.median(values):6.2f} s   (runs: "
            + ", ".join(f"{v:.2f}" for v in values)
            + ")"
        )
    totals = [run["total"] for run in runs]
    rss = [run["rss_mb"] for run in runs]
    total = statistics.median(totals)
    print(
        f"  whole analysis median {total:.2f} s (runs: {', '.join(f'{t:.2f}' for t in totals)}; target <= "
        f"{TARGET_SECONDS:.0f} s: {'met' if total <= TARGET_SECONDS else 'MISSED'}); peak RSS median "
        f"{statistics.median(rss):.0f} MB (target <= {TARGET_RSS_MB:.0f} MB: "
        f"{'met' if max(rss) <= TARGET_RSS_MB else 'MISSED'})"
    )
    return total


def main() -> None:
    study = _study()
    truth = json.loads((study / "ground_truth.json").read_text())
    with tempfile.TemporaryDirectory(prefix="bench_inference_") as tmp:
        work = Path(tmp)
        models_dir = _models(work)
        default = [_run_child(study, models_dir, passive=False) for _ in range(REPEATS)]
        passive = [_run_child(study, models_dir, passive=True) for _ in range(REPEATS)]
        references = []
        for repeat in range(REPEATS):
            scratch = work / f"ref{repeat}"
            scratch.mkdir()
            references.append(_reference(study, scratch, truth["prostate_centroid_lps"]))
    print(f"study {study}: 512² CT x {truth['ct_shape'][2]}, 200² PET x {truth['pet_shape'][2]}")
    total = _report("torch defaults", default)
    _report("OMP_WAIT_POLICY=PASSIVE (no OpenMP spinning when the cores are shared)", passive)
    first = default[0]
    print(
        f"  finding {first['finding']} (random weights), organ {first['organ']}, "
        f"SUVmax {first['suv_max']:.2f} "
        f"(ground truth {truth['lesion_suv_max']})"
    )
    dcm2niix = statistics.median(r["dcm2niix"] for r in references)
    authors = statistics.median(r["dcm2niix"] + r["authors_preprocess"] for r in references)
    ours = statistics.median(sum(r["timings"][k] for k in ("read", "suv", "preprocess")) for r in default)
    print(f"  reference: dcm2niix CT+PET {dcm2niix:.2f} s -> ratio analysis/dcm2niix {total / dcm2niix:.2f}")
    print(
        f"  reference: authors' pipeline up to the model input (dcm2niix + nibabel + crop + MONAI, centre "
        f"given) {authors:.2f} s; ours (read + suv + preprocess) {ours:.2f} s -> ratio {ours / authors:.2f}"
    )


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--child":
        _child(Path(sys.argv[2]), Path(sys.argv[3]))
    else:
        main()

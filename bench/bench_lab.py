"""Print the trainee path's figures: wheel size, `secureml lab` start-up (target: under
0.5 s, no torch), and how long the example notebook takes in a real Jupyter kernel.

Usage: python bench/bench_lab.py [--no-notebook]

Wall-clock figures depend on the machine's load; CPU time of the child is printed beside
them because it does not.
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
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def timed(argv: list[str], cwd: Path, repeats: int = 5) -> tuple[float, float]:
    """Median wall-clock and CPU seconds of a command."""
    walls, cpus = [], []
    for _ in range(repeats):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        subprocess.run(argv, cwd=cwd, capture_output=True, check=True)
        walls.append(time.perf_counter() - start)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpus.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
    return statistics.median(walls), statistics.median(cpus)


def wheel_figures(folder: Path) -> None:
    # From a copy, so that the build leaves nothing in the checkout.
    source = folder / "source"
    shutil.copytree(REPO, source, ignore=shutil.ignore_patterns(".git", ".venv", "__pycache__", "*.egg-info",
                                                                "build", "dist", "out", "results", "*.db*"))
    subprocess.run([sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(folder / "dist"),
                    str(source)], capture_output=True, check=True)
    wheel = next((folder / "dist").glob("*.whl"))
    with zipfile.ZipFile(wheel) as archive:
        members = archive.infolist()
    content = [m for m in members if "/_content/" in m.filename]
    print(f"wheel {wheel.name}: {wheel.stat().st_size / 1e6:.2f} MB, {len(members)} files "
          f"({len(content)} of content, {sum(m.file_size for m in content) / 1e6:.2f} MB unpacked)")


def startup_figures(folder: Path) -> None:
    python = sys.executable
    for label, argv in (
        ("python -c 'import secureml'", [python, "-c", "import secureml"]),
        ("secureml lab poisoning-01 DIR --force",
         [python, "-m", "secureml.cli", "lab", "poisoning-01", "lab", "--force"]),
        ("secureml lab (list)", [python, "-m", "secureml.cli", "lab"]),
    ):
        wall, cpu = timed(argv, folder)
        print(f"{label:<40} {wall:6.3f} s wall, {cpu:6.3f} s CPU (median of 5)")


def notebook_figures(folder: Path) -> None:
    import nbformat
    from nbclient import NotebookClient

    subprocess.run([sys.executable, "-m", "secureml.cli", "lab", "poisoning-01", "nb", "--force"], cwd=folder,
                   capture_output=True, check=True)
    kernels = folder / "jupyter" / "kernels" / "bench"
    kernels.mkdir(parents=True)
    (kernels / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "bench", "language": "python"}))
    os.environ["JUPYTER_PATH"] = str(folder / "jupyter")
    for attempt in ("first run (cache as found)", "second run (warm cache)"):
        notebook = nbformat.read(folder / "nb/notebook.ipynb", as_version=4)
        start = time.perf_counter()
        NotebookClient(notebook, timeout=3600, kernel_name="bench",
                       resources={"metadata": {"path": str(folder / "nb")}}).execute()
        wall = time.perf_counter() - start
        score = json.loads((folder / "nb/out/poisoning-01/results.json").read_text())["score"]
        print(f"example notebook, {attempt:<28} {wall:6.1f} s wall (kernel start included), score {score}")


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="bench-lab-") as temp:
        folder = Path(temp)
        wheel_figures(folder)
        startup_figures(folder)
        if "--no-notebook" not in sys.argv:
            notebook_figures(folder)


if __name__ == "__main__":
    main()

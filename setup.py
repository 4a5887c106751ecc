"""Build hook: copy what a trainee needs into the package, and nothing an instructor keeps.

The repository keeps `scenarios/`, `labs/` and `datasets/` at the top level. A wheel
carries a copy under `secureml/_content/`, read with importlib.resources (see
src/secureml/paths.py, which also holds the allow-list used here):

- scenarios/*.yaml (the top level only: hidden variants live in scenarios/hidden/);
- of each lab folder, the handout, the starter, pictures and notebooks, never solution*;
- the bundled datasets (*.npz) and their datasheets (*.md).

An editable install reads the checkout itself and copies nothing. The sdist gets the same
files through MANIFEST.in; tests/test_package.py checks that both archives agree.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT / "src"))

from secureml.paths import PACKAGED_CONTENT, trainee_content  # noqa: E402


class BuildPyWithContent(build_py):
    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False):
            return
        target = Path(self.build_lib) / "secureml" / PACKAGED_CONTENT
        if target.exists():
            shutil.rmtree(target)  # a file dropped from the allow-list must not linger
        for relative in trainee_content(ROOT):
            destination = target / relative
            destination.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(ROOT / relative, destination)


setup(cmdclass={"build_py": BuildPyWithContent})

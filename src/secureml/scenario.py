"""The scenario schema: what every scenario file holds, whatever its family.

A scenario is one YAML file under `scenarios/`. It is validated once, by `secureml.loader`,
and becomes a typed, frozen object; no other module reads raw dicts. The part every family
shares is `ScenarioBase`; each family adds its own typed `attack`, `scoring` and `hints`
sections (see `secureml.families`). Unknown keys are rejected everywhere.

The loader (`load`, `load_all`, `apply_overrides`, ...) lives in `secureml.loader`, which
imports the families' schemas, which import this module. `scenario.load` and the other old
names still work: they are looked up in the loader when first used.
"""

from __future__ import annotations

import hashlib
import json
import random
import typing
from collections.abc import Collection
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from secureml.datasets import DATASETS

# Re-exported: loading errors were raised from here before the loader moved out.
from secureml.errors import ConfigError as ConfigError
from secureml.errors import ConfigErrors as ConfigErrors
from secureml.mitigation import TraineeCall
from secureml.models import ARCHITECTURES

ScenarioId = typing.Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9-]*$", max_length=64)]


def distinct_known(values: list[str], known: Collection[str], what: str) -> list[str]:
    """A list field's check: distinct names, each one of `known` (a pydantic field validator's
    body; the ValueError becomes the loader's error for that field)."""
    unknown = [value for value in values if value not in known]
    if unknown or len(set(values)) != len(values):
        raise ValueError(f"distinct {what}, each one of: {', '.join(known)}; found {values}")
    return values


class StrictModel(BaseModel):
    """Frozen, and unknown keys are errors: a typo must never be silently ignored."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Atlas(StrictModel):
    """MITRE ATLAS technique and mitigation ids (https://atlas.mitre.org)."""

    technique: str = Field(pattern=r"^AML\.T\d{4}(\.\d{3})?$")
    technique_name: str
    mitigation: str = Field(pattern=r"^AML\.M\d{4}$")
    mitigation_name: str


# The OWASP Machine Learning Security Top 10, 2023 edition
# (owasp.org/www-project-machine-learning-security-top-10). A scenario names its risk by id.
OWASP_ML_TOP_10 = {
    "ML01": "Input Manipulation Attack",
    "ML02": "Data Poisoning Attack",
    "ML03": "Model Inversion Attack",
    "ML04": "Membership Inference Attack",
    "ML05": "Model Theft",
    "ML06": "AI Supply Chain Attacks",
    "ML07": "Transfer Learning Attack",
    "ML08": "Model Skewing",
    "ML09": "Output Integrity Attack",
    "ML10": "Model Poisoning",
}
OwaspId = Literal["ML01", "ML02", "ML03", "ML04", "ML05", "ML06", "ML07", "ML08", "ML09", "ML10"]


class Distortion(StrictModel):
    """An elastic distortion (Simard, Steinkraus & Platt, ICDAR 2003) of every image the
    scenario draws: each image is resampled along a displacement field of its own, uniform
    noise smoothed by a Gaussian of `sigma` pixels and scaled by `alpha` pixels, seeded by
    the scenario's seed. Each image keeps its class (a digit stays legible), and none equals a
    shipped image. The automatic variants of the labs whose defences could look their inputs
    up in the public dataset add one (`secureml.variants`)."""

    alpha: float = Field(gt=0, le=100, description="the displacement's scale, in pixels")
    sigma: float = Field(ge=1, le=20, description="the smoothing's width, in pixels")


# The elastic distortions of an automatic variant's data (`secureml.variants`), for families
# that ask for one (`ScenarioBase.variant_distortion`; here, not in `secureml.variants`, so
# that the families' schemas import nothing that imports the loader). Any distortion stops
# an exact lookup; a stronger one also hides which shipped image an input came from, but
# changes the lab. Measured on the trainee's variants (stop 24): at Simard et al.'s alpha
# 34, sigma 4, the nearest shipped image (pixels, L2) was the original for 16% of images,
# membership-01's victim fell to accuracy 0.69 and extraction-01's undefended copy to
# fidelity 0.45 (floor 0.29). At alpha 16: the original for 73%, and the references scored
# 91.8 (membership-01) and 99.0 (extraction-01; the undefended copy's fidelity 0.60, floor
# 0.38). At alpha 8: the original for 97%.
VARIANT_DISTORTION = {"alpha": 16.0, "sigma": 4.0}
# Poisoning's, milder: poisoning-01's reference judges clusters by their nearest images in
# pixel space, which alpha 16 blurs. It scored 86.8-93.9 on five variants distorted at alpha
# 16 and 17.4 on a sixth, a dark square over the digits, whose look-alikes fell under its
# cut (stop 24). At alpha 8 it scored 89.1-99.1 on the variants 0-15 and 90.2 on that sixth
# (poison removed 0.96-1.0, clean dropped at most 2.5%), and poisoning-02's 100 on three
# (stop 25). An exact lookup matches nothing at either strength; a nearest-image lookup
# finds most originals at both (tests/test_known_holes.py).
MILD_VARIANT_DISTORTION = {"alpha": 8.0, "sigma": 4.0}


class DatasetConfig(StrictModel):
    name: str
    train_size: int = Field(gt=0)
    test_size: int = Field(gt=0)
    distort: Distortion | None = None

    @field_validator("name")
    @classmethod
    def _known_dataset(cls, name: str) -> str:
        if name not in DATASETS:
            raise ValueError(f"a dataset name, one of: {', '.join(sorted(DATASETS))}")
        return name


class VictimConfig(StrictModel):
    arch: str
    epochs: int = Field(gt=0, le=200)
    batch_size: int = Field(gt=0, le=4096)
    learning_rate: float = Field(gt=0, le=1)
    optimizer: Literal["adam", "sgd"] = "adam"
    weight_decay: float = Field(default=0.0, ge=0, le=1)

    @field_validator("arch")
    @classmethod
    def _known_arch(cls, arch: str) -> str:
        if arch not in ARCHITECTURES:
            raise ValueError(f"an architecture, one of: {', '.join(sorted(ARCHITECTURES))}")
        return arch


class MitigationConfig(StrictModel):
    """Where the lab's files are, relative to the scenario file."""

    starter: str
    solution: str


class ExpectedValue(StrictModel):
    """One recorded metric: its value, how far it may move, and why that far.

    `secureml verify --record` writes these; `secureml.verify` explains the rules.
    """

    value: float
    # None: reported in the table but never verified (e.g. a mean over a few images).
    tolerance: float | None = Field(ge=0)
    # The sample size behind the value: images for a rate, items averaged for a mean.
    n: int | None = Field(default=None, ge=1)
    # Where the tolerance came from, e.g. "binomial: 3 SE at p=0.92, n=100".
    source: str = "set by hand"

    @property
    def verified(self) -> bool:
        return self.tolerance is not None


class ScenarioBase(StrictModel):
    """What every scenario has, whatever its family."""

    id: ScenarioId
    title: str
    family: str
    difficulty: Literal["beginner", "intermediate", "advanced"]
    atlas: Atlas
    owasp: OwaspId = Field(description="the risk's id in the OWASP Machine Learning Security Top 10 (2023)")
    summary: str
    threat_model: str
    task: str
    interface: str
    seed: int = Field(ge=0, lt=2**31)
    dataset: DatasetConfig
    victim: VictimConfig
    mitigation: MitigationConfig
    # Recorded by `secureml verify --record`: metric name -> value, tolerance, n and source.
    expected: dict[str, ExpectedValue] = Field(default_factory=dict)

    # Set by the loader, not by the file.
    source: Path | None = Field(default=None, exclude=True)

    @property
    def starter_path(self) -> Path:
        return self._relative(self.mitigation.starter)

    @property
    def solution_path(self) -> Path:
        return self._relative(self.mitigation.solution)

    def _relative(self, name: str) -> Path:
        base = self.source.parent if self.source else Path.cwd()
        return (base / name).resolve()

    def config_sha256(self) -> str:
        """Hash of everything that defines a run; recorded expectations are left out."""
        payload = self.model_dump(mode="json", exclude={"expected", "source"})
        return _sha256_json(payload)

    def with_seed(self, seed: int) -> ScenarioBase:
        return self.model_copy(update={"seed": seed})

    def variant_overrides(self, rng: random.Random) -> dict[str, Any]:
        """Deep-merge overrides that change the family's secrets for an automatic variant
        (`secureml.variants`), drawn from `rng` only. The seed is drawn there, not here.
        The result must validate against this schema; the base class changes nothing."""
        return {}

    # The function the trainee writes: declared once, here, by each family's schema.
    trainee_call: typing.ClassVar[TraineeCall]
    # How an automatic variant distorts the data afresh (`Distortion`'s fields; None: not at
    # all): set by the families whose defences are handed inputs they could otherwise find,
    # unchanged, in the public dataset (a training set to filter, queries to answer, members
    # to train on). The strengths are measured above (`VARIANT_DISTORTION`).
    variant_distortion: typing.ClassVar[typing.Mapping[str, float] | None] = None

    @property
    def owasp_name(self) -> str:
        return OWASP_ML_TOP_10[self.owasp]

    def taxonomy(self) -> dict[str, str]:
        """The scenario's threat in the two catalogues instructors report against: what a
        gradebook row keeps, so that every export can name it."""
        return {
            "owasp": self.owasp,
            "owasp_name": self.owasp_name,
            "atlas_technique": self.atlas.technique,
            "atlas_technique_name": self.atlas.technique_name,
            "atlas_mitigation": self.atlas.mitigation,
            "atlas_mitigation_name": self.atlas.mitigation_name,
        }

    def scoring_formula(self) -> str:
        raise NotImplementedError


def _sha256_json(payload: Any) -> str:
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


# The loader's names, importable from here as before the loader moved out (PEP 562).
_LOADER_NAMES = ("load", "load_all", "read_yaml", "validate", "apply_overrides", "merge_overrides")


def __getattr__(name: str) -> Any:
    if name in _LOADER_NAMES:
        from secureml import loader

        return getattr(loader, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

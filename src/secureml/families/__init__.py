"""The registry of attack families.

Each entry names the family's light schema (imported here, so `secureml list` and `check`
can validate files without torch) and where its heavy implementation lives (imported only
when a scenario of that family runs).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

from secureml.families.evasion.config import EvasionPreprocessScenario, EvasionScenario
from secureml.families.extraction.config import ExtractionScenario
from secureml.families.inversion.config import InversionApiScenario, InversionScenario
from secureml.families.membership.config import MembershipScenario
from secureml.families.poisoning.config import PoisoningScenario

if TYPE_CHECKING:
    from secureml.families.base import Family
    from secureml.scenario import ScenarioBase


@dataclass(frozen=True)
class FamilySpec:
    name: str
    schema: type[ScenarioBase]
    # "module:attribute" of the object implementing secureml.families.base.Family.
    implementation: str

    def load(self) -> Family:
        module_name, attribute = self.implementation.split(":")
        return getattr(importlib.import_module(module_name), attribute)


FAMILIES: dict[str, FamilySpec] = {
    "poisoning": FamilySpec(
        "poisoning", PoisoningScenario, "secureml.families.poisoning.family:FAMILY"
    ),
    # Two entries, one sub-package: white-box `train` and query-only `protect` interfaces.
    "inversion": FamilySpec("inversion", InversionScenario, "secureml.families.inversion.family:FAMILY"),
    "inversion-api": FamilySpec(
        "inversion-api", InversionApiScenario, "secureml.families.inversion.family:API_FAMILY"
    ),
    # Two entries, one sub-package: `harden` (a model) and `preprocess` (declarative steps).
    "evasion": FamilySpec("evasion", EvasionScenario, "secureml.families.evasion.family:FAMILY"),
    "evasion-preprocess": FamilySpec(
        "evasion-preprocess", EvasionPreprocessScenario, "secureml.families.evasion.family:PREPROCESS_FAMILY"
    ),
    "membership": FamilySpec("membership", MembershipScenario, "secureml.families.membership.family:FAMILY"),
    "extraction": FamilySpec("extraction", ExtractionScenario, "secureml.families.extraction.family:FAMILY"),
}


def family_of(scenario: ScenarioBase) -> Family:
    return FAMILIES[scenario.family].load()

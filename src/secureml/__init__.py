"""secureml: AI-security training labs with real attacks, real defences and honest scores.

In a notebook:

    import secureml
    secureml.list_labs()
    result = secureml.run_lab("poisoning-01", sanitize)

The notebook API is imported on first use, so `import secureml` stays instant (no torch).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = ["LabResult", "__version__", "list_labs", "run_lab"]

if TYPE_CHECKING:
    from secureml.api import LabResult, list_labs, run_lab


def __getattr__(name: str) -> Any:
    if name in ("LabResult", "list_labs", "run_lab"):
        from secureml import api

        return getattr(api, name)
    raise AttributeError(f"module 'secureml' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))

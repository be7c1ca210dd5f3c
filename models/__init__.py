"""The model zoo (needs torch): architectures, weight importers and the registry.

Public API: `list_models(pattern)`, `get_spec(name)`, `build(name, pretrained=True)`. This is the only place
that imports the zoo modules, which register their entries on import.
"""

from edgepipe.models import zoo  # noqa: F401  (registers every entry)
from edgepipe.models.registry import build, get_spec, list_models

__all__ = ["list_models", "get_spec", "build"]

"""Optional dependencies (pandas, matplotlib, xarray), imported when first used."""

from __future__ import annotations

import importlib
from types import ModuleType

#: What to install for each optional module.
INSTALL = {
    "pandas": "pip install 'dpplayers[sensitivity]' (or pandas)",
    "matplotlib": "pip install 'dpplayers[sensitivity]' (or matplotlib)",
    "matplotlib.pyplot": "pip install 'dpplayers[sensitivity]' (or matplotlib)",
    "xarray": "pip install xarray",
}


def require(module: str) -> ModuleType:
    """Import ``module`` or raise ImportError saying what to install."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ImportError(f"this feature of dpplayers.sensitivity needs {module}: "
                          f"{INSTALL.get(module, 'pip install ' + module)}.") from exc

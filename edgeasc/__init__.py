"""edgeasc: train -> compress -> export -> run low-complexity acoustic scene classifiers.

Importing the package never imports torch: the device runtime must work without it.
"""

__version__ = "0.1.0"

from edgeasc.errors import EdgeascError  # noqa: E402

__all__ = ["EdgeascError", "__version__"]

"""Support for the original CompVis ImageBART releases (Lightning checkpoints + yaml configs).

``python -m imagebart_core.convert`` turns a release into the native model file; see
``docs/original-checkpoints.md``.
"""

from .convert import ConversionError, ReleaseFiles, convert_release, explicit_release, locate_release
from .releases import RELEASES
from .safe_pickle import OriginalFileError, RefusedGlobalError

__all__ = [
    "RELEASES",
    "ConversionError",
    "OriginalFileError",
    "RefusedGlobalError",
    "ReleaseFiles",
    "convert_release",
    "explicit_release",
    "locate_release",
]

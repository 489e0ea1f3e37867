"""Dataset adapters: each turns one public dataset's metadata into the lesion table."""

from mammoseg.adapters.cdd_cesm import load_cdd_cesm
from mammoseg.adapters.common import IMAGE_ABSENT, AdapterError, AdapterResult, Reject
from mammoseg.adapters.inbreast import load_inbreast, render_inbreast_mask
from mammoseg.adapters.mias import load_mias

__all__ = [
    "IMAGE_ABSENT",
    "AdapterError",
    "AdapterResult",
    "Reject",
    "load_cdd_cesm",
    "load_inbreast",
    "load_mias",
    "render_inbreast_mask",
]

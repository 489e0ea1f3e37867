"""Synthetic data for the demo and the tests (the project's own generator, no download)."""

from __future__ import annotations

from typing import Any

from prefect import task

from mammoseg.layout import SYNTH_CBIS_PREFIX, SYNTH_MIAS_PREFIX
from mammoseg.settings import get_settings
from mammoseg.storage import open_store


def synthesize(
    *,
    store_url: str,
    out_url: str | None = None,
    patients: int = 12,
    height: int = 320,
    width: int = 200,
    mias_images: int = 12,
    mias_size: int | None = None,
    bad: int = 0,
    seed: int = 0,
) -> dict[str, Any]:
    """Write a CBIS-DDSM-shaped set and a mini-MIAS-format held-out set; return their roots.
    ``mias_size`` None: :class:`~mammoseg.synth.MiasSynthParams`' size."""
    from mammoseg.synth import CbisSynthParams, MiasSynthParams, generate_cbis, generate_mias

    store = open_store(out_url or store_url, get_settings())
    cbis = generate_cbis(
        store,
        CbisSynthParams(n_patients=patients, height=height, width=width, seed=seed, n_bad=bad, prefix=SYNTH_CBIS_PREFIX),
    )
    result: dict[str, Any] = {
        "cbis_source_url": store.uri(SYNTH_CBIS_PREFIX).rstrip("/"),
        "cbis_images": cbis.n_images,
        "cbis_lesions": cbis.n_lesions,
        "defective_cases": len(cbis.bad_cases),
    }
    if mias_images:
        mias = generate_mias(
            store,
            MiasSynthParams(n_women=max(1, mias_images // 2), seed=seed + 1, prefix=SYNTH_MIAS_PREFIX,
                            **({"size": mias_size} if mias_size else {})),
        )
        result |= {"mias_source_url": store.uri(SYNTH_MIAS_PREFIX).rstrip("/"), "mias_images": mias.n_images}
    return result


synthesize_task = task(name="synthesize-data")(synthesize)

"""A real Orthanc (Debian's orthanc + orthanc-dicomweb) for the whole session, on free loopback
ports, DICOMweb at /dicom-web/, no authentication (loopback only), StableAge 1 s."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from mammoseg.orthanc_local import LocalOrthanc, OrthancUnavailable, local_orthanc, missing


@pytest.fixture(scope="session")
def orthanc() -> Iterator[LocalOrthanc]:
    why = missing()
    if why:
        pytest.skip(f"no local Orthanc: {why}")
    try:
        with local_orthanc(stable_age_s=1) as server:
            yield server
    except OrthancUnavailable as exc:
        pytest.skip(f"Orthanc did not start: {exc}")

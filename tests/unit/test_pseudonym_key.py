"""The pseudonym key: required for real runs (no public default); the demo's is random per install."""

from __future__ import annotations

import stat

import pytest
from pydantic import SecretStr

from mammoseg.ids import patient_pseudonym
from mammoseg.settings import (
    DEMO_KEY_FILE,
    PseudonymKeyMissing,
    Settings,
    demo_pseudonym_key,
    get_settings,
    require_pseudonym_key,
)


def test_there_is_no_default_key(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.delenv("MAMMOSEG_PSEUDONYM_KEY")
    monkeypatch.chdir(tmp_path)  # no .env
    assert get_settings().pseudonym_key is None
    with pytest.raises(PseudonymKeyMissing) as err:
        require_pseudonym_key(get_settings())
    message = str(err.value)
    assert "MAMMOSEG_PSEUDONYM_KEY is not set" in message and "\n" not in message


@pytest.mark.parametrize("value", ["", "   ", "mammoseg-public-demo-key"])
def test_blank_or_public_keys_are_refused(value: str) -> None:
    with pytest.raises(PseudonymKeyMissing, match="MAMMOSEG_PSEUDONYM_KEY"):
        require_pseudonym_key(Settings(pseudonym_key=SecretStr(value)))


def test_the_configured_key_is_used(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAMMOSEG_PSEUDONYM_KEY", "a-private-key")
    assert require_pseudonym_key(get_settings()) == "a-private-key"
    assert demo_pseudonym_key(get_settings()) == "a-private-key"  # the demo uses it too
    assert "a-private-key" not in repr(get_settings())  # a secret, never printed


def test_the_demo_key_is_random_per_install_kept_private_and_stable(
    tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MAMMOSEG_PSEUDONYM_KEY")
    one = Settings(work_dir=tmp_path / "one")
    two = Settings(work_dir=tmp_path / "two")
    key = demo_pseudonym_key(one)
    path = tmp_path / "one" / DEMO_KEY_FILE
    assert path.read_text().strip() == key and len(key) == 64
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert demo_pseudonym_key(one) == key  # made once, then read back
    assert demo_pseudonym_key(two) != key  # another install, another key
    # with the old public constant, trying the 100,000 P_NNNNN ids reversed a pseudonym at once;
    # with a per-install random key, the same pseudonym is not reproducible without the file
    pid = "P_00042"
    assert patient_pseudonym(key, "cbis-ddsm", pid) != patient_pseudonym(
        "mammoseg-public-demo-key", "cbis-ddsm", pid
    )

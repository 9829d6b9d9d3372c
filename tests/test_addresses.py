"""One spelling of an address for every comparison: no spelling slips past a suppression."""

from __future__ import annotations

import unicodedata
from pathlib import Path

import idna
import pytest

from spark_mail.audience import (
    AudienceReport,
    address_key,
    canonical_address,
    iter_readers,
    load_suppressed,
)


def readers_of(subscribers: str, suppressions: str | None, folder: Path) -> list[str]:
    csv_file = folder / "subscribers.csv"
    csv_file.write_text(subscribers, encoding="utf-8")
    listed = None
    if suppressions is not None:
        listed = folder / "suppressed.txt"
        listed.write_text(suppressions, encoding="utf-8")
    return [r.email for r in iter_readers(csv_file, listed, report=AudienceReport(csv_file))]


def test_unicode_domain_is_suppressed_by_its_idna_spelling(tmp_path: Path):
    """`user@bücher.de` is not mailed when `user@xn--bcher-kva.de` is suppressed."""
    got = readers_of("email\nuser@bücher.de\nok@example.com\n", "user@xn--bcher-kva.de\n", tmp_path)
    assert got == ["ok@example.com"]


def test_idna_domain_is_suppressed_by_its_unicode_spelling(tmp_path: Path):
    """And the other way round, in any case."""
    got = readers_of("email\nuser@xn--bcher-kva.de\n", "USER@BÜCHER.DE\n", tmp_path)
    assert got == []


def test_nfc_local_part_is_suppressed_by_its_nfd_spelling(tmp_path: Path):
    """An NFC `josé@` is not mailed when the NFD `josé@` is suppressed."""
    nfc = unicodedata.normalize("NFC", "josé@example.com")
    nfd = unicodedata.normalize("NFD", "josé@example.com")
    assert nfc != nfd
    got = readers_of(f"email\n{nfc}\n", f"{nfd}\n", tmp_path)
    assert got == []


def test_unsubscribed_row_in_idna_suppresses_the_unicode_row(tmp_path: Path):
    """`anna@müller.de` is not mailed when `anna@xn--mller-kva.de` is unsubscribed on
    another row of the same file."""
    got = readers_of(
        "email,unsubscribed\nanna@müller.de,\nanna@xn--mller-kva.de,yes\nbo@example.com,\n",
        None,
        tmp_path,
    )
    assert got == ["bo@example.com"]


def test_duplicate_spellings_are_one_reader(tmp_path: Path):
    """The same mailbox written twice in different spellings gets one copy."""
    got = readers_of("email\nAnna@Müller.de\nanna@xn--mller-kva.de\n", None, tmp_path)
    assert len(got) == 1


def spellings(local: str, domain: str) -> list[str]:
    """Ways the same mailbox is written: case, Unicode form, IDNA."""
    forms = []
    ascii_form = idna.encode(domain, uts46=True).decode()
    for loc in (local, local.upper(), local.title()):
        for dom in (domain, domain.upper(), ascii_form, ascii_form.upper()):
            for form in ("NFC", "NFD"):
                forms.append(unicodedata.normalize(form, f"{loc}@{dom}"))
    return forms


@pytest.mark.slow
def test_any_suppressed_spelling_suppresses_every_other_spelling():
    """Property: whichever spelling is suppressed, every spelling of that mailbox has the
    same key (so the suppression holds for all of them). (hypothesis is imported here, not
    at the top: the quick loop, which leaves this test out, does not load it at all.)"""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    local_chars = st.sampled_from(
        list("abcdefghijklmnopqrstuvwxyz0123456789._-+") + list("éüöñçåøß")
    )
    domain_label = st.text(
        alphabet=st.sampled_from(list("abcdefghijklmnopqrstuvwxyz0123456789") + list("üöäéñç")),
        min_size=1,
        max_size=12,
    ).filter(lambda s: not s.startswith("-"))

    @settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow], deadline=None)
    @given(
        local=st.text(alphabet=local_chars, min_size=1, max_size=16).filter(
            lambda s: s[0] not in "." and s[-1] != "." and ".." not in s
        ),
        labels=st.lists(domain_label, min_size=1, max_size=2),
        tld=st.sampled_from(["de", "com", "org", "fr"]),
        suppressed_index=st.integers(min_value=0),
    )
    def every_spelling_has_one_key(
        local: str, labels: list[str], tld: str, suppressed_index: int
    ) -> None:
        domain = ".".join([*labels, tld])
        try:
            forms = spellings(local, domain)
        except idna.IDNAError:
            return  # not a domain IDNA can write: nothing to compare
        suppressed = forms[suppressed_index % len(forms)]
        keys = {address_key(form) for form in forms}
        assert keys == {address_key(suppressed)}, [canonical_address(f) for f in forms]

    every_spelling_has_one_key()


def test_suppression_file_keys_match_reader_keys(tmp_path: Path):
    """The suppression file is read through the same canonical spelling."""
    listed = tmp_path / "s.txt"
    listed.write_text("# comment\nJOSÉ@BÜCHER.DE  # unsubscribed by phone\n", encoding="utf-8")
    assert load_suppressed(listed) == {address_key("josé@xn--bcher-kva.de")}

"""Email addresses: one canonical spelling for comparing them, and the validator.

Readers, suppressions (the file, the columns, the reader desk's store) and the ledger all
compare addresses through `canonical_address`, so that no spelling of an address slips
past a suppression of another spelling:

- Unicode is NFC-normalised (an NFD `josé@` is the NFC `josé@`);
- the local part is case-folded: mailbox names are case-insensitive in practice, and
  treating `Anna@` and `anna@` as one reader can only err on the side of not mailing;
- the domain is written in IDNA's ASCII form (UTS 46 mapping: `BÜCHER.de`, `bücher.de`
  and `xn--bcher-kva.de` are one domain); a domain IDNA refuses is case-folded as it is.
"""

from __future__ import annotations

import functools
import re
import unicodedata

# ASCII dot-atom local part: every address this accepts, email-validator accepts too (the
# test suite checks that). Anything else goes through email-validator itself.
SIMPLE_ADDRESS_RE = re.compile(
    r"([A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*)@([^@]+)"
)


@functools.lru_cache(maxsize=65536)
def ascii_domain(domain: str) -> str:
    """The domain in IDNA ASCII form, lowercased (domains repeat: cached)."""
    import idna

    cleaned = unicodedata.normalize("NFC", domain.strip().rstrip("."))
    if cleaned.isascii() and "xn--" not in cleaned.lower():
        return cleaned.lower()
    try:
        return idna.encode(cleaned, uts46=True).decode("ascii").lower()
    except (idna.IDNAError, UnicodeError, ValueError):
        return cleaned.casefold()


def canonical_address(address: str) -> str:
    """The spelling every comparison of addresses uses (see the module docstring)."""
    text = address.strip()
    local, at, domain = text.rpartition("@")
    if not at:
        return unicodedata.normalize("NFC", text).casefold()
    if local.isascii():
        local = local.lower()
    else:
        local = unicodedata.normalize("NFC", unicodedata.normalize("NFC", local).casefold())
    return f"{local}@{ascii_domain(domain)}"


def address_key(address: str) -> int:
    """A compact in-memory key of `canonical_address`: Python's 64-bit string hash (keyed
    per process, so keys are only compared within one run; stores keep the text)."""
    return hash(canonical_address(address))


class AddressValidator:
    """email-validator's syntax rules (no DNS), with a fast path for the common case.

    email-validator takes ~20 microseconds an address; 100,000 readers would spend two
    seconds there. Plain ASCII local parts are checked with a regex and each domain is
    validated once (domains repeat: gmail.com), which is ~10x faster and gives the same
    verdicts; unusual addresses get email-validator's full treatment and its message.
    """

    def __init__(self) -> None:
        from email_validator import EmailNotValidError, validate_email

        self._validate = validate_email
        self._error = EmailNotValidError
        self._domains: dict[str, str | None] = {}  # domain -> normalised domain (None: bad)

    def normalise(self, address: str) -> str:
        """The normalised address; ValueError with the validator's reason when invalid."""
        match = SIMPLE_ADDRESS_RE.fullmatch(address)
        if match and match.end(1) <= 64 and len(address) <= 254:
            domain = match.group(2)
            good = self._domain(domain)
            if good == domain:
                return address
            if good is not None:
                normalised = f"{match.group(1)}@{good}"
                if len(normalised) <= 254:
                    return normalised
        return self._full(address)

    def _domain(self, domain: str) -> str | None:
        if domain in self._domains:
            return self._domains[domain]
        try:
            good: str | None = self._validate(f"a@{domain}", check_deliverability=False).domain
        except self._error:
            good = None
        if len(self._domains) < 100_000:
            self._domains[domain] = good
        return good

    def _full(self, address: str) -> str:
        try:
            return str(self._validate(address, check_deliverability=False).normalized)
        except self._error as exc:
            raise ValueError(str(exc)) from None


def deliverable_address(address: str) -> str:
    """The address as a transport gets it: the local part as written (NFC), the domain in
    IDNA's ASCII form, so only a non-ASCII local part needs SMTPUTF8."""
    local, at, domain = address.strip().rpartition("@")
    if not at:
        return address.strip()
    return f"{unicodedata.normalize('NFC', local)}@{ascii_domain(domain)}"

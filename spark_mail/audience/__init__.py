"""Your own subscriber list: who gets an issue, and who must not.

addresses.py    canonical_address / address_key (one spelling for every comparison),
                AddressValidator (email-validator's rules, with a fast path)
subscribers.py  the subscribers CSV, streamed: Reader, iter_readers, check_audience
suppression_lists.py  the suppression file and the desk's store, as sets of keys
suppressions.py the reader desk's store (readers.sqlite3): SuppressionStore, unsubscribes
                and re-subscribes, the poll votes
"""

from __future__ import annotations

from spark_mail.audience.addresses import AddressValidator, address_key, canonical_address
from spark_mail.audience.subscribers import (
    AudienceError,
    AudiencePaths,
    AudienceReport,
    Reader,
    RowProblem,
    audience_paths,
    check_audience,
    is_set,
    iter_readers,
    load_suppressed,
    normalise_column,
)
from spark_mail.audience.suppression_lists import DESK_REASON

__all__ = [
    "DESK_REASON",
    "AddressValidator",
    "AudienceError",
    "AudiencePaths",
    "AudienceReport",
    "Reader",
    "RowProblem",
    "address_key",
    "audience_paths",
    "canonical_address",
    "check_audience",
    "is_set",
    "iter_readers",
    "load_suppressed",
    "normalise_column",
]

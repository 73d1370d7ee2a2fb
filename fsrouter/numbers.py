"""Phone numbers: which caller IDs are clients, and their one canonical (E.164) form.

A caller ID is written by whoever places the call: anything but digits, a leading '+', and the
separators people type is refused here, so nothing hostile ever becomes a client.
"""
from __future__ import annotations

import re

import phonenumbers

_TYPED = re.compile(r"^\+?[0-9 ().\-]{1,40}$")
# Internal extensions are short; the shortest real subscriber numbers in E.164 have 7+ digits.
MIN_CLIENT_DIGITS = 7


class NotAClient(ValueError):
    """The text is not a client's phone number (an extension, garbage, or hostile input)."""


def normalize(raw: str, region: str) -> str:
    """'0501234567' (UA) -> '+380501234567'. Raises NotAClient with a one-line reason."""
    text = (raw or "").strip()
    if not _TYPED.match(text):
        raise NotAClient(f"not a phone number: {text[:40]!r}")
    digits = re.sub(r"\D", "", text)
    if len(digits) < MIN_CLIENT_DIGITS:
        raise NotAClient(f"{text!r} is an internal extension, not a client number")
    if text.startswith("00"):
        text = "+" + digits[2:]
    try:
        parsed = phonenumbers.parse(text, region)
    except phonenumbers.NumberParseException:
        parsed = None
    if parsed is None or not phonenumbers.is_possible_number(parsed):
        # A carrier that delivers the international form without its '+' (380501234567).
        try:
            parsed = phonenumbers.parse("+" + digits, None)
        except phonenumbers.NumberParseException:
            parsed = None
        if parsed is None or not phonenumbers.is_possible_number(parsed):
            raise NotAClient(f"{text!r} is not a possible phone number for region {region}")
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)


def client_or_none(raw: str | None, region: str) -> str | None:
    try:
        return normalize(raw or "", region)
    except NotAClient:
        return None

"""Phone numbers: which caller IDs are clients, and their one canonical (E.164) form.

A caller ID is written by whoever places the call: anything but digits, a leading '+', and the
separators people type is refused here, so nothing hostile ever becomes a client.

Decisions the issue leaves open (each has a test in tests/test_numbers.py):

* Only spaces around the text are trimmed. Any other character outside ``+0-9 ().-`` -- tabs,
  newlines, dial-string or API syntax -- makes the text "not a client", even at the very end.
* Fewer than MIN_CLIENT_DIGITS digits is an internal extension, never a client.
* A number phonenumbers can only call "possible, local only" (no area code, e.g. 7 digits in UA)
  is not a client either: it has no single E.164 form, so it could not be matched to a binding.
* Digits without '+' that start with the default region's country code (``380501234567`` in UA,
  ``491701234567`` in DE) are read as the international form without its '+' when that reading
  is a valid number; otherwise the national reading is tried first, then the international one.
"""
from __future__ import annotations

import re

import phonenumbers

_TYPED = re.compile(r"\+?[0-9 ().\-]{1,40}")
# Internal extensions are short; the shortest real subscriber numbers in E.164 have 7+ digits.
MIN_CLIENT_DIGITS = 7
MAX_E164_DIGITS = 15


class NotAClient(ValueError):
    """The text is not a client's phone number (an extension, garbage, or hostile input)."""


def _parse(text: str, region: str | None):
    """A parsed number that is possible in full (not only locally), else None."""
    try:
        parsed = phonenumbers.parse(text, region)
    except phonenumbers.NumberParseException:
        return None
    if phonenumbers.is_possible_number_with_reason(parsed) != phonenumbers.ValidationResult.IS_POSSIBLE:
        return None
    return parsed


def normalize(raw: str, region: str) -> str:
    """'0501234567' (UA) -> '+380501234567'. Raises NotAClient with a one-line reason."""
    text = (raw if isinstance(raw, str) else "").strip(" ")
    if not _TYPED.fullmatch(text):
        raise NotAClient(f"not a phone number: {text[:40]!r}")
    digits = re.sub(r"[^0-9]", "", text)
    if len(digits) < MIN_CLIENT_DIGITS:
        raise NotAClient(f"{text!r} is an internal extension, not a client number")
    parsed, international = None, "+" + digits
    if text.startswith(("+", "00")):
        if text.startswith("00"):
            international = "+" + digits[2:]
        parsed = _parse(international, None)
    else:
        # A carrier that delivers the international form without its '+' (380501234567).
        country = phonenumbers.country_code_for_region(region or "")
        if country and digits.startswith(str(country)):
            parsed = _parse(international, None)
            if parsed is not None and not phonenumbers.is_valid_number(parsed):
                parsed = None
        if parsed is None:
            parsed = _parse(text, region)
            if parsed is None:
                parsed = _parse(international, None)
            else:
                international = None  # read nationally: the read-back below is a different parse
    if parsed is None:
        raise NotAClient(f"{text!r} is not a possible phone number for region {region}")
    e164 = phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)
    # A client's number must read back as itself, or one client would drift into several
    # (phonenumbers reads zeros after some country codes as a national prefix). When `e164` is
    # the very text just parsed (no region), reading it back is that same parse: skipped.
    if e164 != international:
        again = _parse(e164, None)
        if again is None or phonenumbers.format_number(again, phonenumbers.PhoneNumberFormat.E164) != e164:
            raise NotAClient(f"{text!r} has no stable international form")
    # ... and the form must itself be a client: 4306507 in RU reads as +43 06507, whose
    # national 0 goes, leaving +436507, which would be refused as an extension when read back.
    if len(e164) - 1 < MIN_CLIENT_DIGITS:
        raise NotAClient(f"{text!r} is {e164} in full, too short for a client number")
    # phonenumbers calls some longer numbers possible (627272727567627274 in RU, as +62...);
    # E.164 has at most 15 digits, and the store takes no more.
    if len(e164) - 1 > MAX_E164_DIGITS:
        raise NotAClient(f"{text!r} is {e164} in full, longer than E.164's {MAX_E164_DIGITS} digits")
    return e164


def client_or_none(raw: str | None, region: str) -> str | None:
    try:
        return normalize(raw or "", region)
    except NotAClient:
        return None

"""Rule: a client is a phone number normalised to E.164 with the default region; extensions and
anything else are never clients."""
import pytest

from fsrouter.core.numbers import NotAClient, client_or_none, normalize


def test_same_client_in_three_forms_is_one_client_in_region_ua():
    forms = ["0501234567", "380501234567", "+380501234567"]
    assert {normalize(f, "UA") for f in forms} == {"+380501234567"}


@pytest.mark.parametrize("typed", ["050 123 45 67", "(050) 123-45-67", " +380 50 123 45 67 ",
                                   "050.123.45.67", "00380501234567"])
def test_typed_separators_and_00_prefix_are_the_same_client(typed):
    assert normalize(typed, "UA") == "+380501234567"


@pytest.mark.parametrize("region, forms, e164", [
    ("DE", ["01701234567", "491701234567", "+491701234567"], "+491701234567"),
    ("US", ["2125551234", "12125551234", "+12125551234"], "+12125551234"),
    ("GB", ["02079460000", "442079460000", "+442079460000"], "+442079460000"),
])
def test_three_forms_are_one_client_in_other_regions(region, forms, e164):
    # DE: '491701234567' is also a valid *national* reading (+49 491701234567); the
    # international reading without '+' wins when the digits start with the region's code.
    assert {normalize(f, region) for f in forms} == {e164}


def test_region_decides_national_numbers():
    assert normalize("02079460000", "GB") == "+442079460000"
    assert normalize("+442079460000", "UA") == "+442079460000"  # '+' ignores the region


@pytest.mark.parametrize("ext", ["1001", "100", "5", "123456", "+1001", "*97", "1001#"])
def test_extension_is_never_a_client(ext):
    with pytest.raises(NotAClient):
        normalize(ext, "UA")
    assert client_or_none(ext, "UA") is None


def test_local_only_number_is_not_a_client():
    # Decision: 7 digits in UA is "possible, local only" -- no area code, no single E.164 form.
    with pytest.raises(NotAClient):
        normalize("1234567", "UA")
    with pytest.raises(NotAClient):
        normalize("12345678", "UA")  # neither UA nor (as +1 2345678) a full US number


@pytest.mark.parametrize("junk", [
    "", "   ", "anonymous", "unknown", "sip:0501234567@example.com", "0501234567;user=phone",
    "0501234567,user/1002", "0501234567|user/1002", "[leg_timeout=1]0501234567",
    "{origination_caller_id_number=1}0501234567", "${domain_name}0501234567",
    "0501234567^^:x", "0501234567&bridge(x)", "0501234567'", '"0501234567"',
    "0501234567\n", "0501234567\napi originate", "0501234567\r", "\t0501234567", "+380 50 123 45 67 ext 9",
    "٠٥٠١٢٣٤٥٦٧",  # Arabic-Indic digits
    "0" * 41, "+" + "9" * 20, "++380501234567",
])
def test_hostile_or_garbage_text_is_never_a_client(junk):
    with pytest.raises(NotAClient):
        normalize(junk, "UA")
    assert client_or_none(junk, "UA") is None


def test_none_is_not_a_client():
    assert client_or_none(None, "UA") is None
    with pytest.raises(NotAClient):
        normalize(None, "UA")


def test_not_a_client_is_a_value_error_with_one_line_reason():
    with pytest.raises(ValueError) as info:
        normalize("1001", "UA")
    assert "\n" not in str(info.value)


def test_impossible_number_is_not_a_client():
    with pytest.raises(NotAClient):
        normalize("+0000000", "UA")
    with pytest.raises(NotAClient):
        normalize("05012345678901", "UA")


def test_client_or_none_returns_e164():
    assert client_or_none("0501234567", "UA") == "+380501234567"


def test_normalized_form_is_a_fixed_point():
    assert normalize("+380501234567", "UA") == "+380501234567"
    assert normalize(normalize("01701234567", "DE"), "DE") == "+491701234567"


def test_a_number_whose_full_form_is_too_short_is_not_a_client():
    # Found by fuzzing: 4306507 in RU reads as +43 06507 and comes out as +436507 (national 0
    # dropped), which normalize() itself refuses as an extension when it reads it back.
    with pytest.raises(NotAClient):
        normalize("4306507", "RU")


def test_a_number_longer_than_e164_allows_is_not_a_client():
    # Found by fuzzing: phonenumbers calls +627272727567627274 (18 digits) possible.
    with pytest.raises(NotAClient):
        normalize("627272727567627274", "RU")

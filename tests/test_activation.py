"""rsp.activation: Activation Code parsing and formatting (SGP.22 4.1), Confirmation Code hash."""

from __future__ import annotations

import hashlib
import json

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from rsp import testdata
from rsp.activation import (
    ActivationCode,
    ActivationCodeError,
    hash_confirmation_code,
    parse_activation_code,
)
from rsp.errors import DecodeError


def valid_codes() -> list[str]:
    return json.loads((testdata.testdata_dir() / "vectors" / "primitives.json").read_text())["activation_codes_valid"]


@pytest.mark.parametrize("text", valid_codes())
def test_published_examples_parse_and_format_back(text):
    ac = parse_activation_code(text)
    assert ac.to_text(prefix=True) == text
    assert str(ac) == text
    assert parse_activation_code(text.removeprefix("LPA:")) == ac
    assert ac.to_text(prefix=False) == text.removeprefix("LPA:")


def test_published_examples_fields():
    plain, cc_only, oid_and_cc, oid_only, no_token = (parse_activation_code(t) for t in valid_codes())
    assert plain == ActivationCode("SMDP.GSMA.COM", "04386-AGYFT-A74Y8-3F815", None, False)
    assert cc_only == ActivationCode("SMDP.GSMA.COM", "04386-AGYFT-A74Y8-3F815", None, True)
    assert oid_and_cc == ActivationCode("SMDP.GSMA.COM", "04386-AGYFT-A74Y8-3F815", "1.3.6.1.4.1.31746", True)
    assert oid_only.smdp_oid == "1.3.6.1.4.1.31746" and not oid_only.cc_required
    assert no_token.matching_id == "" and no_token.smdp_oid == "1.3.6.1.4.1.31746"


def test_lower_case_fqdn_is_accepted():
    ac = parse_activation_code("LPA:1$rsp.example.com$K2-LM3N4P5Q")
    assert ac.smdp_address == "rsp.example.com"


@pytest.mark.parametrize(
    ("text", "field", "fragment"),
    [
        ("", "AC_Format", "must be '1'"),
        ("2$SMDP.GSMA.COM$ABC", "AC_Format", "found '2'"),
        ("lpa:1$SMDP.GSMA.COM$ABC", "AC_Format", "found 'lpa:1'"),
        (" LPA:1$SMDP.GSMA.COM$ABC", "AC_Format", "found ' LPA:1'"),
        ("LPA:1", "SM-DP+ Address", "missing"),
        ("1$SMDP.GSMA.COM", "AC_Token", "missing"),
        ("1$$ABC", "SM-DP+ Address", "must not be empty"),
        ("1$smdp$ABC", "SM-DP+ Address", "not a fully qualified"),
        ("1$-smdp.example.com$ABC", "SM-DP+ Address", "label '-smdp'"),
        ("1$smdp-.example.com$ABC", "SM-DP+ Address", "label 'smdp-'"),
        ("1$smdp..example.com$ABC", "SM-DP+ Address", "label ''"),
        ("1$smdp.example.com.$ABC", "SM-DP+ Address", "label ''"),
        ("1$smdp.example.com:0443$ABC", "SM-DP+ Address", "port '0443'"),
        ("1$smdp.example.com:70000$ABC", "SM-DP+ Address", "port '70000'"),
        ("1$https://smdp.example.com$ABC", "SM-DP+ Address", "port '//smdp.example.com'"),
        ("1$smdp.exa_mple.com:8443$ABC", "SM-DP+ Address", "label 'exa_mple'"),
        ("1$sm_dp.example.com$ABC", "SM-DP+ Address", "label 'sm_dp'"),
        ("1$" + "a" * 64 + ".com$ABC", "SM-DP+ Address", "1-63"),
        ("1$127.0.0.1$ABC", "SM-DP+ Address", "all-numeric top-level"),
        ("1$SMDP.GSMA.COM$abc", "AC_Token", "found 'abc'"),
        ("1$SMDP.GSMA.COM$AB C", "AC_Token", "found ' '"),
        ("1$SMDP.GSMA.COM$AB_C", "AC_Token", "found '_'"),
        ("1$SMDP.GSMA.COM$ABC\n", "AC_Token", "found '\\n'"),
        ("1$SMDP.GSMA.COM$ABC$", "SM-DP+ OID", "stray '$'"),
        ("1$SMDP.GSMA.COM$ABC$$", "Confirmation Code Required Flag", "found ''"),
        ("1$SMDP.GSMA.COM$ABC$$0", "Confirmation Code Required Flag", "found '0'"),
        ("1$SMDP.GSMA.COM$ABC$1.3.6.1$Y", "Confirmation Code Required Flag", "found 'Y'"),
        ("1$SMDP.GSMA.COM$ABC$1.3.6.1$1$", "structure", "6 '$'-separated fields"),
        ("1$SMDP.GSMA.COM$ABC$$1$1$X", "structure", "7 '$'-separated fields"),
        ("1$SMDP.GSMA.COM$ABC$1", "SM-DP+ OID", "at least two arcs"),
        ("1$SMDP.GSMA.COM$ABC$1.", "SM-DP+ OID", "dotted decimal"),
        ("1$SMDP.GSMA.COM$ABC$1..3", "SM-DP+ OID", "dotted decimal"),
        ("1$SMDP.GSMA.COM$ABC$1.03.6", "SM-DP+ OID", "leading zeros"),
        ("1$SMDP.GSMA.COM$ABC$A.B", "SM-DP+ OID", "dotted decimal"),
        ("1$SMDP.GSMA.COM$ABC$3.1", "SM-DP+ OID", "first arc"),
        ("1$SMDP.GSMA.COM$ABC$1.40", "SM-DP+ OID", "second arc"),
        ("1$SMDP.GSMA.COM$" + "A" * 240, "length", "maximum is 255"),
    ],
)
def test_each_rule_violation_names_field_and_rule(text, field, fragment):
    with pytest.raises(ActivationCodeError) as info:
        parse_activation_code(text)
    assert info.value.field.startswith(field)
    assert fragment in str(info.value)
    assert isinstance(info.value, DecodeError)


@pytest.mark.parametrize("oid", ["0.39", "2.999.1", "1.3.6.1.4.1.31746", "2.100"])
def test_valid_oid_forms(oid):
    assert parse_activation_code(f"1$SMDP.GSMA.COM$ABC${oid}").smdp_oid == oid


def test_length_limit_is_exactly_255_characters_without_prefix():
    head = "1$SMDP.GSMA.COM$"
    fits = head + "A" * (255 - len(head))
    assert parse_activation_code("LPA:" + fits).matching_id == "A" * (255 - len(head))
    with pytest.raises(ActivationCodeError, match="maximum is 255"):
        parse_activation_code(fits + "A")


def test_constructor_checks_the_same_rules():
    with pytest.raises(ActivationCodeError, match="AC_Token"):
        ActivationCode("SMDP.GSMA.COM", "lower")
    with pytest.raises(ActivationCodeError, match="SM-DP\\+ Address"):
        ActivationCode(".".join(["a" * 63] * 4), "")  # 255 characters: over the 253 of an FQDN
    with pytest.raises(ActivationCodeError, match="SM-DP\\+ OID"):
        ActivationCode("SMDP.GSMA.COM", "", smdp_oid="")


def test_formatting_places_delimiters_only_where_required():
    assert ActivationCode("A.B", "M").to_text(prefix=False) == "1$A.B$M"
    assert ActivationCode("A.B", "M", cc_required=True).to_text(prefix=False) == "1$A.B$M$$1"
    assert ActivationCode("A.B", "M", "1.2").to_text(prefix=False) == "1$A.B$M$1.2"
    assert ActivationCode("A.B", "", "1.2", True).to_text() == "LPA:1$A.B$$1.2$1"


_label = st.from_regex(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,20}[A-Za-z0-9])?", fullmatch=True)
_fqdn = st.lists(_label, min_size=2, max_size=5).filter(lambda ls: not ls[-1].isdigit()).map(".".join)
_oid = st.tuples(st.sampled_from([0, 1, 2]), st.integers(0, 39), st.lists(st.integers(0, 10**9), max_size=6)).map(
    lambda t: ".".join(str(arc) for arc in (t[0], t[1], *t[2]))
)


@given(
    address=_fqdn,
    matching_id=st.from_regex(r"[0-9A-Z-]{0,60}", fullmatch=True),
    oid=st.none() | _oid,
    cc=st.booleans(),
)
def test_format_parse_round_trip(address, matching_id, oid, cc):
    try:
        ac = ActivationCode(address, matching_id, oid, cc)
    except ActivationCodeError:
        assume(False)  # only the length limit can refuse these by construction
    assert parse_activation_code(str(ac)) == ac
    assert parse_activation_code(ac.to_text(prefix=False)) == ac


@given(text=st.text(alphabet="1$.-:LPAabcXYZ09 \n", max_size=60))
def test_parser_accepts_exactly_what_it_can_format_back(text):
    try:
        ac = parse_activation_code(text)
    except ActivationCodeError:
        return
    assert ac.to_text(prefix=text.startswith("LPA:")) == text


# --- Confirmation Code ------------------------------------------------------------------------------


def test_confirmation_code_hash():
    transaction_id = bytes.fromhex("0123456789abcdef0123456789abcdef")
    digest = hash_confirmation_code("12345678", transaction_id)
    assert digest.hex() == "a1370440a38ba522a1518b10200ec765da6a7b2e5afd2a696de8592fd4a0928f"
    inner = hashlib.sha256(b"12345678").digest()
    assert digest == hashlib.sha256(inner + transaction_id).digest()
    assert digest != hash_confirmation_code("12345678", transaction_id[:-1])
    assert digest != hash_confirmation_code("12345679", transaction_id)


@pytest.mark.parametrize("transaction_id", [b"", bytes(17)])
def test_confirmation_code_hash_checks_transaction_id_size(transaction_id):
    with pytest.raises(DecodeError):
        hash_confirmation_code("1234", transaction_id)


@pytest.mark.parametrize("address", ["localhost:8443", "smdp.example.com:443", "localhost"])
def test_loopback_extension_accepts_port_and_localhost(address):
    """kinsim extension for loopback test servers: ':port' and 'localhost' (see module docstring)."""
    code = parse_activation_code(f"LPA:1${address}$ABC-123")
    assert code.smdp_address == address
    assert str(code) == f"LPA:1${address}$ABC-123"

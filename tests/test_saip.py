"""SAIP profile package codec: TS.48 round trips, typed views, file system, refusals, CLI."""

from __future__ import annotations

import contextlib
import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kinsim.cli import main as kinsim_main
from rsp import testdata
from rsp.errors import DecodeError
from rsp.saip import ProfileElement, ProfilePackage
from rsp.saip.der import Node, context_tag, parse_nodes
from rsp.saip.efs import ad_mnc_length, ad_with_mnc_length, decode_imsi, encode_imsi

MANIFEST = json.loads((testdata.testdata_dir() / "manifest.json").read_text())
TS48 = [entry for entry in MANIFEST if entry["file"].startswith("ts48/") and entry["file"].endswith(".der")]
V7 = "TS48_V7.0_eSIM_GTP_SAIP2.3_NoBERTLV.der"
USIM_AID = bytes.fromhex("A0000000871002FF49FF0589")
ISIM_AID = bytes.fromhex("A0000000871004FF49FF0589")


def profile_bytes(entry: dict) -> bytes:
    return (testdata.testdata_dir() / entry["file"]).read_bytes()


@pytest.fixture(scope="module")
def v7() -> ProfilePackage:
    return ProfilePackage.decode(testdata.ts48_profile(V7))


def test_every_ts48_file_is_covered():
    assert len(TS48) == 22  # 4 v7 + 18 legacy


# --- round trip and manifest facts, every TS.48 profile ----------------------------------------------


@pytest.mark.parametrize("entry", TS48, ids=lambda e: e["file"].split("/")[-1])
def test_ts48_round_trip_is_byte_identical(entry):
    data = profile_bytes(entry)
    package = ProfilePackage.decode(data)
    assert package.encode() == data
    assert [pe.kind for pe in package.elements] == entry["pe_sequence"]
    for pe in package.elements:  # re-encoding every element from its parsed tree reproduces it too
        assert ProfileElement.from_node(pe.tree()).raw == pe.raw


@pytest.mark.parametrize("entry", TS48, ids=lambda e: e["file"].split("/")[-1])
def test_ts48_facts_read_back_as_the_manifest_says(entry):
    package = ProfilePackage.decode(profile_bytes(entry))
    assert package.iccid == entry["iccid"]
    assert package.iccid_ef == entry["iccid"]
    assert package.imsi == entry["imsi"]
    assert set(package.mandatory_services) == set(entry["mandatory_services"])
    assert [a.key.hex() for a in package.aka_parameters][: len(entry["ki"])] == entry["ki"]
    assert [a.opc.hex() for a in package.aka_parameters][: len(entry["opc"])] == entry["opc"]
    assert len(package.aka_parameters) == entry["n_aka_pe"]
    assert {a.algorithm for a in package.aka_parameters} == {"usim-test-algorithm"}
    assert package.usim_aid == USIM_AID and package.isim_aid == ISIM_AID


def test_header_holds_the_unswapped_iccid_and_ef_iccid_the_swapped_one(v7):
    assert bytes.fromhex("89000123456789012341") in v7.elements[0].raw
    assert v7.header.iccid_bytes.hex() == "89000123456789012341"
    assert v7.file("3F00", "2FE2").content.hex() == "98001032547698103214"
    assert v7.profile_type == "GSMA Generic eUICC Test Profile"
    assert v7.version == "2.3"
    assert "2.23.143.1.2.4" in v7.header.mandatory_gfste


def test_aka_parameters_name_their_application_and_defaults(v7):
    usim, isim = v7.aka_parameters
    assert (usim.application, usim.application_aid) == ("usim", USIM_AID)
    assert (isim.application, isim.application_aid) == ("isim", ISIM_AID)
    assert usim.algorithm_id == 3 and usim.algorithm_options == b"\x02"
    assert usim.key == bytes(range(16))
    assert usim.rotation_constants.hex() == "4000204060"  # DEFAULT, absent from the DER
    assert usim.xoring_constants[-16:] == (8).to_bytes(16, "big")
    assert usim.sqn_options == b"\x02" and usim.sqn_delta.hex() == "000010000000" and usim.sqn_init is None


def test_pin_and_puk_codes_read_as_ts48_defines_them(v7):
    pins = {(p.name, p.context): p for p in v7.pins}
    assert pins[("pinAppl1", "mf")].digits == "0000"
    assert pins[("pinAppl1", "mf")].value.hex() == "30303030ffffffff"
    assert pins[("pinAppl1", "mf")].unblocking_reference == 1
    assert (pins[("pinAppl1", "mf")].max_attempts, pins[("pinAppl1", "mf")].retries_left) == (3, 3)
    assert pins[("adm1", "mf")].digits == "55555555" and pins[("adm2", "mf")].digits == "66666666"
    assert [p.digits for p in v7.pins if p.name == "secondPINAppl1"] == ["9999"] * 4
    assert {p.name: p.digits for p in v7.puks} == {"pukAppl1": "11111111", "secondPUKAppl1": "22222222"}
    assert all(p.max_attempts == 10 for p in v7.puks)


def test_summary_is_json_ready_and_names_elements(v7):
    summary = v7.summary()
    assert summary["iccid"] == "89000123456789012341" and summary["imsi"] == "001010123456789"
    assert [e["kind"] for e in summary["elements"]][:3] == ["header", "mf", "pukCodes"]
    assert sum(e["size"] for e in summary["elements"]) == summary["size"] == len(v7.encode())
    assert summary["securityDomains"] == [bytes.fromhex("A000000151000000")]
    assert len(summary["rfm"]) == 4
    assert "000102030405060708090a0b0c0d0e0f" not in json.dumps(summary, default=bytes.hex)  # no Ki


# --- file system -------------------------------------------------------------------------------------


def test_files_give_ef_iccid_ef_imsi_ef_ad_with_template_sizes(v7):
    iccid = v7.file("3F00", "2FE2")
    assert (iccid.structure, iccid.size, iccid.sfi, iccid.name) == ("transparent", 10, 2, "ef-iccid")
    imsi = v7.usim_file("6F07")
    assert imsi.path == (USIM_AID.hex().upper(), "6F07")
    assert (imsi.size, imsi.sfi, imsi.aid) == (9, 7, USIM_AID)  # size and SFI: USIM template
    assert imsi.content.hex() == "080910101032547698"
    ad = v7.usim_file("6FAD")
    assert (ad.size, ad.content.hex()) == (4, "80000002")
    adf = v7.file(USIM_AID.hex())
    assert (adf.structure, adf.fid, adf.aid, adf.pin_status_template.hex()) == (
        "adf",
        "7FD0",
        USIM_AID,
        "81010a0b",
    )


def test_fill_rules_patterns_offsets_records(v7):
    spn = v7.usim_file("6F46")  # fillPattern: pattern, then its last byte
    assert spn.content == bytes.fromhex("0147534D411154455354FF") + b"\xff" * 6
    epsloci = v7.usim_file("6FE3")  # fillFileOffset 12, then 6 bytes
    assert epsloci.content == b"\xff" * 12 + bytes.fromhex("000000000001")
    threshold = v7.usim_file("6F5C")  # repeatPattern 'FF'
    assert threshold.content == b"\xff" * 3
    ef_dir = v7.file("3F00", "2F00")  # linear fixed: content, offset to the next record, ...
    assert ef_dir.record_length == 33 and len(ef_dir.records) == 4
    assert ef_dir.records[0].startswith(bytes.fromhex("61144F0CA0000000871002FF49FF0589"))
    assert ef_dir.records[1].startswith(bytes.fromhex("61144F0CA0000000871004FF49FF0589"))
    img = v7.file("3F00", "7F10", "5F50", "4F20")  # fillPattern per record
    assert img.content == b"\x00" + b"\xff" * 9


def test_generic_file_management_and_link_files(v7):
    pbc = v7.file("3F00", "7F10", "5F3A", "4F16")  # created by genericFileManagement, records filled in order
    assert pbc.name is None and pbc.records[:2] == [b"\x00\x01", b"\x00\x02"]
    assert pbc.sfi == 6  # shortEFID '30': SFI in bits b8..b4
    assert v7.file("3F00", "7F10", "5F3E", "4F01").sfi == 1  # no shortEFID: the FID's 5 low bits
    assert v7.file("3F00", "2FFB").sfi is None  # empty shortEFID: no SFI
    assert v7.file("3F00", "7F66", "5F40").structure == "df"
    csim_aid = next(f.aid for f in v7.files() if f.name == "adf-csim")
    fdn_link = v7.file(csim_aid.hex(), "6F3B")
    assert fdn_link.link_target == (USIM_AID.hex().upper(), "6F3B")
    assert fdn_link.content == v7.usim_file("6F3B").content


def _without_field(package: ProfilePackage, kind: str, number: int) -> ProfilePackage:
    index = next(i for i, pe in enumerate(package.elements) if pe.kind == kind)
    tree = package.elements[index].tree()
    tree.children = [c for c in tree.children if c.tag != context_tag(number, True)]
    return package.replace({index: ProfileElement.from_node(tree)})


def test_created_by_default_template_files_get_the_template_default(v7):
    # ef-ad is USIM field [21], ef-hpplmn [7]: without them the USIM template still creates both
    trimmed = _without_field(_without_field(v7, "usim", 21), "usim", 7)
    assert trimmed.usim_file("6FAD").content.hex() == "00000002"
    assert trimmed.usim_file("6FAD").sfi == 3
    assert trimmed.usim_file("6F31").content.hex() == "0a"
    assert trimmed.mnc_length == 2


def test_do_not_create_skips_a_default_file(v7):
    index = next(i for i, pe in enumerate(v7.elements) if pe.kind == "usim")
    tree = v7.elements[index].tree()
    ad = tree.find(context_tag(21, True))
    ad.children = [Node(context_tag(0), b"")]
    package = v7.replace({index: ProfileElement.from_node(tree)})
    assert package.usim_file("6FAD") is None and package.mnc_length is None


# --- EF codings --------------------------------------------------------------------------------------


def test_ef_imsi_known_answers():
    assert encode_imsi("001010123456789").hex() == "080910101032547698"
    assert encode_imsi("00101012345678").hex() == "0801101010325476f8"  # even: parity 1, 'F' filler
    assert decode_imsi(bytes.fromhex("0801101010325476f8")) == "00101012345678"
    assert decode_imsi(b"\xff" * 9) is None


@given(st.text("0123456789", min_size=6, max_size=15))
def test_ef_imsi_round_trip(imsi):
    coded = encode_imsi(imsi)
    assert len(coded) == 9 and decode_imsi(coded) == imsi


@pytest.mark.parametrize("content", ["081110101032547698", "08091010103254769a", "09091010103254769811"])
def test_ef_imsi_malformed_is_refused(content):
    with pytest.raises(DecodeError):
        decode_imsi(bytes.fromhex(content))


def test_ef_ad_mnc_length():
    assert ad_mnc_length(bytes.fromhex("80000002")) == 2
    assert ad_with_mnc_length(bytes.fromhex("800000f2"), 3).hex() == "800000f3"
    with pytest.raises(DecodeError):
        ad_with_mnc_length(b"\x00\x00", 3)


# --- refusals -----------------------------------------------------------------------------------------


def _v7_bytes() -> bytes:
    return testdata.ts48_profile(V7)


def _elements(data: bytes) -> list[bytes]:
    return [node.encode() for node in parse_nodes(data)]


@pytest.mark.parametrize(
    "mangle, message",
    [
        (lambda d: b"", "empty"),
        (lambda d: d[:-1], "truncated"),
        (lambda d: d[:-3000], "truncated"),
        (lambda d: d + b"\x00", "missing length"),
        (lambda d: d + b"\x00\x00", "zero tag"),
        (lambda d: d + d[-9:], "one end PE"),
        (lambda d: d[:-9] + b"\xaa\x00" + d[-9:], "mandatory component A0 missing"),
        (lambda d: b"".join(_elements(d)[1:]), "starts with a header"),
        (lambda d: b"".join(_elements(d)[:-1]), "ends with an end PE"),
        (lambda d: d[:-9] + bytes.fromhex("bf2807a0058000810120") + d[-9:], "unknown ProfileElement"),
        (lambda d: d[:-9] + bytes.fromhex("3000") + d[-9:], "not a ProfileElement"),
        (lambda d: d[:-9] + bytes.fromhex("aa8107") + d[-7:], "non-minimal"),
        (lambda d: d[:-9] + bytes.fromhex("aa80a0050000") + d[-9:], "length"),
    ],
)
def test_malformed_packages_raise_decode_error(mangle, message):
    with pytest.raises(DecodeError, match=message):
        ProfilePackage.decode(mangle(_v7_bytes()))


def test_bad_header_iccid_is_refused():
    data = _v7_bytes()
    bad = data.replace(
        bytes.fromhex("830a89000123456789012341"), bytes.fromhex("830a8900012345678901234a"), 1
    )
    with pytest.raises(DecodeError, match="not BCD"):
        ProfilePackage.decode(bad)


def _touch_everything(data: bytes) -> None:
    package = ProfilePackage.decode(data)
    assert package.encode() == data
    package.files()
    package.summary()


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=300))
def test_random_bytes_raise_only_decode_error(data):
    with contextlib.suppress(DecodeError):
        _touch_everything(data)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(min_value=0, max_value=12260))
def test_truncations_raise_decode_error(cut):
    with pytest.raises(DecodeError):
        ProfilePackage.decode(_v7_bytes()[:cut])


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(min_value=0, max_value=12260), st.integers(min_value=0, max_value=255))
def test_mutated_profiles_decode_exactly_or_raise_decode_error(position, value):
    data = bytearray(_v7_bytes())
    data[position] = value
    with contextlib.suppress(DecodeError):
        _touch_everything(bytes(data))


# --- CLI ----------------------------------------------------------------------------------------------


def test_cli_inspect_json(capsys):
    path = str(testdata.testdata_dir() / "ts48" / "v7" / V7)
    assert kinsim_main(["profile", "inspect", path, "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["iccid"] == "89000123456789012341" and summary["imsi"] == "001010123456789"
    assert summary["aka"][0]["algorithm"] == "usim-test-algorithm"
    assert len(summary["elements"]) == 30
    assert not [key for key in _keys(summary) if "_" in key]  # camelCase, as every other --json output


def _keys(value) -> list[str]:
    if isinstance(value, dict):
        return [*value, *(k for v in value.values() for k in _keys(v))]
    if isinstance(value, list):
        return [k for v in value for k in _keys(v)]
    return []


def test_cli_inspect_text_and_errors(capsys, tmp_path):
    path = str(testdata.testdata_dir() / "ts48" / "v7" / V7)
    assert kinsim_main(["profile", "inspect", path]) == 0
    out = capsys.readouterr().out
    assert "001010123456789" in out and "usim-test-algorithm" in out and "akaParameter" in out
    broken = tmp_path / "broken.der"
    broken.write_bytes(_v7_bytes()[:100])
    assert kinsim_main(["profile", "inspect", str(broken)]) == 1
    assert "kinsim:" in capsys.readouterr().err
    assert kinsim_main(["profile", "inspect", str(tmp_path / "missing.der"), "--json"]) == 1
    assert json.loads(capsys.readouterr().err)["type"] == "ProfileFileError"

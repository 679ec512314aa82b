"""SAIP personalization: exactly the subscriber's values change; every bad input is refused by name."""

from __future__ import annotations

import csv
import json
from itertools import count

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kinsim.cli import main as kinsim_main
from rsp import ids, testdata
from rsp.aka import compute_opc
from rsp.errors import DecodeError
from rsp.saip import ProfileElement, ProfilePackage
from rsp.saip.der import Node, context_tag
from rsp.saip.personalize import PersonalizationError, iccid_range, personalize, personalize_batch

V7 = "TS48_V7.0_eSIM_GTP_SAIP2.3_NoBERTLV.der"
ICCID = "8988211000000000011"  # 19 digits, Luhn digit 1
ICCID20 = "89882110000000000010"
IMSI = "262011234567890"
KI = bytes.fromhex("465b5ce8b199b49faa5f0a2ee238a6bc")  # TS 35.208 test set 1
OP = bytes.fromhex("cdc202d5123e20f62b6d676ac72cb318")
OPC = bytes.fromhex("cd63cb71954a9f4e48a5994e37a02baf")


@pytest.fixture(scope="module")
def template() -> ProfilePackage:
    return ProfilePackage.decode(testdata.ts48_profile(V7))


def changed_kinds(before: ProfilePackage, after: ProfilePackage) -> list[str]:
    assert len(before.elements) == len(after.elements)
    return [b.kind for a, b in zip(before.elements, after.elements, strict=True) if a.raw != b.raw]


def test_personalize_changes_exactly_the_subscriber_values(template):
    der = personalize(
        template,
        iccid=ICCID20,
        imsi=IMSI,
        ki=KI,
        opc=OPC,
        mnc_length=2,
        algorithm="milenage",
        pin1="1234",
        puk1="87654321",
        adm1="13572468",
    )
    result = ProfilePackage.decode(der)
    assert result.iccid == result.iccid_ef == ICCID20
    assert result.header.iccid_bytes.hex() == ICCID20  # header: plain BCD
    assert result.file("3F00", "2FE2").content == ids.iccid_to_bcd(ICCID20)  # EF.ICCID: nibble-swapped
    assert result.imsi == IMSI and result.mnc_length == 2
    assert [(a.algorithm, a.key, a.opc) for a in result.aka_parameters] == [("milenage", KI, OPC)] * 2
    pins = {(p.name, p.context): p.value for p in result.pins}
    assert pins[("pinAppl1", "mf")] == b"1234\xff\xff\xff\xff"
    assert pins[("adm1", "mf")] == b"13572468"
    assert pins[("adm2", "mf")] == b"66666666"  # untouched
    assert {p.name: p.digits for p in result.puks} == {"pukAppl1": "87654321", "secondPUKAppl1": "22222222"}
    assert changed_kinds(template, result) == [
        "header",
        "mf",
        "pukCodes",
        "pinCodes",
        "usim",
        "akaParameter",
        "akaParameter",
    ]


def test_a_19_digit_iccid_is_padded_with_f(template):
    result = ProfilePackage.decode(personalize(template, iccid=ICCID, imsi=IMSI, ki=KI))
    assert result.header.iccid_bytes.hex() == ICCID + "f"
    assert result.file("3F00", "2FE2").content.hex() == "988812010000000010f1"
    assert result.iccid == result.iccid_ef == ICCID


def test_only_header_mf_usim_and_aka_change_without_codes(template):
    result = ProfilePackage.decode(personalize(template, iccid=ICCID, imsi=IMSI, ki=KI))
    assert changed_kinds(template, result) == ["header", "mf", "usim", "akaParameter", "akaParameter"]
    assert result.elements[0].raw.replace(
        bytes.fromhex(ICCID + "f"), bytes.fromhex("89000123456789012341")
    ) == (template.elements[0].raw)
    assert [a.opc for a in result.aka_parameters] == [bytes(16)] * 2  # test algorithm: OPc kept
    assert result.mandatory_services == template.mandatory_services


def test_op_becomes_opc_and_milenage_uses_the_ts35206_constants(template):
    result = ProfilePackage.decode(
        personalize(template, iccid=ICCID, imsi=IMSI, ki=KI, op=OP, algorithm="milenage")
    )
    assert compute_opc(KI, OP) == OPC
    usim = result.aka_parameters[0]
    assert (usim.algorithm_id, usim.opc) == (1, OPC)
    assert usim.rotation_constants.hex() == "4000204060" and usim.xoring_constants[16:32] == (1).to_bytes(
        16, "big"
    )
    assert "milenage" in result.mandatory_services and "usim-test-algorithm" not in result.mandatory_services


def test_switching_to_milenage_drops_explicit_xor_constants(template):
    index = next(i for i, pe in enumerate(template.elements) if pe.kind == "akaParameter")
    tree = template.elements[index].tree()
    params = tree.find(context_tag(1, True)).find(context_tag(1, True))
    params.children.insert(4, Node(0x84, bytes.fromhex("0102030405")))  # non-default constants
    odd = template.replace({index: ProfileElement.from_node(tree)})
    assert odd.aka_parameters[0].rotation_constants.hex() == "0102030405"
    result = ProfilePackage.decode(
        personalize(odd, iccid=ICCID, imsi=IMSI, ki=KI, opc=OPC, algorithm="milenage")
    )
    assert result.aka_parameters[0].rotation_constants.hex() == "4000204060"
    assert b"\x84\x05" not in result.elements[index].raw


def test_mnc_length_three_is_written_to_ef_ad(template):
    result = ProfilePackage.decode(
        personalize(template, iccid=ICCID, imsi="310410123456789", ki=KI, mnc_length=3)
    )
    assert result.mnc_length == 3
    assert result.usim_file("6FAD").content.hex() == "80000003"


def test_personalizing_twice_with_the_same_values_is_stable(template):
    once = personalize(template, iccid=ICCID, imsi=IMSI, ki=KI, pin1="4321")
    assert personalize(once, iccid=ICCID, imsi=IMSI, ki=KI, pin1="4321") == once
    back = personalize(
        once, iccid="89000123456789012341", imsi="001010123456789", ki=bytes(range(16)), pin1="0000"
    )
    assert back == template.encode()


def test_a_template_that_overwrites_ef_imsi_later_is_refused(template):
    gfm = Node(context_tag(1, True), children=[
        Node(context_tag(0, True), children=[Node(0x80, b""), Node(0x81, b"\x63")]),
        Node(context_tag(1, True), children=[Node(0x30, children=[
            Node(0x80, bytes.fromhex("7FD06F07")), Node(0x81, bytes.fromhex("080910101032547698")),
        ])]),
    ])  # fmt: skip
    elements = list(template.elements)
    elements.insert(-1, ProfileElement.from_node(gfm))
    tricky = ProfilePackage(elements)
    assert tricky.imsi == "001010123456789"
    with pytest.raises(PersonalizationError, match="overrides EF.IMSI") as caught:
        personalize(tricky, iccid=ICCID, imsi=IMSI, ki=KI)
    assert caught.value.field == "imsi"


@settings(max_examples=25, deadline=None)
@given(
    st.text("0123456789", min_size=16, max_size=17),
    st.text("0123456789", min_size=6, max_size=15),
    st.binary(min_size=16, max_size=16),
)
def test_any_valid_iccid_and_imsi_read_back(body, imsi, ki):
    iccid = "89" + body
    iccid += ids.luhn_check_digit(iccid)
    template = ProfilePackage.decode(testdata.ts48_profile(V7))
    result = ProfilePackage.decode(personalize(template, iccid=iccid, imsi=imsi, ki=ki))
    assert (result.iccid, result.iccid_ef, result.imsi) == (iccid, iccid, imsi)
    assert {a.key for a in result.aka_parameters} == {ki}


# --- refusals ----------------------------------------------------------------------------------------

GOOD = {"iccid": ICCID, "imsi": IMSI, "ki": KI}


@pytest.mark.parametrize(
    "change, field, message",
    [
        ({"iccid": "89882110000000000A1"}, "iccid", "decimal digits"),
        ({"iccid": "8988211000000000012"}, "iccid", "Luhn"),
        ({"iccid": "898821100000000"}, "iccid", "19 or 20 digits"),
        ({"iccid": "1988211000000000011"}, "iccid", "89"),
        ({"imsi": "26201123456789X"}, "imsi", "decimal digits"),
        ({"imsi": "2620112345678901"}, "imsi", "6 to 15"),
        ({"imsi": "26201"}, "imsi", "6 to 15"),
        ({"imsi": "262011", "mnc_length": 3}, "imsi", "too short for a 3-digit MCC, a 3-digit MNC"),
        ({"mnc_length": 4}, "mnc_length", "2 or 3"),
        ({"ki": bytes(15)}, "ki", "16-byte key"),
        ({"ki": "00" * 16}, "ki", "bytes"),
        ({"opc": bytes(15)}, "opc", "16-byte OPc"),
        ({"opc": OPC, "op": OP}, "op", "not both"),
        ({"op": OP}, "op", "milenage only"),
        ({"op": bytes(15), "algorithm": "milenage"}, "op", "16 bytes"),
        ({"algorithm": "milenage"}, "opc", "needs the OPc"),
        ({"algorithm": "cave"}, "algorithm", "one of"),
        ({"pin1": "123"}, "pin1", "4 to 8 digits"),
        ({"pin1": "12a4"}, "pin1", "decimal digits"),
        ({"puk1": "1234567"}, "puk1", "8 digits"),
        ({"adm1": "0123456789abcdeg"}, "adm1", "hex digits"),
        ({"adm1": "123456789"}, "adm1", "4 to 8 digits"),
    ],
)
def test_bad_input_is_refused_naming_the_field(template, change, field, message):
    with pytest.raises(PersonalizationError, match=message) as caught:
        personalize(template, **{**GOOD, **change})
    assert caught.value.field == field
    assert isinstance(caught.value, DecodeError)
    assert str(caught.value).startswith(f"{field}: ")


def test_adm1_as_16_hex_digits_is_stored_raw(template):
    result = ProfilePackage.decode(personalize(template, **GOOD, adm1="0123456789ABCDEF"))
    assert next(p.value for p in result.pins if p.name == "adm1").hex() == "0123456789abcdef"


def test_a_template_without_pin1_refuses_pin1(template):
    index = next(i for i, pe in enumerate(template.elements) if pe.kind == "pinCodes")
    tree = template.elements[index].tree()
    configs = tree.find(context_tag(1, True)).find(context_tag(0, True))
    configs.children = [c for c in configs.children if c.find(0x80).value != b"\x01"]
    stripped = template.replace({index: ProfileElement.from_node(tree)})
    with pytest.raises(PersonalizationError, match="no PIN with key reference 1") as caught:
        personalize(stripped, **GOOD, pin1="1234")
    assert caught.value.field == "pin1"


def test_a_malformed_template_raises_decode_error():
    with pytest.raises(DecodeError):
        personalize(testdata.ts48_profile(V7)[:-5], **GOOD)


# --- batches -----------------------------------------------------------------------------------------


def counter_rng():
    """Deterministic key source: call k returns k as an n-byte big-endian number."""
    stream = count()
    return lambda n: next(stream).to_bytes(n, "big")


def test_batch_makes_unique_profiles_with_luhn_and_injected_keys(template):
    made = list(
        personalize_batch(
            template,
            iccid_start=ICCID,
            imsi_start=IMSI,
            count=12,
            key_source=counter_rng(),
            algorithm="milenage",
        )
    )
    assert len({p.iccid for p in made}) == len({p.imsi for p in made}) == len({p.ki for p in made}) == 12
    assert [p.iccid[:-1] for p in made] == [str(int(ICCID[:-1]) + i) for i in range(12)]
    assert all(ids.validate_iccid(p.iccid) for p in made)
    assert made[-1].imsi == "262011234567901"
    assert made[0].ki == bytes(16) and made[0].opc == (1).to_bytes(16, "big")
    for item in made:
        decoded = ProfilePackage.decode(item.der)
        assert (decoded.iccid, decoded.iccid_ef, decoded.imsi) == (item.iccid, item.iccid, item.imsi)
        assert {(a.key, a.opc) for a in decoded.aka_parameters} == {(item.ki, item.opc)}
    again = list(
        personalize_batch(
            template,
            iccid_start=ICCID,
            imsi_start=IMSI,
            count=12,
            key_source=counter_rng(),
            algorithm="milenage",
        )
    )
    assert [p.der for p in again] == [p.der for p in made]  # the injected rng replays a batch


def test_batch_with_op_derives_opc_per_ki(template):
    made = list(
        personalize_batch(
            template,
            iccid_start=ICCID,
            imsi_start=IMSI,
            count=3,
            key_source=counter_rng(),
            op=OP,
            algorithm="milenage",
        )
    )
    assert [p.opc for p in made] == [compute_opc(p.ki, OP) for p in made]


def test_batch_keeps_the_test_algorithm_opc(template):
    made = list(
        personalize_batch(template, iccid_start=ICCID, imsi_start=IMSI, count=2, key_source=counter_rng())
    )
    assert [p.opc for p in made] == [None, None]
    assert ProfilePackage.decode(made[1].der).aka_parameters[0].opc == bytes(16)


@pytest.mark.parametrize(
    "change, field",
    [
        ({"count": 0}, "count"),
        ({"iccid_start": "8999999999999999999", "count": 2}, "count"),  # next body starts with 90
        ({"imsi_start": "262019999999999", "count": 2}, "count"),  # would leave MCC+MNC 26201
        ({"iccid_start": "8988211000000000012"}, "iccid"),
    ],
)
def test_batch_ranges_are_checked_before_the_first_profile(template, change, field):
    args = {"iccid_start": ICCID, "imsi_start": IMSI, "count": 3, **change}
    with pytest.raises(PersonalizationError) as caught:
        personalize_batch(template, **args)
    assert caught.value.field == field


def test_iccid_range_recomputes_luhn():
    assert iccid_range("89000123456789012341", 3) == [
        "89000123456789012341",
        "89000123456789012358",
        "89000123456789012366",
    ]


# --- CLI ----------------------------------------------------------------------------------------------


def test_cli_personalize_batch_writes_profiles_and_secrets(tmp_path, capsys):
    template_path = str(testdata.testdata_dir() / "ts48" / "v7" / V7)
    out = tmp_path / "out"
    argv = [
        "profile",
        "personalize",
        template_path,
        "--iccid",
        ICCID,
        "--imsi",
        IMSI,
        "--count",
        "3",
        "--op",
        OP.hex(),
        "--algorithm",
        "milenage",
        "--pin1",
        "2468",
        "--out",
        str(out),
        "--json",
    ]
    assert kinsim_main(argv) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["count"] == 3
    rows = list(csv.DictReader((out / "secrets.csv").open()))
    assert (out / "secrets.csv").stat().st_mode & 0o077 == 0
    for row in rows:
        decoded = ProfilePackage.decode((out / row["file"]).read_bytes())
        assert decoded.iccid == row["iccid"] and decoded.imsi == row["imsi"]
        assert (
            decoded.aka_parameters[0].key.hex() == row["ki"]
            and decoded.aka_parameters[0].opc.hex() == row["opc"]
        )
        assert compute_opc(bytes.fromhex(row["ki"]), OP).hex() == row["opc"]
    assert kinsim_main(argv) == 1  # files exist: refused without --force
    assert "--force" in capsys.readouterr().err


def test_cli_personalize_single_with_given_keys(tmp_path, capsys):
    template_path = str(testdata.testdata_dir() / "ts48" / "v7" / V7)
    argv = [
        "profile",
        "personalize",
        template_path,
        "--iccid",
        ICCID,
        "--imsi",
        IMSI,
        "--ki",
        KI.hex(),
        "--opc",
        OPC.hex(),
        "--algorithm",
        "milenage",
        "--out",
        str(tmp_path),
        "--secrets-format",
        "json",
    ]
    assert kinsim_main(argv) == 0
    secrets = json.loads((tmp_path / "secrets.json").read_text())
    assert secrets == [
        {
            "iccid": ICCID,
            "imsi": IMSI,
            "ki": KI.hex(),
            "opc": OPC.hex(),
            "algorithm": "milenage",
            "file": f"{ICCID}.der",
        }
    ]
    capsys.readouterr()
    assert kinsim_main([*argv[:-2], "--count", "2", "--force"]) == 1
    assert "one Ki for several profiles" in capsys.readouterr().err
    assert (
        kinsim_main(
            [
                "profile",
                "personalize",
                template_path,
                "--iccid",
                ICCID,
                "--imsi",
                IMSI,
                "--ki",
                "zz",
                "--out",
                str(tmp_path),
                "--force",
            ]
        )
        == 1
    )
    assert "ki: is not hex" in capsys.readouterr().err


def test_cli_personalize_into_an_impossible_directory_is_a_sentence(tmp_path, capsys):
    (tmp_path / "file").write_text("not a directory")
    template_path = str(testdata.testdata_dir() / "ts48" / "v7" / V7)
    argv = ["profile", "personalize", template_path, "--iccid", ICCID, "--imsi", IMSI, "--out", str(tmp_path / "file" / "out")]
    assert kinsim_main(argv) == 1
    assert capsys.readouterr().err.startswith(f"kinsim: cannot create {tmp_path / 'file' / 'out'}")

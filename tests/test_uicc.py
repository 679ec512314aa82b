"""euicc_sim.uicc: the enabled profile's file system, PINs and AUTHENTICATE (ETSI TS 102 221,
3GPP TS 31.102 / 31.103 / 33.102), driven through the Application protocol as euicc_sim.apdu.Card
calls it, through Card.transmit, and once end to end on a profile installed through ES8+."""

from __future__ import annotations

from functools import cache

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from euicc_sim.apdu import Card, Command
from euicc_sim.uicc import ProfileApplication, ProfileRuntime
from mno.authenticator import Authenticator, ChallengeOutcome, InMemoryAuthenticatorStore, Subscriber
from rsp import aka
from rsp.errors import ApduError, DecodeError
from rsp.ids import iccid_to_bcd, luhn_check_digit
from rsp.saip import ProfilePackage
from rsp.saip.efs import decode_imsi, encode_imsi
from rsp.saip.elements import parse_pins
from rsp.saip.personalize import personalize
from rsp.testdata import ts48_profile
from rsp.tlv import parse_one, split

TS48_K = bytes.fromhex("000102030405060708090a0b0c0d0e0f")
TS48_ICCID_EF = bytes.fromhex("98001032547698103214")
TS48_IMSI = "001010123456789"
TS48_IMSI_EF = bytes.fromhex("080910101032547698")  # TS 31.102 4.2.2: length, parity nibble, digits
USIM_AID = bytes.fromhex("A0000000871002FF49FF0589")
ISIM_AID = bytes.fromhex("A0000000871004FF49FF0589")

KI = bytes.fromhex("465b5ce8b199b49faa5f0a2ee238a6bc")  # TS 35.208 test set 1
OPC = bytes.fromhex("cd63cb71954a9f4e48a5994e37a02baf")
OTHER_KI = bytes.fromhex("0396eb317b6d1c36f19c1c84cd6ffd16")  # TS 35.208 test set 3
OTHER_OPC = bytes.fromhex("53c15671c60a4b731c55b4a441c0bde2")
ICCID = "898821100000001234" + luhn_check_digit("898821100000001234")
OTHER_ICCID = "898821100000001235" + luhn_check_digit("898821100000001235")
IMSI = "262019876543210"
OTHER_IMSI = "262019876543211"
AMF = b"\x80\x00"


@cache
def ts48() -> ProfilePackage:
    return ProfilePackage.decode(ts48_profile())


@cache
def milenage_der(iccid: str = ICCID, imsi: str = IMSI, ki: bytes = KI, opc: bytes = OPC) -> bytes:
    return personalize(ts48_profile(), iccid=iccid, imsi=imsi, ki=ki, opc=opc, algorithm="milenage")


def milenage() -> ProfilePackage:
    return ProfilePackage.decode(milenage_der())


@cache
def pin1_enabled() -> ProfilePackage:
    """TS.48 with PIN1's pinAttributes '06' (disabled) changed to '07' (enabled), same length."""
    elements = []
    for pe in ts48().elements:
        raw = pe.raw
        if pe.kind == "pinCodes" and any(pin.key_reference == 1 for pin in parse_pins(pe, "mf")):
            assert raw.count(b"\x83\x01\x06") == 1
            raw = raw.replace(b"\x83\x01\x06", b"\x83\x01\x07")
        elements.append(raw)
    return ProfilePackage.decode(b"".join(elements))


# --- driving applications as the Card does --------------------------------------------------------


def command(cla: int, ins: int, p1: int, p2: int, data: bytes = b"", ne: int | None = None, channel: int = 0):
    return Command(cla, ins, p1, p2, data, ne, channel, bool(cla & 0x80))


class Terminal:
    """One logical channel: SELECT goes to ``select``, everything else to ``process``."""

    def __init__(self, runtime: ProfileRuntime, channel: int = 0):
        self.runtime = runtime
        self.channel = channel
        self.app: ProfileApplication = runtime.applications[0]  # the MF, implicitly selected

    def app_for(self, aid: bytes) -> ProfileApplication:
        return next(
            app for app in self.runtime.applications if app.aid is not None and app.aid.startswith(aid)
        )

    def select_aid(self, aid: bytes, p2: int = 0x04) -> tuple[bytes, int]:
        app = self.app_for(aid)
        data, sw = app.select(command(0x00, 0xA4, 0x04, p2, aid, channel=self.channel))
        if sw == 0x9000 and app is not self.app:
            self.app.deselect(self.channel)
            self.app = app
        return data, sw

    def select(self, fids: str, p1: int = 0x00, p2: int = 0x04) -> tuple[bytes, int]:
        return self.app.select(command(0x00, 0xA4, p1, p2, bytes.fromhex(fids), channel=self.channel))

    def send(self, cla, ins, p1, p2, data=b"", ne=None) -> tuple[bytes, int]:
        return self.app.process(command(cla, ins, p1, p2, data, ne, self.channel))

    def read_binary(self, offset: int = 0, ne: int | None = 256) -> tuple[bytes, int]:
        return self.send(0x00, 0xB0, offset >> 8, offset & 0xFF, ne=ne)

    def read_record(self, number: int, mode: int = 0x04, sfi: int = 0) -> tuple[bytes, int]:
        return self.send(0x00, 0xB2, number, sfi << 3 | mode, ne=256)

    def verify(self, reference: int, code: str | None) -> int:
        data = b"" if code is None else code.encode().ljust(8, b"\xff")
        return self.send(0x00, 0x20, 0x00, reference, data)[1]

    def authenticate(self, rand: bytes, autn: bytes) -> tuple[bytes, int]:
        return self.send(0x00, 0x88, 0x00, 0x81, aka.encode_authenticate_command(rand, autn))

    def usim_card(self):
        """The authenticator's card callable: AUTHENTICATE, a non-9000 status word as ApduError."""

        def card(rand: bytes, autn: bytes) -> bytes:
            data, sw = self.authenticate(rand, autn)
            if sw != 0x9000:
                raise ApduError(sw, "AUTHENTICATE")
            return data

        return card


def fcp_items(fcp: bytes) -> dict[int, bytes]:
    template = parse_one(fcp)
    assert template.tag == 0x62
    return {item.tag: item.value for item in split(template.value)}


def usim(runtime: ProfileRuntime) -> Terminal:
    terminal = Terminal(runtime)
    assert terminal.select_aid(USIM_AID)[1] == 0x9000
    return terminal


def authenticator_for(algorithm: str, k: bytes, opc: bytes | None, imsi: str, iccid: str, **kwargs):
    authenticator = Authenticator(InMemoryAuthenticatorStore())
    authenticator.provision(Subscriber(imsi=imsi, iccid=iccid, algorithm=algorithm, k=k, opc=opc, **kwargs))
    return authenticator


# --- file system: TS.48 -----------------------------------------------------------------------------


def test_ts48_ef_iccid_from_the_mf():
    terminal = Terminal(ProfileRuntime(ts48()))
    fcp, sw = terminal.select("3F00")
    assert sw == 0x9000 and fcp_items(fcp)[0x83] == b"\x3f\x00"
    fcp, sw = terminal.select("2FE2")
    assert sw == 0x9000
    items = fcp_items(fcp)
    assert items[0x82] == b"\x41\x21" and items[0x83] == b"\x2f\xe2" and items[0x80] == b"\x00\x0a"
    assert items[0x8B] == bytes.fromhex("2F0603")  # EF.ARR record 3: read always
    assert terminal.read_binary(ne=10) == (TS48_ICCID_EF, 0x9000)
    assert terminal.read_binary(offset=4, ne=2) == (TS48_ICCID_EF[4:6], 0x9000)


def test_ts48_ef_imsi_from_the_usim_selected_by_aid():
    terminal = usim(ProfileRuntime(ts48()))
    fcp, sw = terminal.select("6F07")
    assert sw == 0x9000
    items = fcp_items(fcp)
    assert items[0x83] == b"\x6f\x07" and items[0x80] == b"\x00\x09" and items[0x88] == bytes([7 << 3])
    data, sw = terminal.read_binary(ne=9)
    assert (data, sw) == (TS48_IMSI_EF, 0x9000)
    assert decode_imsi(data) == TS48_IMSI


def test_usim_fcp_names_the_aid_and_the_pin_status():
    fcp, sw = Terminal(ProfileRuntime(ts48())).select_aid(USIM_AID)
    items = fcp_items(fcp)
    assert sw == 0x9000 and items[0x84] == USIM_AID and 0x83 not in items
    # Key references 81 (local PIN, enabled), 01 (PIN1, disabled in TS.48), 0A and 0B (ADMs, enabled).
    assert items[0xC6] == bytes.fromhex("9001B083018183010183010A83010B")
    fcp, _ = Terminal(ProfileRuntime(pin1_enabled())).select_aid(USIM_AID)
    assert fcp_items(fcp)[0xC6][:3] == bytes.fromhex("9001F0")


def test_select_without_response_data_and_by_partial_aid_through_the_card():
    runtime = ProfileRuntime(ts48())
    card = Card(_NoIsdr(), profile_apps=lambda: runtime.applications)
    card.power_on()
    assert card.transmit(bytes.fromhex("00A4040C07A0000000871002")) == b"\x90\x00"
    assert card.transmit(bytes.fromhex("00A4000C026F07")) == b"\x90\x00"
    assert card.transmit(bytes.fromhex("00B0000009")) == TS48_IMSI_EF + b"\x90\x00"
    response = card.transmit(bytes.fromhex("00A40004023F00"))  # case 4: T=0 answers 61xx
    assert response[0] == 0x61
    fcp = card.transmit(bytes([0x00, 0xC0, 0x00, 0x00, response[1]]))
    assert fcp[-2:] == b"\x90\x00" and fcp_items(fcp[:-2])[0x83] == b"\x3f\x00"


def test_select_by_path_parent_and_current_application():
    terminal = usim(ProfileRuntime(ts48()))
    assert terminal.select("3F00")[1] == 0x9000  # the MF, still inside the USIM session
    assert terminal.select("7FFF6F07", p1=0x08)[1] == 0x9000
    assert terminal.read_binary(ne=9) == (TS48_IMSI_EF, 0x9000)
    assert terminal.select("7F105F3A4F30", p1=0x08)[1] == 0x9000  # EF.PBR of DF.PHONEBOOK
    assert terminal.select("", p1=0x03)[1] == 0x9000  # its DF's parent: DF.TELECOM
    assert terminal.select("5F3A", p1=0x09)[1] == 0x9000
    assert terminal.select("5F3A", p1=0x01)[1] == 0x6A82  # no DF 5F3A below DF.PHONEBOOK
    assert terminal.select("5F50")[1] == 0x9000  # a sibling DF (DF.GRAPHICS)
    assert terminal.select("7FFF")[1] == 0x9000
    assert terminal.select("6F07")[1] == 0x9000


def test_mf_application_has_no_current_adf():
    terminal = Terminal(ProfileRuntime(ts48()))
    assert terminal.select("7FFF")[1] == 0x6A82
    assert terminal.select("7FFF6F07", p1=0x08)[1] == 0x6A82


def test_records_absolute_next_previous_and_by_sfi():
    terminal = Terminal(ProfileRuntime(ts48()))
    record, sw = terminal.read_record(1, sfi=30)  # EF.DIR by its SFI
    assert sw == 0x9000 and record[:2] == b"\x61\x14" and USIM_AID in record and len(record) == 33
    assert terminal.read_record(0, mode=0x02) == (record, 0x9000)  # absolute left the pointer unset
    second, sw = terminal.read_record(0, mode=0x02)
    assert sw == 0x9000 and second != record
    assert terminal.read_record(0, mode=0x03) == (record, 0x9000)
    assert terminal.read_record(0, mode=0x03)[1] == 0x6A83  # linear fixed: no record before 1
    assert terminal.read_record(99)[1] == 0x6A83
    assert terminal.send(0x00, 0xB2, 0x01, 0x04, ne=10)[1] == 0x6C21  # T=0: the exact length


def test_cyclic_update_makes_the_new_record_number_one():
    terminal = usim(ProfileRuntime(ts48()))
    assert terminal.select("6F80")[1] == 0x9000  # EF.ICI, cyclic, 42-byte records
    first = bytes(range(42))
    assert terminal.send(0x00, 0xDC, 0x00, 0x03, first) == (b"", 0x9000)
    assert terminal.send(0x00, 0xDC, 0x00, 0x03, b"\x55" * 42) == (b"", 0x9000)
    assert terminal.read_record(1) == (b"\x55" * 42, 0x9000)
    assert terminal.read_record(2) == (first, 0x9000)
    assert terminal.send(0x00, 0xDC, 0x01, 0x04, first)[1] == 0x6A86  # cyclic files: 'previous' only


def test_status_answers_the_current_directory_and_application():
    terminal = usim(ProfileRuntime(ts48()))
    assert terminal.send(0x80, 0xF2, 0x00, 0x01, ne=256) == (bytes([0x84, 12]) + USIM_AID, 0x9000)
    fcp, sw = terminal.send(0x80, 0xF2, 0x00, 0x00, ne=256)
    assert sw == 0x9000 and fcp_items(fcp)[0x84] == USIM_AID
    assert terminal.send(0x80, 0xF2, 0x00, 0x0C) == (b"", 0x9000)
    assert terminal.send(0x00, 0xF2, 0x00, 0x00)[1] == 0x6E00


def test_channels_keep_their_own_current_file():
    runtime = ProfileRuntime(ts48())
    basic, other = Terminal(runtime, 0), Terminal(runtime, 1)
    assert basic.select("2FE2")[1] == 0x9000
    assert other.select_aid(USIM_AID)[1] == 0x9000 and other.select("6F07")[1] == 0x9000
    assert basic.read_binary(ne=10) == (TS48_ICCID_EF, 0x9000)
    assert other.read_binary(ne=9) == (TS48_IMSI_EF, 0x9000)
    other.app.deselect(1)  # the Card closed channel 1: a later use starts afresh
    assert other.read_binary(ne=9)[1] == 0x6986


@pytest.mark.parametrize(
    ("setup", "apdu", "sw"),
    [
        ((), (0x00, 0xA4, 0x00, 0x04, "6F07"), 0x6A82),  # EF.IMSI is not under the MF
        ((), (0x00, 0xA4, 0x05, 0x04, "3F00"), 0x6A86),  # no such selection method
        ((), (0x00, 0xA4, 0x00, 0x08, "3F00"), 0x6A86),  # FMD is not offered
        ((), (0x00, 0xA4, 0x00, 0x04, "3F"), 0x6700),
        ((), (0x00, 0xB0, 0x00, 0x00, ""), 0x6986),  # no current EF
        (("2FE2",), (0x00, 0xB0, 0x00, 0x0A, ""), 0x6B00),  # offset 10 of a 10-byte file
        (("2FE2",), (0x00, 0xB0, 0x00, 0x00, "", 20), 0x6C0A),  # Le beyond the end: exact count
        (("2FE2",), (0x00, 0xB2, 0x01, 0x04, ""), 0x6981),  # a transparent file has no records
        (("2F00",), (0x00, 0xB0, 0x00, 0x00, ""), 0x6981),  # a record file has no binary content
        (("2FE2",), (0x00, 0xD6, 0x00, 0x00, "00"), 0x6982),  # EF.ICCID: update needs ADM1
        ((), (0x00, 0xB0, 0x9F, 0x00, ""), 0x6A82),  # SFI 31 names no EF of the MF
        ((), (0x00, 0xCA, 0x00, 0x00, ""), 0x6D00),  # GET DATA: not this card's
        ((), (0x80, 0xB0, 0x00, 0x00, ""), 0x6E00),  # READ BINARY is an interindustry command
        ((), (0x00, 0x88, 0x00, 0x81, ""), 0x6D00),  # no AKA on the MF
        ((), (0x00, 0x20, 0x00, 0x05, "3030303030303030"), 0x6A88),  # no PIN with reference 05
        ((), (0x00, 0x20, 0x01, 0x01, ""), 0x6A86),
        ((), (0x00, 0x20, 0x00, 0x01, "3030"), 0x6700),
    ],
)
def test_error_status_words(setup, apdu, sw):
    terminal = Terminal(ProfileRuntime(ts48()))
    for fid in setup:
        assert terminal.select(fid)[1] == 0x9000
    cla, ins, p1, p2, data, *ne = apdu
    cmd = command(cla, ins, p1, p2, bytes.fromhex(data), ne[0] if ne else None)
    assert (terminal.app.select(cmd) if ins == 0xA4 else terminal.app.process(cmd))[1] == sw


# --- PINs and access conditions ---------------------------------------------------------------


def test_ts48_pin1_is_disabled_so_ef_imsi_reads_without_verify():
    terminal = usim(ProfileRuntime(ts48()))
    assert terminal.verify(0x01, None) == 0x9000
    assert terminal.select("6F07")[1] == 0x9000 and terminal.read_binary(ne=9)[1] == 0x9000


def test_enabled_pin1_guards_ef_imsi_and_authenticate():
    saved = []
    runtime = ProfileRuntime(pin1_enabled(), on_pin_update=saved.append)
    terminal = usim(runtime)
    assert terminal.select("6F07")[1] == 0x9000
    assert terminal.read_binary(ne=9)[1] == 0x6982
    rand = bytes(16)
    vector = aka.generate_vector(aka.XorTest(TS48_K), aka.join_sqn(1, 0), AMF, rand)
    assert terminal.authenticate(rand, vector.autn)[1] == 0x6982
    assert terminal.verify(0x01, None) == 0x63C3
    assert terminal.verify(0x01, "1234") == 0x63C2
    assert saved[-1]["3F00/01"] == {"left": 2}  # saved before the answer
    assert terminal.verify(0x01, "0000") == 0x9000
    assert saved[-1]["3F00/01"] == {"left": 3}
    assert terminal.read_binary(ne=9) == (TS48_IMSI_EF, 0x9000)
    assert terminal.authenticate(rand, vector.autn)[1] == 0x9000
    runtime.reset()  # power-on: verification ends
    assert terminal.read_binary(ne=9)[1] == 0x6982


def test_pin_blocks_after_three_wrong_tries_and_the_puk_unblocks_it():
    saved = []
    terminal = usim(ProfileRuntime(pin1_enabled(), on_pin_update=saved.append))
    assert [terminal.verify(0x01, "9999") for _ in range(3)] == [0x63C2, 0x63C1, 0x63C0]
    assert terminal.verify(0x01, "0000") == 0x6983
    assert terminal.verify(0x01, None) == 0x6983
    new_pin = b"4321\xff\xff\xff\xff"
    assert terminal.send(0x00, 0x2C, 0x00, 0x01) == (b"", 0x63CA)  # PUK1: 10 tries
    assert terminal.send(0x00, 0x2C, 0x00, 0x01, b"22222222" + new_pin) == (b"", 0x63C9)
    assert terminal.send(0x00, 0x2C, 0x00, 0x01, b"11111111" + new_pin) == (b"", 0x9000)
    assert terminal.select("6F07")[1] == 0x9000 and terminal.read_binary(ne=9)[1] == 0x9000
    assert saved[-1]["3F00/01"] == {"left": 3, "value": "34333231FFFFFFFF"}
    assert saved[-1]["puk/01"] == {"left": 10}

    restarted = usim(ProfileRuntime(pin1_enabled(), pin_states=saved[-1]))
    assert restarted.verify(0x01, "0000") == 0x63C2  # the new PIN survived, the old one is gone
    assert restarted.verify(0x01, "4321") == 0x9000


def test_pin_counters_survive_a_new_runtime():
    saved = []
    first = usim(ProfileRuntime(pin1_enabled(), on_pin_update=saved.append))
    assert first.verify(0x01, "1111") == 0x63C2
    again = usim(ProfileRuntime(pin1_enabled(), pin_states=saved[-1]))
    assert again.verify(0x01, None) == 0x63C2
    with pytest.raises(DecodeError):
        ProfileRuntime(pin1_enabled(), pin_states={"3F00/01": {"left": 9}})


def test_adm1_opens_updates_that_live_in_the_running_copy_only():
    runtime = ProfileRuntime(ts48())
    terminal = usim(runtime)
    new_imsi = encode_imsi("001019999999999")
    assert terminal.select("6F07")[1] == 0x9000
    assert terminal.send(0x00, 0xD6, 0x00, 0x00, new_imsi)[1] == 0x6982
    assert terminal.verify(0x0A, "55555555") == 0x9000
    assert terminal.send(0x00, 0xD6, 0x00, 0x00, new_imsi) == (b"", 0x9000)
    assert terminal.read_binary(ne=9) == (new_imsi, 0x9000)
    assert terminal.send(0x00, 0xD6, 0x00, 0x05, new_imsi)[1] == 0x6700  # past the end of the file
    assert runtime.package.imsi == TS48_IMSI  # the installed package is untouched
    assert usim(ProfileRuntime(ts48())).select("6F07")[1] == 0x9000


def test_access_rules_are_read_live_and_a_malformed_condition_grants_nothing():
    terminal = usim(ProfileRuntime(ts48()))
    assert terminal.verify(0x0A, "55555555") == 0x9000
    assert terminal.select("6F06")[1] == 0x9000  # the USIM's EF.ARR; EF.IMSI uses its record 10
    broken = bytes.fromhex("800101A403830501").ljust(54, b"\xff")  # the CRT's '83' overruns it
    assert terminal.send(0x00, 0xDC, 0x0A, 0x04, broken) == (b"", 0x9000)
    assert terminal.select("6F07")[1] == 0x9000
    assert terminal.read_binary(ne=9)[1] == 0x6982
    always = bytes.fromhex("8001019000").ljust(54, b"\xff")
    assert terminal.select("6F06")[1] == 0x9000
    assert terminal.send(0x00, 0xDC, 0x0A, 0x04, always) == (b"", 0x9000)
    assert terminal.select("6F07")[1] == 0x9000 and terminal.read_binary(ne=9)[1] == 0x9000


# --- AUTHENTICATE ----------------------------------------------------------------------------------


def test_ts48_usim_answers_the_xor_test_algorithm_with_its_published_k():
    terminal = usim(ProfileRuntime(ts48()))
    authenticator = authenticator_for(aka.XOR_TEST, TS48_K, None, TS48_IMSI, "89000123456789012341")
    assert authenticator.challenge(TS48_IMSI, terminal.usim_card()) is ChallengeOutcome.AUTHENTICATED
    # Known answer (TS 34.108 8.1.2): RES = XDOUT = K xor RAND; CK/IK = XDOUT rotated by 8/16 bits.
    rand = bytes.fromhex("00112233445566778899aabbccddeeff")
    vector = aka.generate_vector(aka.XorTest(TS48_K), aka.join_sqn(7, 3), AMF, rand)
    data, sw = terminal.authenticate(rand, vector.autn)
    xdout = bytes(a ^ b for a, b in zip(TS48_K, rand, strict=True))
    answer = aka.decode_authenticate_response(data)
    assert sw == 0x9000 and answer.res == xdout
    assert answer.ck == xdout[1:] + xdout[:1] and answer.ik == xdout[2:] + xdout[:2]
    assert answer.kc == aka.c3(answer.ck, answer.ik)  # USIM service 27 (GSM access) is offered


def test_ts48_isim_authenticates_with_its_own_sqn_array():
    runtime = ProfileRuntime(ts48())
    isim = Terminal(runtime)
    assert isim.select_aid(ISIM_AID)[1] == 0x9000
    rand = bytes(range(16))
    vector = aka.generate_vector(aka.XorTest(TS48_K), aka.join_sqn(4, 0), AMF, rand)
    data, sw = isim.authenticate(rand, vector.autn)
    assert sw == 0x9000 and aka.decode_authenticate_response(data).kc is None  # IMS AKA: no Kc
    assert usim(runtime).authenticate(rand, vector.autn)[1] == 0x9000  # the USIM has not seen it
    assert isim.authenticate(rand, vector.autn)[0][:1] == b"\xdc"  # the ISIM has
    assert runtime.sqn_states[ISIM_AID.hex().upper()][0] == 4


def test_gsm_security_context_uses_c2_and_c3():
    terminal = usim(ProfileRuntime(ts48()))
    rand = bytes.fromhex("f0e1d2c3b4a5968778695a4b3c2d1e0f")
    data, sw = terminal.send(0x00, 0x88, 0x00, 0x80, b"\x10" + rand)
    xdout = bytes(a ^ b for a, b in zip(TS48_K, rand, strict=True))
    words = [int.from_bytes(xdout[i : i + 4], "big") for i in range(0, 16, 4)]
    sres = (words[0] ^ words[1] ^ words[2] ^ words[3]).to_bytes(4, "big")
    kc = aka.c3(xdout[1:] + xdout[:1], xdout[2:] + xdout[:2])
    assert (data, sw) == (b"\x04" + sres + b"\x08" + kc, 0x9000)
    isim = Terminal(ProfileRuntime(ts48()))
    isim.select_aid(ISIM_AID)
    assert isim.send(0x00, 0x88, 0x00, 0x80, b"\x10" + rand)[1] == 0x6A86  # no GSM context on an ISIM


def test_personalized_profile_reads_its_own_values_and_passes_milenage_aka():
    runtime = ProfileRuntime(milenage())
    mf = Terminal(runtime)
    assert mf.select("2FE2")[1] == 0x9000
    assert mf.read_binary(ne=10) == (iccid_to_bcd(ICCID), 0x9000)
    terminal = usim(runtime)
    assert terminal.select("6F07")[1] == 0x9000
    data, sw = terminal.read_binary(ne=9)
    assert sw == 0x9000 and data == encode_imsi(IMSI) and decode_imsi(data) == IMSI
    assert terminal.select("7FFF")[1] == 0x9000
    authenticator = authenticator_for(aka.MILENAGE, KI, OPC, IMSI, ICCID)
    assert authenticator.challenge(IMSI, terminal.usim_card()) is ChallengeOutcome.AUTHENTICATED


def test_another_profiles_keys_fail_with_mac_failure():
    terminal = usim(ProfileRuntime(milenage()))
    stranger = authenticator_for(aka.MILENAGE, OTHER_KI, OTHER_OPC, OTHER_IMSI, OTHER_ICCID)
    assert stranger.challenge(OTHER_IMSI, terminal.usim_card()) is ChallengeOutcome.MAC_FAILURE
    rand = bytes(16)
    vector = aka.generate_vector(aka.Milenage(OTHER_KI, OTHER_OPC), aka.join_sqn(1, 0), AMF, rand)
    assert terminal.authenticate(rand, vector.autn) == (b"", 0x9862)
    xor_vector = aka.generate_vector(aka.XorTest(TS48_K), aka.join_sqn(1, 0), AMF, rand)
    assert terminal.authenticate(rand, xor_vector.autn) == (b"", 0x9862)
    # ... and the other profile's card refuses this profile's network.
    other = usim(
        ProfileRuntime(ProfilePackage.decode(milenage_der(OTHER_ICCID, OTHER_IMSI, OTHER_KI, OTHER_OPC)))
    )
    ours = authenticator_for(aka.MILENAGE, KI, OPC, IMSI, ICCID)
    assert ours.challenge(IMSI, other.usim_card()) is ChallengeOutcome.MAC_FAILURE


def test_replayed_challenge_is_refused_and_auts_carries_the_cards_sqn():
    saved = []
    terminal = usim(ProfileRuntime(milenage(), on_sqn_update=saved.append))
    alg = aka.Milenage(KI, OPC)
    rand = bytes.fromhex("23553cbe9637a89d218ae64dae47bf35")
    vector = aka.generate_vector(alg, aka.join_sqn(5, 2), AMF, rand)
    data, sw = terminal.authenticate(rand, vector.autn)
    assert sw == 0x9000 and aka.decode_authenticate_response(data).res == vector.xres
    assert saved[-1][USIM_AID.hex().upper()][2] == 5 and len(saved) == 1
    data, sw = terminal.authenticate(rand, vector.autn)  # the same challenge again
    assert sw == 0x9000 and data[0] == 0xDC and len(saved) == 1
    auts = aka.decode_authenticate_response(data).auts
    assert aka.resync_sqn(alg, rand, auts) == aka.join_sqn(5, 2)


def test_authenticator_resynchronises_with_a_card_that_is_ahead():
    runtime = ProfileRuntime(milenage())
    terminal = usim(runtime)
    alg = aka.Milenage(KI, OPC)
    for seq in (40, 41):  # another network pushed the card ahead in slots 0 and 1
        rand = bytes([seq]) * 16
        assert (
            terminal.authenticate(
                rand, aka.generate_vector(alg, aka.join_sqn(seq, seq - 40), AMF, rand).autn
            )[1]
            == 0x9000
        )
    authenticator = authenticator_for(aka.MILENAGE, KI, OPC, IMSI, ICCID)
    assert authenticator.challenge(IMSI, terminal.usim_card()) is ChallengeOutcome.AUTHENTICATED
    assert aka.split_sqn(authenticator.subscriber(IMSI).sqn)[0] > 41


def test_sqn_array_is_restored_from_the_saved_state():
    saved = []
    terminal = usim(ProfileRuntime(milenage(), on_sqn_update=saved.append))
    rand = bytes(16)
    vector = aka.generate_vector(aka.Milenage(KI, OPC), aka.join_sqn(9, 0), AMF, rand)
    assert terminal.authenticate(rand, vector.autn)[1] == 0x9000
    restarted = usim(ProfileRuntime(milenage(), sqn_states=saved[-1]))
    assert restarted.authenticate(rand, vector.autn)[0][:1] == b"\xdc"  # no replay after a restart
    fresh = usim(ProfileRuntime(milenage()))
    assert fresh.authenticate(rand, vector.autn)[1] == 0x9000  # the seed (sqnInit) would accept it
    with pytest.raises(DecodeError):
        ProfileRuntime(milenage(), sqn_states={USIM_AID.hex().upper(): [0] * 31})


def test_sqn_beyond_the_wrap_around_limit_is_refused():
    terminal = usim(ProfileRuntime(milenage()))
    rand = bytes(16)
    far = aka.generate_vector(aka.Milenage(KI, OPC), aka.join_sqn((1 << 28) + 1, 0), AMF, rand)
    assert terminal.authenticate(rand, far.autn)[0][:1] == b"\xdc"


def test_a_failed_sqn_save_gives_no_answer_and_no_state_change():
    def failing(_):
        raise OSError("disk full")

    runtime = ProfileRuntime(milenage(), on_sqn_update=failing)
    terminal = usim(runtime)
    rand = bytes(16)
    vector = aka.generate_vector(aka.Milenage(KI, OPC), aka.join_sqn(3, 0), AMF, rand)
    with pytest.raises(OSError):
        terminal.authenticate(rand, vector.autn)  # the Card turns this into '6F00'
    assert runtime.sqn_states[USIM_AID.hex().upper()][0] == 0


@pytest.mark.parametrize(
    ("p1", "p2", "data", "sw"),
    [
        (0x00, 0x82, "", 0x6A86),  # VGCS/VBS context: not offered
        (0x01, 0x81, "", 0x6A86),
        (0x00, 0x81, "10" + "00" * 16, 0x6A80),  # AUTN missing
    ],
)
def test_authenticate_parameter_errors(p1, p2, data, sw):
    assert usim(ProfileRuntime(ts48())).send(0x00, 0x88, p1, p2, bytes.fromhex(data))[1] == sw


def test_authenticate_needs_the_current_df_inside_the_adf():
    terminal = usim(ProfileRuntime(ts48()))
    assert terminal.select("3F00")[1] == 0x9000
    rand = bytes(16)
    vector = aka.generate_vector(aka.XorTest(TS48_K), aka.join_sqn(1, 0), AMF, rand)
    assert terminal.authenticate(rand, vector.autn)[1] == 0x6985
    assert terminal.select("7FFF5F3B", p1=0x08)[1] == 0x9000  # DF.GSM-ACCESS, below the ADF
    assert terminal.authenticate(rand, vector.autn)[1] == 0x9000


# --- robustness ------------------------------------------------------------------------------------

FIDS = ["3F00", "2FE2", "2F00", "7F10", "7FFF", "6F07", "6F80", "5F3B", "6F06", "2F06", "6F38"]
commands = st.builds(
    command,
    cla=st.sampled_from([0x00, 0x80, 0x01, 0x81, 0x40]),
    ins=st.one_of(
        st.sampled_from([0xA4, 0xB0, 0xB2, 0xD6, 0xDC, 0x20, 0x2C, 0x88, 0xF2, 0x10]), st.integers(0, 255)
    ),
    p1=st.one_of(st.sampled_from([0x00, 0x01, 0x03, 0x04, 0x08, 0x09, 0x80, 0x87]), st.integers(0, 255)),
    p2=st.one_of(st.sampled_from([0x00, 0x04, 0x0C, 0x81, 0x80, 0x02, 0x03, 0xF4]), st.integers(0, 255)),
    data=st.one_of(st.sampled_from(FIDS).map(bytes.fromhex), st.binary(max_size=40)),
    ne=st.one_of(st.none(), st.integers(1, 256)),
    channel=st.integers(0, 3),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps=st.lists(st.tuples(st.integers(0, 3), st.booleans(), commands), max_size=25))
def test_random_commands_always_get_a_status_word(steps):
    runtime = ProfileRuntime(ts48())
    for index, as_select, cmd in steps:
        app = runtime.applications[index]
        data, sw = app.select(cmd) if as_select else app.process(cmd)
        assert isinstance(data, bytes)
        assert 0x6200 <= sw <= 0x6FFF or 0x9000 <= sw <= 0x9FFF
        assert sw != 0x6F00


@settings(max_examples=150, deadline=None)
@given(apdus=st.lists(st.binary(min_size=4, max_size=30), max_size=20))
def test_random_apdus_through_the_card_never_hit_an_internal_error(apdus):
    runtime = ProfileRuntime(ts48())
    card = Card(_NoIsdr(), profile_apps=lambda: runtime.applications)
    card.power_on()
    for apdu in apdus:
        response = card.transmit(apdu)
        assert len(response) >= 2 and response[-2:] != b"\x6f\x00"


class _NoIsdr:
    def handle(self, request: bytes) -> bytes:
        raise DecodeError("no ISD-R in this test")


# --- end to end: a profile installed through ES8+ on the software eUICC -------------------------------


def test_installed_profile_is_live_through_card_transmit(tmp_path):
    from tests.euicc_fixtures import Reader, SmdpSide, install, make_euicc_dir, open_test_euicc

    saved: dict = {}

    def profile_apps(der: bytes):
        runtime = ProfileRuntime(ProfilePackage.decode(der), saved.get("sqn"), lambda s: saved.update(sqn=s))
        return runtime.applications

    make_euicc_dir(tmp_path / "euicc")
    with open_test_euicc(tmp_path / "euicc", profile_apps=profile_apps) as euicc:
        reader = Reader(euicc.card)
        assert reader.transmit(bytes.fromhex("00A40004023F00"))[1] == 0x6A82  # no profile enabled yet
        install(reader, SmdpSide(), euicc.eid, ICCID, upp=milenage_der())
        assert reader.enable(ICCID) == 0
        assert reader.transmit(bytes.fromhex("00A4000C023F00"))[1] == 0x9000
        assert reader.transmit(bytes.fromhex("00A4000C022FE2"))[1] == 0x9000
        assert reader.transmit(bytes.fromhex("00B000000A")) == (iccid_to_bcd(ICCID), 0x9000)
        assert reader.transmit(bytes.fromhex("00A4040C07A0000000871002"))[1] == 0x9000
        assert reader.transmit(bytes.fromhex("00A4000C026F07"))[1] == 0x9000
        assert reader.transmit(bytes.fromhex("00B0000009")) == (encode_imsi(IMSI), 0x9000)
        assert reader.transmit(bytes.fromhex("00A4000C027FFF"))[1] == 0x9000

        def card(rand: bytes, autn: bytes) -> bytes:
            body = aka.encode_authenticate_command(rand, autn)
            data, sw = reader.transmit(bytes([0x00, 0x88, 0x00, 0x81, len(body)]) + body)
            if sw != 0x9000:
                raise ApduError(sw, "AUTHENTICATE")
            return data

        network = authenticator_for(aka.MILENAGE, KI, OPC, IMSI, ICCID)
        assert network.challenge(IMSI, card) is ChallengeOutcome.AUTHENTICATED
        assert saved["sqn"][USIM_AID.hex().upper()][0] == 1
        stranger = authenticator_for(aka.MILENAGE, OTHER_KI, OTHER_OPC, OTHER_IMSI, OTHER_ICCID)
        assert stranger.challenge(OTHER_IMSI, card) is ChallengeOutcome.MAC_FAILURE

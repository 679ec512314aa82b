"""The enabled profile, live: its file system and its network access applications (sans-IO).

``ProfileRuntime(package)`` turns an installed SAIP profile package (``rsp.saip``) into the
applications ``euicc_sim.apdu.Card`` offers while that profile is enabled: the MF (``aid`` None) and
one ADF per NAA (USIM, ISIM, CSIM; the Card selects them by full or right-truncated AID). Each keeps
a context per logical channel (current DF, current EF, record pointer) and answers:

* SELECT (ETSI TS 102 221 11.1.1): P1 '00' by FID ('3F00' the MF, '7FFF' the application's ADF, else
  a child, the parent or a sibling DF of the current DF, or the current DF, as 8.4.1 allows), '01'
  child DF, '03' parent DF, '04' DF name (matched by the Card), '08' path from the MF, '09' path from
  the current DF. P2 b4-b3 '01' returns the FCP template (11.1.1.3); ISO's '00' (FCI) is answered
  the same way; '11' returns nothing.
* STATUS (11.1.2), READ BINARY / UPDATE BINARY (11.1.3, 11.1.4; offset, or SFI in P1),
  READ RECORD / UPDATE RECORD (11.1.5, 11.1.6; absolute/current, next, previous; SFI in P2; a cyclic
  file is written in 'previous' mode only). UPDATEs change the running copy: they last until the
  runtime is rebuilt (power cycle of the process, enable/disable) and never touch the package.
* VERIFY PIN and UNBLOCK PIN (11.1.9, 11.1.13): wrong codes answer '63CX' (X tries left), a
  blocked code '6983'. CHANGE/ENABLE/DISABLE PIN are not offered ('6D00').
* Access conditions from the files' security attributes (referenced format, 9.2.7): the EF.ARR
  record's access rules (AM DO '80' / '84' with SC DOs '90' always, '97' never, 'A4' user PIN CRT,
  'A0' OR, 'AF' AND) are evaluated for READ (AM b1) and UPDATE (AM b2); a PIN condition holds when
  the PIN is verified or disabled. Failing answers '6982'. A file without attributes is unrestricted.
* AUTHENTICATE (TS 31.102 7.1.2, TS 31.103 7.1.2) on an ADF with an akaParameter: P2 '81' (3G/IMS
  context) with the algorithm the profile names (Milenage with its constants, or the XOR test
  algorithm of TS 34.108 8.1.2), SQN checks of TS 33.102 Annex C seeded from sqnInit; MAC failure
  '9862', synchronisation failure 'DC' || AUTS. P2 '80' (GSM context) when the USIM service table
  offers service 38. Kc follows CK/IK in the 3G answer when service 27 (GSM access) is offered.
  As 31.102 requires, the current DF must be the ADF or below it, and the application PIN verified
  (or disabled).

SAIP facts this module relies on (TCA eUICC Profile Package, PEDefinitions comments and TS.48):
pinStatusTemplateDO lists the key references of a DF (the card builds the PS_DO); pinAttributes b1
set means the PIN is enabled (TS.48: PIN1 '6' disabled, ADMs '3' enabled); securityAttributesReferenced
is EF.ARR FID + record, or the record alone with '2F06' implied for the MF, ADFs and files directly
under the MF and '6F06' elsewhere; the EF.ARR is looked up in the file's DF, then its parents.
sqnOptions is not interpreted: the profile's sqnDelta and sqnAgeLimit always apply to Milenage, the
rsp.aka defaults (the SAIP defaults) to the test algorithm, for which SAIP ignores them.

State that outlives the runtime goes out through callbacks, before the answer that depends on it:
``on_sqn_update(sqn_states)`` after every accepted challenge, ``on_pin_update(pin_states)`` after
every PIN/PUK try that changes a counter or a value; both take the whole JSON-ready dict, which the
next runtime gets back as ``sqn_states`` / ``pin_states``. Verification status is volatile: it ends
with ``reset()`` (card power-on or reset) or a new runtime.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from euicc_sim.apdu import (
    SW_CLA_NOT_SUPPORTED,
    SW_CONDITIONS_NOT_SATISFIED,
    SW_FUNCTION_NOT_SUPPORTED,
    SW_INCORRECT_DATA,
    SW_INCORRECT_P1P2,
    SW_INS_NOT_SUPPORTED,
    SW_NOT_FOUND,
    SW_OK,
    SW_WRONG_LE,
    SW_WRONG_LENGTH,
    Command,
)
from rsp import aka
from rsp.errors import DecodeError
from rsp.saip import FileEntry, ProfilePackage
from rsp.saip.filesystem import MF_PATH, NAA_KINDS, NAA_OF_PE
from rsp.tlv import encode_tlv

SW_VERIFY_FAILED = 0x63C0  # | tries left
SW_INCOMPATIBLE_FILE = 0x6981
SW_SECURITY_NOT_SATISFIED = 0x6982
SW_BLOCKED = 0x6983
SW_NO_CURRENT_EF = 0x6986
SW_RECORD_NOT_FOUND = 0x6A83
SW_REFERENCE_NOT_FOUND = 0x6A88
SW_WRONG_OFFSET = 0x6B00

INS_SELECT, INS_STATUS, INS_TERMINAL_PROFILE = 0xA4, 0xF2, 0x10
INS_READ_BINARY, INS_UPDATE_BINARY, INS_READ_RECORD, INS_UPDATE_RECORD = 0xB0, 0xD6, 0xB2, 0xDC
INS_VERIFY, INS_UNBLOCK_PIN, INS_AUTHENTICATE = 0x20, 0x2C, aka.INS_AUTHENTICATE
P2_GSM_CONTEXT = 0x80

AM_READ, AM_UPDATE = 0x01, 0x02  # access mode bits for EFs (TS 102 221 9.2.7, ISO 7816-4 table 17)
RECORD_ABSOLUTE, RECORD_NEXT, RECORD_PREVIOUS = 0x04, 0x02, 0x03
SERVICE_GSM_ACCESS, SERVICE_GSM_CONTEXT = 27, 38  # TS 31.102 4.2.8 (EF.UST)

TRANSPARENT, LINEAR_FIXED, CYCLIC, BER_TLV = "transparent", "linear-fixed", "cyclic", "ber-tlv"
_EF_TYPE = {TRANSPARENT: 0x01, LINEAR_FIXED: 0x02, CYCLIC: 0x06, BER_TLV: 0x39}
_DF_DESCRIPTOR = b"\x78\x21"  # shareable DF, data coding '21' (TS 102 221 11.1.1.4.3)
_PIN_REFERENCES = {*range(0x01, 0x09), *range(0x0A, 0x0F), 0x11, *range(0x81, 0x89), *range(0x8A, 0x8F)}

SqnStates = dict[str, list[int]]  # ADF AID (hex, upper case) -> the 32 SEQ values of its array
PinStates = dict[str, dict]  # "3F00/01", "puk/01" -> {"left": n} (+ "value": hex once changed)


class _Sw(Exception):
    """Ends the current command with a status word."""

    def __init__(self, sw: int):
        super().__init__(f"{sw:04X}")
        self.sw = sw


# --- the file tree -----------------------------------------------------------------------------


@dataclass(eq=False)
class _Node:
    """One file of the running profile; ``data`` is shared between a link file and its target."""

    entry: FileEntry
    parent: _Node | None
    data: bytearray
    children: dict[str, _Node] = field(default_factory=dict)

    @property
    def path(self) -> tuple[str, ...]:
        return self.entry.path

    @property
    def structure(self) -> str:
        return self.entry.structure

    @property
    def is_dir(self) -> bool:
        return self.entry.is_directory

    @property
    def is_adf(self) -> bool:
        return self.structure == "adf"

    @property
    def fid(self) -> str | None:
        """The FID SELECT knows; an ADF's SAIP file ID is temporary and not selectable."""
        return None if self.is_adf else self.entry.fid

    @property
    def record_length(self) -> int:
        return self.entry.record_length or 0

    @property
    def record_count(self) -> int:
        return len(self.data) // self.record_length if self.record_length else 0

    def record(self, number: int) -> bytes:
        start = (number - 1) * self.record_length
        return bytes(self.data[start : start + self.record_length])

    def ancestors(self) -> Iterator[_Node]:
        """This DF (or the DF holding this EF), then its parents up to the MF (an ADF's parent)."""
        node: _Node | None = self if self.is_dir else self.parent
        while node is not None:
            yield node
            node = node.parent


def _build_tree(files: list[FileEntry]) -> dict[tuple[str, ...], _Node]:
    nodes: dict[tuple[str, ...], _Node] = {}
    for entry in files:
        if entry.structure == "adf":
            parent = nodes.get(MF_PATH)  # logically below the MF, but not selectable by FID
        else:
            parent = nodes.get(entry.path[:-1]) if len(entry.path) > 1 else None
        node = _Node(entry, parent, bytearray(entry.content))
        nodes[entry.path] = node
        if parent is not None and entry.structure != "adf":
            parent.children[entry.fid or ""] = node
    for node in nodes.values():
        target = nodes.get(node.entry.link_target or ())
        if target is not None and not target.is_dir and not node.is_dir:
            node.data = target.data  # TS 102 222 linked files share one content
    if MF_PATH not in nodes:
        raise DecodeError("the profile package creates no MF")
    return nodes


def _service_available(table: bytes, number: int) -> bool:
    """Service n of a service table (TS 31.102 4.2.8): byte (n-1)/8, bit (n-1)%8."""
    index, bit = divmod(number - 1, 8)
    return index < len(table) and bool(table[index] >> bit & 1)


# --- access rules (EF.ARR, expanded format) ----------------------------------------------------


@dataclass
class _Rule:
    am_tag: int  # '80' access mode byte, '84' command header (INS)
    am: bytes
    conditions: list[tuple[int, bytes]] = field(default_factory=list)

    def covers(self, ins: int, am_bit: int) -> bool:
        if self.am_tag == 0x80:
            return bool(self.am) and not self.am[0] & 0x80 and bool(self.am[0] & am_bit)
        return self.am[:1] == bytes([ins])


def _simple_tlvs(data: bytes) -> list[tuple[int, bytes]]:
    """One-byte tags and lengths, as ARR records use them; 'FF'/'00' padding ends the list."""
    items, pos = [], 0
    while pos < len(data) and data[pos] not in (0x00, 0xFF):
        if pos + 2 > len(data) or data[pos + 1] > 0x7F or pos + 2 + data[pos + 1] > len(data):
            raise DecodeError(f"access rule {data.hex().upper()} is malformed at byte {pos}")
        length = data[pos + 1]
        items.append((data[pos], bytes(data[pos + 2 : pos + 2 + length])))
        pos += 2 + length
    return items


def _parse_rules(record: bytes) -> list[_Rule]:
    rules: list[_Rule] = []
    for tag, value in _simple_tlvs(record):
        if tag in (0x80, 0x84):
            rules.append(_Rule(tag, value))
        elif rules:
            rules[-1].conditions.append((tag, value))
    return rules


def _condition_met(tag: int, value: bytes, pin_ok: Callable[[int], bool]) -> bool:
    if tag == 0x90:  # always
        return True
    if tag == 0xA4:  # control reference template: key reference '83' (user PIN)
        reference = dict(_simple_tlvs(value)).get(0x83, b"")
        return len(reference) == 1 and pin_ok(reference[0])
    if tag in (0xA0, 0xAF):  # OR / AND template of security conditions
        parts = [_condition_met(t, v, pin_ok) for t, v in _simple_tlvs(value)]
        return bool(parts) and (any(parts) if tag == 0xA0 else all(parts))
    return False  # '97' never, and anything this card does not evaluate


def _arr_reference(node: _Node) -> tuple[str, int] | None:
    attributes = node.entry.security_attributes
    if attributes is None:
        return None
    if len(attributes) == 3:
        return attributes[:2].hex().upper(), attributes[2]
    if len(attributes) == 1:  # SAIP: the EF.ARR FID implied by where the file sits
        top = node.parent is None or node.is_adf or node.parent.path == MF_PATH
        return ("2F06" if top else "6F06"), attributes[0]
    return "", 0  # malformed: refers to no rule, so nothing is allowed


# --- PINs ----------------------------------------------------------------------------------------


@dataclass(eq=False)
class _Code:
    """A PIN or PUK value with its try counter; ``key`` names it in the saved state."""

    key: str
    value: bytes
    max_attempts: int
    left: int
    initial: bytes = field(init=False, default=b"")

    def __post_init__(self) -> None:
        self.initial = self.value
        self.left = min(self.left, self.max_attempts)

    def state(self) -> dict:
        saved: dict = {"left": self.left}
        if self.value != self.initial:
            saved["value"] = self.value.hex().upper()
        return saved

    def restore(self, saved: object) -> None:
        left = saved.get("left") if isinstance(saved, dict) else None
        if not isinstance(left, int) or not 0 <= left <= self.max_attempts:
            raise DecodeError(f"stored state of {self.key} is malformed: {saved!r}")
        value = saved.get("value", self.value.hex())
        if not isinstance(value, str) or len(value) != 16:
            raise DecodeError(f"stored value of {self.key} is not 8 bytes of hex")
        try:
            self.value = bytes.fromhex(value)
        except ValueError:
            raise DecodeError(f"stored value of {self.key} is not 8 bytes of hex") from None
        self.left = left


@dataclass(eq=False)
class _Pin(_Code):
    enabled: bool = True
    puk: _Code | None = None


class _Pins:
    """The profile's PINs and PUKs: global ones (key references below '80') belong to the MF,
    local ones to the DF of the template PE that defined them and the DFs below it."""

    def __init__(self, package: ProfilePackage, nodes: dict, saved: PinStates, on_update):
        self._mf = nodes[MF_PATH]
        self._on_update = on_update
        self._puks = {
            puk.key_reference: _Code(
                f"puk/{puk.key_reference:02X}", puk.value, puk.max_attempts, puk.retries_left
            )
            for puk in package.puks
        }
        self._by_df: dict[tuple[str, ...], dict[int, _Pin]] = {}
        for pin in package.pins:
            scope = self._mf if pin.key_reference < 0x80 else _scope_of(pin.context, nodes)
            table = self._by_df.setdefault(scope.path, {})
            key = f"{'/'.join(scope.path)}/{pin.key_reference:02X}"
            puk = self._puks.get(pin.unblocking_reference) if pin.unblocking_reference is not None else None
            enabled = bool(pin.attributes & 0x01)  # SAIP pinAttributes b1 (see the module notes)
            table.setdefault(
                pin.key_reference, _Pin(key, pin.value, pin.max_attempts, pin.retries_left, enabled, puk)
            )
        if not isinstance(saved, dict):
            raise DecodeError(f"stored PIN state is not a mapping: {type(saved).__name__}")
        codes = self._codes()
        for key, value in saved.items():
            if key in codes:
                codes[key].restore(value)
        self._verified: set[str] = set()

    def _codes(self) -> dict[str, _Code]:
        codes: dict[str, _Code] = {c.key: c for table in self._by_df.values() for c in table.values()}
        codes.update({puk.key: puk for puk in self._puks.values()})
        return codes

    def state(self) -> PinStates:
        return {key: code.state() for key, code in self._codes().items()}

    def _save(self) -> None:
        if self._on_update is not None:
            self._on_update(self.state())

    def reset(self) -> None:
        self._verified.clear()

    def lookup(self, reference: int, df: _Node) -> _Pin | None:
        scopes = [self._mf] if reference < 0x80 else df.ancestors()
        for scope in scopes:
            pin = self._by_df.get(scope.path, {}).get(reference)
            if pin is not None:
                return pin
        return None

    def satisfied(self, reference: int, df: _Node) -> bool:
        pin = self.lookup(reference, df)
        return pin is not None and (not pin.enabled or pin.key in self._verified)

    def verify(self, pin: _Pin, data: bytes) -> int:
        if not data:  # status query (TS 102 221 11.1.9)
            if pin.left == 0:
                return SW_BLOCKED
            return SW_OK if pin.key in self._verified or not pin.enabled else SW_VERIFY_FAILED | pin.left
        if len(data) != 8:
            raise _Sw(SW_WRONG_LENGTH)
        if pin.left == 0:
            return SW_BLOCKED
        if not self._try(pin, data):
            self._verified.discard(pin.key)
            return SW_VERIFY_FAILED | pin.left
        self._verified.add(pin.key)
        return SW_OK

    def unblock(self, pin: _Pin, data: bytes) -> int:
        puk = pin.puk
        if puk is None:
            raise _Sw(SW_REFERENCE_NOT_FOUND)
        if not data:
            return SW_BLOCKED if puk.left == 0 else SW_VERIFY_FAILED | puk.left
        if len(data) != 16:
            raise _Sw(SW_WRONG_LENGTH)
        if puk.left == 0:
            return SW_BLOCKED
        if not self._try(puk, data[:8], then=lambda: _set_new_pin(pin, data[8:])):
            return SW_VERIFY_FAILED | puk.left
        self._verified.add(pin.key)
        return SW_OK

    def _try(self, code: _Code, candidate: bytes, then: Callable[[], None] | None = None) -> bool:
        """Compare; the counter (and any change ``then`` makes) is saved before the answer."""
        if hmac.compare_digest(candidate, code.value):
            changed = code.left != code.max_attempts or then is not None
            code.left = code.max_attempts
            if then is not None:
                then()
            if changed:
                self._save()
            return True
        code.left -= 1
        self._save()
        return False


def _set_new_pin(pin: _Pin, value: bytes) -> None:
    pin.value, pin.left = bytes(value), pin.max_attempts


def _scope_of(context: str, nodes: dict[tuple[str, ...], _Node]) -> _Node:
    """The DF a pinCodes PE applies to: the one its preceding template PE created."""
    naa = context if context in NAA_KINDS else NAA_OF_PE.get(context)
    wanted = f"adf-{naa}" if naa else f"df-{context}"
    found = next((node for node in nodes.values() if node.entry.name == wanted), None)
    return found or nodes[MF_PATH]


# --- network authentication ----------------------------------------------------------------------


@dataclass(frozen=True)
class _Naa:
    """What AUTHENTICATE needs on one ADF."""

    sqn_key: str  # AID of the akaParameter owning the SQN array (a mapped NAA shares its source's)
    algorithm: aka.AkaAlgorithm | None  # None: an algorithm this card does not run (TUAK, ...)
    delta: int
    age_limit: int | None
    seed: tuple[int, ...]
    kc_in_3g: bool
    gsm_context: bool
    app_pin: int | None  # the application PIN of the ADF's PIN status template


def _naa_for(package: ProfilePackage, adf: _Node) -> _Naa | None:
    by_aid = {p.application_aid: p for p in package.aka_parameters if p.application_aid}
    parameter = by_aid.get(adf.entry.aid)
    if parameter is None:
        return None
    owner = by_aid.get(parameter.mapping_source) if parameter.algorithm is None else parameter
    if owner is None:
        return None
    ust = adf.children.get("6F38") if adf.entry.name == "adf-usim" else None
    services = bytes(ust.data) if ust is not None else b""
    is_milenage = owner.algorithm == aka.MILENAGE
    return _Naa(
        sqn_key=(owner.application_aid or b"").hex().upper(),
        algorithm=_algorithm(owner),
        delta=int.from_bytes(owner.sqn_delta, "big") if is_milenage else aka.DEFAULT_DELTA,
        age_limit=int.from_bytes(owner.sqn_age_limit, "big") if is_milenage else aka.DEFAULT_AGE_LIMIT,
        seed=_sqn_seed(owner.sqn_init),
        kc_in_3g=_service_available(services, SERVICE_GSM_ACCESS),
        gsm_context=_service_available(services, SERVICE_GSM_CONTEXT),
        app_pin=next((r for r in adf.entry.pin_status_template or b"" if 0x01 <= r <= 0x08), None),
    )


def _algorithm(parameter) -> aka.AkaAlgorithm | None:
    try:
        if parameter.algorithm == aka.MILENAGE:
            constants = aka.MilenageConstants.from_saip(
                parameter.rotation_constants, parameter.xoring_constants
            )
            return aka.algorithm_for(aka.MILENAGE, parameter.key, opc=parameter.opc, constants=constants)
        if parameter.algorithm == aka.XOR_TEST:
            return aka.algorithm_for(aka.XOR_TEST, parameter.key)
    except (DecodeError, aka.AkaError):
        pass  # keys that do not fit the algorithm: AUTHENTICATE answers 'function not supported'
    return None


def _sqn_seed(sqn_init: tuple[bytes, ...] | None) -> tuple[int, ...]:
    if sqn_init is None:
        return aka.initial_sqn_state()
    seed = tuple(int.from_bytes(value, "big") for value in sqn_init)
    aka.highest_sqn(seed)  # SEQ values must fit 43 bits (SAIP: at most '07FFFFFFFFFF')
    return seed


# --- the applications the Card selects -----------------------------------------------------------


@dataclass
class _Context:
    df: _Node
    ef: _Node | None = None
    record: int | None = None


class ProfileApplication:
    """The MF (``aid`` None) or one ADF of the enabled profile, as euicc_sim.apdu.Application."""

    def __init__(self, runtime: ProfileRuntime, adf: _Node | None, naa: _Naa | None):
        self._runtime = runtime
        self._adf = adf
        self._root = adf or runtime.mf
        self.aid: bytes | None = adf.entry.aid if adf is not None else None
        self._naa = naa
        self._contexts: dict[int, _Context] = {}
        self._handlers = {
            INS_READ_BINARY: (False, self._read_binary),
            INS_UPDATE_BINARY: (False, self._update_binary),
            INS_READ_RECORD: (False, self._read_record),
            INS_UPDATE_RECORD: (False, self._update_record),
            INS_VERIFY: (False, self._verify),
            INS_UNBLOCK_PIN: (False, self._unblock),
            INS_AUTHENTICATE: (False, self._authenticate),
            INS_STATUS: (True, self._status),
            INS_TERMINAL_PROFILE: (True, self._terminal_profile),
        }

    # --- the Application protocol ------------------------------------------------------------

    def select(self, command: Command) -> tuple[bytes, int]:
        fresh = command.channel not in self._contexts
        data, sw = self._run(self._select, command)
        if sw != SW_OK and fresh:  # a failed SELECT leaves nothing behind on this channel
            self._contexts.pop(command.channel, None)
        return data, sw

    def process(self, command: Command) -> tuple[bytes, int]:
        return self._run(self._dispatch, command)

    def deselect(self, channel: int) -> None:
        self._contexts.pop(channel, None)

    def _run(self, handler, command: Command) -> tuple[bytes, int]:
        context = self._contexts.setdefault(command.channel, _Context(self._root))
        try:
            return handler(context, command)
        except _Sw as status:
            return b"", status.sw

    def _dispatch(self, ctx: _Context, command: Command) -> tuple[bytes, int]:
        if command.ins not in self._handlers:
            raise _Sw(SW_INS_NOT_SUPPORTED)
        proprietary, handler = self._handlers[command.ins]
        if command.proprietary != proprietary:
            raise _Sw(SW_CLA_NOT_SUPPORTED)
        return handler(ctx, command)

    # --- SELECT and STATUS -------------------------------------------------------------------

    def _select(self, ctx: _Context, command: Command) -> tuple[bytes, int]:
        wants_fcp = _select_response(command)
        p1, data = command.p1, command.data
        if p1 == 0x04:
            if self._adf is None:
                raise _Sw(SW_NOT_FOUND)
            target = self._adf
        elif p1 == 0x00:
            target = self._by_fid(ctx.df, data)
        elif p1 == 0x01:
            target = ctx.df.children.get(_fid(data))
            if target is None or not target.is_dir:
                raise _Sw(SW_NOT_FOUND)
        elif p1 == 0x03:
            if data:
                raise _Sw(SW_WRONG_LENGTH)
            target = _found(ctx.df.parent)
        elif p1 in (0x08, 0x09):
            target = self._by_path(self._runtime.mf if p1 == 0x08 else ctx.df, data)
        else:
            raise _Sw(SW_INCORRECT_P1P2)
        _move(ctx, target)
        return (self._runtime.fcp(target) if wants_fcp else b""), SW_OK

    def _by_fid(self, df: _Node, data: bytes) -> _Node:
        if not data:  # ISO 7816-4: P1 '00' without data selects the MF
            return self._runtime.mf
        fid = _fid(data)
        if fid == "3F00":
            return self._runtime.mf
        if fid == "7FFF":
            return _found(self._adf)
        if fid in df.children:
            return df.children[fid]
        if df.fid == fid:
            return df
        parent = df.parent
        if parent is not None and parent.fid == fid:
            return parent
        sibling = parent.children.get(fid) if parent is not None else None
        if sibling is not None and sibling.is_dir:
            return sibling
        raise _Sw(SW_NOT_FOUND)

    def _by_path(self, start: _Node, data: bytes) -> _Node:
        if not data or len(data) % 2:
            raise _Sw(SW_WRONG_LENGTH)
        fids = [data[i : i + 2].hex().upper() for i in range(0, len(data), 2)]
        node = start
        if fids[0] == "7FFF":
            node, fids = _found(self._adf), fids[1:]
        for fid in fids:
            if not node.is_dir or fid not in node.children:
                raise _Sw(SW_NOT_FOUND)
            node = node.children[fid]
        return node

    def _status(self, ctx: _Context, command: Command) -> tuple[bytes, int]:
        if command.data:
            raise _Sw(SW_WRONG_LENGTH)
        if command.p1 not in (0x00, 0x01, 0x02):
            raise _Sw(SW_INCORRECT_P1P2)
        if command.p2 == 0x00:
            return self._runtime.fcp(ctx.df), SW_OK
        if command.p2 == 0x01 and self.aid is not None:
            return encode_tlv(0x84, self.aid), SW_OK
        if command.p2 == 0x0C:
            return b"", SW_OK
        raise _Sw(SW_INCORRECT_P1P2)

    def _terminal_profile(self, ctx: _Context, command: Command) -> tuple[bytes, int]:
        # TS 102 221 11.2.1: accepted; this card has no proactive session to offer.
        if command.p1 or command.p2:
            raise _Sw(SW_INCORRECT_P1P2)
        if not command.data:
            raise _Sw(SW_WRONG_LENGTH)
        return b"", SW_OK

    # --- binary files ------------------------------------------------------------------------

    def _binary_target(self, ctx: _Context, command: Command) -> tuple[_Node, int]:
        if command.p1 & 0x80:  # SFI in P1 b5-b1 (b7-b6 '00'), offset in P2
            if command.p1 & 0x60 or not command.p1 & 0x1F:
                raise _Sw(SW_INCORRECT_P1P2)
            ef, offset = self._by_sfi(ctx, command.p1 & 0x1F), command.p2
        else:
            ef, offset = _current_ef(ctx), command.p1 << 8 | command.p2
        if ef.structure != TRANSPARENT:
            raise _Sw(SW_INCOMPATIBLE_FILE)
        return ef, offset

    def _read_binary(self, ctx: _Context, command: Command) -> tuple[bytes, int]:
        ef, offset = self._binary_target(ctx, command)
        self._runtime.check_access(ef, command.ins, AM_READ)
        if offset >= len(ef.data):
            raise _Sw(SW_WRONG_OFFSET)
        available = len(ef.data) - offset
        if command.ne is not None and available < command.ne < 256:
            raise _Sw(SW_WRONG_LE | available)  # T=0: the exact count to ask for
        return bytes(ef.data[offset : offset + (command.ne or 256)]), SW_OK

    def _update_binary(self, ctx: _Context, command: Command) -> tuple[bytes, int]:
        ef, offset = self._binary_target(ctx, command)
        self._runtime.check_access(ef, command.ins, AM_UPDATE)
        if offset >= len(ef.data):
            raise _Sw(SW_WRONG_OFFSET)
        if not command.data or offset + len(command.data) > len(ef.data):
            raise _Sw(SW_WRONG_LENGTH)
        ef.data[offset : offset + len(command.data)] = command.data
        return b"", SW_OK

    # --- record files --------------------------------------------------------------------------

    def _record_target(self, ctx: _Context, command: Command) -> tuple[_Node, int]:
        mode, sfi = command.p2 & 0x07, command.p2 >> 3
        if mode not in (RECORD_ABSOLUTE, RECORD_NEXT, RECORD_PREVIOUS) or sfi == 0x1F:
            raise _Sw(SW_INCORRECT_P1P2)
        if mode != RECORD_ABSOLUTE and command.p1:
            raise _Sw(SW_INCORRECT_P1P2)
        ef = self._by_sfi(ctx, sfi) if sfi else _current_ef(ctx)
        if ef.structure not in (LINEAR_FIXED, CYCLIC) or not ef.record_count:
            raise _Sw(SW_INCOMPATIBLE_FILE)
        return ef, mode

    def _read_record(self, ctx: _Context, command: Command) -> tuple[bytes, int]:
        ef, mode = self._record_target(ctx, command)
        self._runtime.check_access(ef, command.ins, AM_READ)
        number = _record_number(ctx, ef, command.p1, mode)
        if command.ne not in (None, 256, ef.record_length):
            raise _Sw(SW_WRONG_LE | ef.record_length)
        if mode != RECORD_ABSOLUTE:
            ctx.record = number
        return ef.record(number), SW_OK

    def _update_record(self, ctx: _Context, command: Command) -> tuple[bytes, int]:
        ef, mode = self._record_target(ctx, command)
        self._runtime.check_access(ef, command.ins, AM_UPDATE)
        if len(command.data) != ef.record_length:
            raise _Sw(SW_WRONG_LENGTH)
        if ef.structure == CYCLIC:  # the oldest record is overwritten and becomes record 1
            if mode != RECORD_PREVIOUS:
                raise _Sw(SW_INCORRECT_P1P2)
            ef.data[:] = command.data + ef.data[: -ef.record_length]
            ctx.record = 1
            return b"", SW_OK
        number = _record_number(ctx, ef, command.p1, mode)
        start = (number - 1) * ef.record_length
        ef.data[start : start + ef.record_length] = command.data
        if mode != RECORD_ABSOLUTE:
            ctx.record = number
        return b"", SW_OK

    def _by_sfi(self, ctx: _Context, sfi: int) -> _Node:
        """The EF of the current DF with this SFI; it becomes the current EF (ISO 7816-4 7.2.2)."""
        ef = next((n for n in ctx.df.children.values() if not n.is_dir and n.entry.sfi == sfi), None)
        if ef is None:
            raise _Sw(SW_NOT_FOUND)
        if ef is not ctx.ef:
            _move(ctx, ef)
        return ef

    # --- PINs ------------------------------------------------------------------------------------

    def _pin(self, ctx: _Context, command: Command):
        if command.p1 or command.p2 not in _PIN_REFERENCES:
            raise _Sw(SW_INCORRECT_P1P2)
        pin = self._runtime.pins.lookup(command.p2, ctx.df)
        if pin is None:
            raise _Sw(SW_REFERENCE_NOT_FOUND)
        return pin

    def _verify(self, ctx: _Context, command: Command) -> tuple[bytes, int]:
        return b"", self._runtime.pins.verify(self._pin(ctx, command), command.data)

    def _unblock(self, ctx: _Context, command: Command) -> tuple[bytes, int]:
        return b"", self._runtime.pins.unblock(self._pin(ctx, command), command.data)

    # --- AUTHENTICATE ------------------------------------------------------------------------------

    def _authenticate(self, ctx: _Context, command: Command) -> tuple[bytes, int]:
        naa = self._naa
        if naa is None or self._adf is None:
            raise _Sw(SW_INS_NOT_SUPPORTED)
        gsm = command.p2 == P2_GSM_CONTEXT and naa.gsm_context
        if command.p1 or not (command.p2 == aka.P2_3G_CONTEXT or gsm):
            raise _Sw(SW_INCORRECT_P1P2)
        if ctx.df.path[0] != self._adf.path[0]:  # the current DF is outside this ADF
            raise _Sw(SW_CONDITIONS_NOT_SATISFIED)
        if naa.app_pin is not None and not self._runtime.pins.satisfied(naa.app_pin, self._adf):
            raise _Sw(SW_SECURITY_NOT_SATISFIED)
        if naa.algorithm is None:
            raise _Sw(SW_FUNCTION_NOT_SUPPORTED)
        if gsm:
            return _gsm_authenticate(naa.algorithm, command.data), SW_OK
        try:
            rand, autn = aka.decode_authenticate_command(command.data)
        except DecodeError:
            raise _Sw(SW_INCORRECT_DATA) from None
        result = self._runtime.usim_authenticate(naa, rand, autn)
        if isinstance(result, aka.MacFailure):
            return b"", aka.SW_MAC_FAILURE
        if isinstance(result, aka.SyncFailure):
            return aka.encode_sync_failure(result.auts), SW_OK
        kc = aka.c3(result.ck, result.ik) if naa.kc_in_3g else None
        return aka.encode_authenticate_success(result.res, result.ck, result.ik, kc), SW_OK


def _gsm_authenticate(algorithm: aka.AkaAlgorithm, data: bytes) -> bytes:
    """TS 31.102 7.1.2.1 GSM context: L RAND in; L SRES L Kc out, through c2 and c3 (TS 33.102 6.8.1.2)."""
    if len(data) != 17 or data[0] != 16:
        raise _Sw(SW_INCORRECT_DATA)
    res, ck, ik, _ = algorithm.f2345(data[1:])
    return b"\x04" + aka.c2(res) + b"\x08" + aka.c3(ck, ik)


def _select_response(command: Command) -> bool:
    """Whether SELECT returns the FCP (TS 102 221 11.1.1.2 P2); raises on a P2 this card refuses."""
    session, control, occurrence = command.p2 & 0xF0, command.p2 & 0x0C, command.p2 & 0x03
    if command.p1 == 0x04:
        if session not in (0x00, 0x40):  # activation, or termination (the Card ends the selection)
            raise _Sw(SW_INCORRECT_P1P2)
    elif session or occurrence:
        raise _Sw(SW_INCORRECT_P1P2)
    if control == 0x08:  # FMD: not offered
        raise _Sw(SW_INCORRECT_P1P2)
    return control != 0x0C


def _fid(data: bytes) -> str:
    if len(data) != 2:
        raise _Sw(SW_WRONG_LENGTH)
    return data.hex().upper()


def _found(node: _Node | None) -> _Node:
    if node is None:
        raise _Sw(SW_NOT_FOUND)
    return node


def _move(ctx: _Context, target: _Node) -> None:
    if target.is_dir:
        ctx.df, ctx.ef = target, None
    else:
        ctx.df, ctx.ef = target.parent or ctx.df, target
    ctx.record = None


def _current_ef(ctx: _Context) -> _Node:
    if ctx.ef is None:
        raise _Sw(SW_NO_CURRENT_EF)
    return ctx.ef


def _record_number(ctx: _Context, ef: _Node, p1: int, mode: int) -> int:
    """The record a command addresses (TS 102 221 11.1.5); cyclic files wrap, linear ones do not."""
    count, current, cyclic = ef.record_count, ctx.record, ef.structure == CYCLIC
    if mode == RECORD_ABSOLUTE:
        number = p1 or current
    elif mode == RECORD_NEXT:
        number = 1 if current is None else current + 1
        if number > count and cyclic:
            number = 1
    else:
        number = count if current is None else current - 1
        if number < 1 and cyclic:
            number = count
    if number is None or not 1 <= number <= count:
        raise _Sw(SW_RECORD_NOT_FOUND)
    return number


# --- the runtime ---------------------------------------------------------------------------------


class ProfileRuntime:
    """One enabled profile's running file system, PINs and SQN arrays; ``applications`` are what
    ``Card(profile_apps=...)`` must return (the same objects for as long as the profile stays
    enabled). Raises DecodeError when the package has no MF or the stored state is malformed."""

    def __init__(
        self,
        package: ProfilePackage,
        sqn_states: SqnStates | None = None,
        on_sqn_update: Callable[[SqnStates], None] | None = None,
        *,
        pin_states: PinStates | None = None,
        on_pin_update: Callable[[PinStates], None] | None = None,
    ):
        self.package = package
        self._nodes = _build_tree(package.files())
        self.mf = self._nodes[MF_PATH]
        self.pins = _Pins(package, self._nodes, pin_states or {}, on_pin_update)
        naas = {node.path: _naa_for(package, node) for node in self._nodes.values() if node.is_adf}
        self.applications: list[ProfileApplication] = [ProfileApplication(self, None, None)]
        self.applications += [ProfileApplication(self, self._nodes[path], naa) for path, naa in naas.items()]
        self._on_sqn_update = on_sqn_update
        self._sqn: dict[str, tuple[int, ...]] = {}
        for naa in naas.values():
            if naa is not None:
                self._sqn.setdefault(naa.sqn_key, naa.seed)
        if not isinstance(sqn_states or {}, dict):
            raise DecodeError(f"stored SQN state is not a mapping: {type(sqn_states).__name__}")
        for key, saved in (sqn_states or {}).items():
            if key in self._sqn:
                if not isinstance(saved, list | tuple):
                    raise DecodeError(f"stored SQN array of {key} is not a list")
                aka.highest_sqn(saved)  # 32 SEQ values that fit the SQN
                self._sqn[key] = tuple(saved)

    @property
    def sqn_states(self) -> SqnStates:
        return {key: list(state) for key, state in self._sqn.items()}

    @property
    def pin_states(self) -> PinStates:
        return self.pins.state()

    def reset(self) -> None:
        """Card power-on or reset: every PIN verification ends (TS 102 221 9.5)."""
        self.pins.reset()

    # --- used by the applications ----------------------------------------------------------------

    def usim_authenticate(self, naa: _Naa, rand: bytes, autn: bytes) -> aka.AuthResult:
        assert naa.algorithm is not None
        result = aka.usim_authenticate(
            naa.algorithm, rand, autn, self._sqn[naa.sqn_key], delta=naa.delta, age_limit=naa.age_limit
        )
        if isinstance(result, aka.AuthSuccess):
            updated = {**self._sqn, naa.sqn_key: result.sqn_state}
            if self._on_sqn_update is not None:  # saved before the card answers (no replay after a crash)
                self._on_sqn_update({key: list(state) for key, state in updated.items()})
            self._sqn = updated
        return result

    def check_access(self, node: _Node, ins: int, am_bit: int) -> None:
        rules = self._rules(node)
        if rules is None:
            return
        df = next(node.ancestors())

        def pin_ok(reference: int) -> bool:
            return self.pins.satisfied(reference, df)

        for rule in rules:
            try:
                if rule.covers(ins, am_bit) and any(_condition_met(t, v, pin_ok) for t, v in rule.conditions):
                    return
            except DecodeError:  # a malformed condition grants nothing
                continue
        raise _Sw(SW_SECURITY_NOT_SATISFIED)

    def _rules(self, node: _Node) -> list[_Rule] | None:
        reference = _arr_reference(node)
        if reference is None:
            return None
        fid, number = reference
        for directory in node.ancestors():
            arr = directory.children.get(fid)
            if arr is not None and arr.record_length:
                if not 1 <= number <= arr.record_count:
                    return []
                try:
                    return _parse_rules(arr.record(number))
                except DecodeError:
                    return []
        return []

    def fcp(self, node: _Node) -> bytes:
        """The FCP template of TS 102 221 11.1.1.3 ('62')."""
        entry = node.entry
        reference = _arr_reference(node)
        security = (
            b""
            if reference is None
            else encode_tlv(0x8B, bytes.fromhex(reference[0]) + bytes([reference[1]]))
        )
        if node.is_dir:
            body = encode_tlv(0x82, (entry.descriptor or _DF_DESCRIPTOR)[:2])
            body += (
                encode_tlv(0x84, entry.aid)
                if node.is_adf and entry.aid
                else encode_tlv(0x83, bytes.fromhex(node.fid or "3F00"))
            )
            body += encode_tlv(0x8A, entry.lcsi) + security + self._pin_status_template(node)
            return encode_tlv(0x62, body)
        body = encode_tlv(0x82, _ef_descriptor(node)) + encode_tlv(0x83, bytes.fromhex(entry.fid or "0000"))
        body += encode_tlv(0x8A, entry.lcsi) + security
        if node.structure != BER_TLV:
            body += encode_tlv(0x80, len(node.data).to_bytes(2, "big"))
        body += encode_tlv(0x88, b"" if entry.sfi is None else bytes([entry.sfi << 3]))
        return encode_tlv(0x62, body)

    def _pin_status_template(self, df: _Node) -> bytes:
        """'C6': PS_DO (b8 of its first byte for the first key reference: 1 = enabled), then the
        key references SAIP lists in pinStatusTemplateDO."""
        references = df.entry.pin_status_template or b""
        ps_do = bytearray((len(references) + 7) // 8 or 1)
        for index, reference in enumerate(references):
            pin = self.pins.lookup(reference, df)
            if pin is not None and pin.enabled:
                ps_do[index // 8] |= 0x80 >> index % 8
        return encode_tlv(
            0xC6, encode_tlv(0x90, bytes(ps_do)) + b"".join(encode_tlv(0x83, bytes([r])) for r in references)
        )


def _ef_descriptor(node: _Node) -> bytes:
    given = node.entry.descriptor
    first = given[0] if given else 0x40 | _EF_TYPE.get(node.structure, 0x01)  # shareable
    if node.structure in (LINEAR_FIXED, CYCLIC):
        return (
            bytes([first, 0x21]) + node.record_length.to_bytes(2, "big") + bytes([node.record_count & 0xFF])
        )
    return bytes([first, 0x21])

"""Personalization: a new profile package from a template and one subscriber's values.

Changed, and nothing else:
- ICCID: ProfileHeader ``iccid`` (plain BCD, as the TS.48 packages code it) and EF.ICCID
  (nibble-swapped BCD, ``rsp.ids.iccid_to_bcd``), both with the Luhn check digit verified;
- IMSI: EF.IMSI of the (first) USIM, TS 31.102 coding; with ``mnc_length`` also EF.AD byte 4;
- Ki and OPc in every akaParameter that carries an algoParameter (USIM and ISIM share the
  subscriber key in TS.48); ``op`` is turned into OPc (TS 35.206); switching to Milenage drops
  explicit rotation/XOR constants so the TS 35.206 defaults apply, and the header's mandatory
  services follow the algorithms in use;
- PIN1 (pinAppl1), PUK1 (pukAppl1), ADM1 (adm1): 8-byte values, ASCII digits padded with 'FF'
  (ETSI TS 102 221 section 9); ADM1 may also be 16 hex digits (8 raw bytes).

Everything else passes through byte for byte. The result is decoded again and each value read
back, so a template that overrides a file later (genericFileManagement) is refused, not mangled.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import NamedTuple

from rsp import ids
from rsp.aka import compute_opc
from rsp.errors import DecodeError
from rsp.saip import ProfilePackage, schema
from rsp.saip.der import Node, context_tag, encode_uint, tag_number
from rsp.saip.efs import EF_IMSI_SIZE, ad_with_mnc_length, encode_imsi
from rsp.saip.elements import (
    ALGO_CONFIGURATION,
    ALGO_PARAMETER,
    PIN_CODES,
    PIN_CONFIG,
    ProfileElement,
    iccid_to_header_bytes,
    parse_pins,
)

KEY_LENGTHS = {"milenage": (16,), "usim-test-algorithm": (16,), "tuak": (16, 32)}
OPC_LENGTHS = {"milenage": 16, "usim-test-algorithm": 16, "tuak": 32}
ALGORITHM_SERVICES = ("milenage", "tuak128", "tuak256", "usim-test-algorithm")
PIN1, ADM1, PUK1 = 1, 10, 1  # PINKeyReferenceValue pinAppl1 / adm1, PUKKeyReferenceValue pukAppl1


class PersonalizationError(DecodeError):
    """A personalization input (or template) that breaks a rule; ``field`` names the input."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field


def personalize(
    template: bytes | ProfilePackage,
    *,
    iccid: str,
    imsi: str,
    ki: bytes,
    opc: bytes | None = None,
    op: bytes | None = None,
    mnc_length: int | None = None,
    pin1: str | None = None,
    puk1: str | None = None,
    adm1: str | None = None,
    algorithm: str | None = None,
) -> bytes:
    """The DER of a new profile package: ``template`` with this subscriber's values."""
    package = template if isinstance(template, ProfilePackage) else ProfilePackage.decode(template)
    _check_iccid(iccid)
    effective_mnc = _check_imsi(package, imsi, mnc_length)
    algorithms = _target_algorithms(package, algorithm)
    opc = _check_keys(algorithms, ki, opc, op)
    codes = {
        "pin1": (PIN1, _code("pin1", pin1, 4, 8)),
        "adm1": (ADM1, _adm_code(adm1)),
        "puk1": (PUK1, _code("puk1", puk1, 8, 8)),
    }
    changes = _Changes(package)
    changes.header(iccid, algorithm, ki)
    changes.file("mf", "ef-iccid", ids.iccid_to_bcd(iccid))
    _set_imsi(changes, package, imsi, mnc_length)
    changes.aka(ki, opc, algorithm)
    changes.codes(codes)
    result = package.replace(changes.elements)
    _read_back(result, iccid, imsi, effective_mnc, ki, opc)
    return result.encode()


class PersonalizedProfile(NamedTuple):
    iccid: str
    imsi: str
    ki: bytes
    opc: bytes | None
    der: bytes


def personalize_batch(
    template: bytes | ProfilePackage,
    *,
    iccid_start: str,
    imsi_start: str,
    count: int,
    key_source: Callable[[int], bytes] = os.urandom,
    op: bytes | None = None,
    algorithm: str | None = None,
    mnc_length: int | None = None,
    pin1: str | None = None,
    puk1: str | None = None,
    adm1: str | None = None,
) -> Iterator[PersonalizedProfile]:
    """``count`` profiles with consecutive ICCIDs (Luhn digit recomputed) and IMSIs.

    Ki (and OPc, unless derived from ``op`` or the algorithm ignores it) come from
    ``key_source(n)``, n bytes each. Ranges are checked before the first profile is made.
    """
    package = template if isinstance(template, ProfilePackage) else ProfilePackage.decode(template)
    if count < 1:
        raise PersonalizationError("count", f"must be at least 1, got {count}")
    iccids = iccid_range(iccid_start, count)
    imsis = _imsi_range(package, imsi_start, count, mnc_length)
    names = set(_target_algorithms(package, algorithm))
    wants_opc = op is None and bool(names & {"milenage", "tuak"})

    def generate() -> Iterator[PersonalizedProfile]:
        for iccid, imsi in zip(iccids, imsis, strict=True):
            ki = key_source(16)
            opc = key_source(32 if "tuak" in names else 16) if wants_opc else None
            der = personalize(
                package,
                iccid=iccid,
                imsi=imsi,
                ki=ki,
                opc=opc,
                op=op,
                mnc_length=mnc_length,
                pin1=pin1,
                puk1=puk1,
                adm1=adm1,
                algorithm=algorithm,
            )
            yield PersonalizedProfile(iccid, imsi, ki, opc if op is None else compute_opc(ki, op), der)

    return generate()


# --- input rules -------------------------------------------------------------------------------


def _check_iccid(iccid: str) -> None:
    try:
        ids.validate_iccid(iccid)
    except DecodeError as exc:
        raise PersonalizationError("iccid", str(exc)) from None


def _check_imsi(package: ProfilePackage, imsi: str, mnc_length: int | None) -> int | None:
    """Validate the IMSI against the MNC length in use; return that length."""
    try:
        encode_imsi(imsi)
    except DecodeError as exc:
        raise PersonalizationError("imsi", str(exc)) from None
    if mnc_length is not None and mnc_length not in (2, 3):
        raise PersonalizationError("mnc_length", f"must be 2 or 3, got {mnc_length}")
    if package.usim_aid is None:
        raise PersonalizationError("template", "has no USIM, so no EF.IMSI to personalize")
    effective = mnc_length if mnc_length is not None else package.mnc_length
    if mnc_length is not None and package.usim_file("6FAD") is None:
        raise PersonalizationError("mnc_length", "the template's USIM has no EF.AD to hold the MNC length")
    if effective is not None and len(imsi) < 3 + effective + 1:
        raise PersonalizationError(
            "imsi", f"{imsi} is too short for a 3-digit MCC, a {effective}-digit MNC and an MSIN"
        )
    return effective


def _target_algorithms(package: ProfilePackage, algorithm: str | None) -> list[str]:
    """The algorithm of each akaParameter with an algoParameter after personalization."""
    if algorithm is not None and algorithm not in KEY_LENGTHS:
        raise PersonalizationError("algorithm", f"must be one of {', '.join(KEY_LENGTHS)}, got {algorithm!r}")
    current = [aka.algorithm for aka in package.aka_parameters if aka.algorithm is not None]
    if not current:
        raise PersonalizationError("template", "has no akaParameter with an algoParameter to hold Ki")
    targets = [algorithm or name for name in current]
    unknown = sorted({name for name in targets if name not in KEY_LENGTHS})
    if unknown:
        raise PersonalizationError(
            "algorithm", f"template uses {', '.join(unknown)}; pass algorithm= to replace it"
        )
    return targets


def _check_keys(algorithms: list[str], ki: bytes, opc: bytes | None, op: bytes | None) -> bytes | None:
    """Validate Ki/OPc/OP for every target algorithm; return the OPc to store (None: keep)."""
    if not isinstance(ki, bytes | bytearray):
        raise PersonalizationError("ki", f"must be bytes, got {type(ki).__name__}")
    if opc is not None and op is not None:
        raise PersonalizationError("op", "give OPc or OP, not both")
    for name in set(algorithms):
        if len(ki) not in KEY_LENGTHS[name]:
            lengths = " or ".join(str(n) for n in KEY_LENGTHS[name])
            raise PersonalizationError("ki", f"{name} needs a {lengths}-byte key, got {len(ki)} bytes")
        if op is not None and name != "milenage":
            raise PersonalizationError("op", f"OP applies to milenage only, not {name}; give opc")
        if opc is not None and len(opc) != OPC_LENGTHS[name]:
            raise PersonalizationError(
                "opc", f"{name} needs a {OPC_LENGTHS[name]}-byte OPc, got {len(opc)} bytes"
            )
        if name in ("milenage", "tuak") and opc is None and op is None:
            raise PersonalizationError("opc", f"{name} needs the OPc (or OP) that goes with the new Ki")
    if op is not None:
        if len(op) != 16:
            raise PersonalizationError("op", f"must be 16 bytes, got {len(op)}")
        return compute_opc(bytes(ki), bytes(op))
    return None if opc is None else bytes(opc)


def _code(field: str, value: str | None, shortest: int, longest: int) -> bytes | None:
    """A PIN/PUK as SAIP stores it: ASCII digits padded to 8 bytes with 'FF'."""
    if value is None:
        return None
    if not isinstance(value, str) or not value.isdigit() or not value.isascii():
        raise PersonalizationError(field, f"must be decimal digits, got {value!r}")
    if not shortest <= len(value) <= longest:
        size = f"{shortest}" if shortest == longest else f"{shortest} to {longest}"
        raise PersonalizationError(field, f"must be {size} digits, got {len(value)}")
    return value.encode("ascii").ljust(8, b"\xff")


def _adm_code(value: str | None) -> bytes | None:
    if value is not None and len(value) == 16:
        try:
            return bytes.fromhex(value)
        except ValueError:
            raise PersonalizationError("adm1", f"16 characters must be hex digits, got {value!r}") from None
    return _code("adm1", value, 4, 8)


def _set_imsi(changes: _Changes, package: ProfilePackage, imsi: str, mnc_length: int | None) -> None:
    ef_imsi = package.usim_file("6F07")
    if ef_imsi is not None and ef_imsi.size is not None and ef_imsi.size < EF_IMSI_SIZE:
        raise PersonalizationError("template", f"EF.IMSI is {ef_imsi.size} bytes, needs {EF_IMSI_SIZE}")
    changes.file("usim", "ef-imsi", encode_imsi(imsi))
    if mnc_length is not None:
        ef_ad = package.usim_file("6FAD")
        assert ef_ad is not None  # checked by _check_imsi
        changes.file("usim", "ef-ad", ad_with_mnc_length(ef_ad.content, mnc_length))


def iccid_range(start: str, count: int) -> list[str]:
    """``count`` consecutive ICCIDs from ``start`` (itself valid), each with its Luhn digit."""
    _check_iccid(start)
    body = start[:-1]
    last = str(int(body) + count - 1).zfill(len(body))
    if len(last) > len(body) or not last.startswith("89"):
        raise PersonalizationError(
            "count", f"{count} ICCIDs from {start} leave the 89 range of {len(body)} digits"
        )
    bodies = [str(int(body) + i).zfill(len(body)) for i in range(count)]
    return [b + ids.luhn_check_digit(b) for b in bodies]


def _imsi_range(package: ProfilePackage, start: str, count: int, mnc_length: int | None) -> list[str]:
    effective = _check_imsi(package, start, mnc_length) or 2
    imsis = [str(int(start) + i).zfill(len(start)) for i in range(count)]
    prefix = 3 + effective
    if len(imsis[-1]) > len(start) or imsis[-1][:prefix] != start[:prefix]:
        raise PersonalizationError("count", f"{count} IMSIs from {start} leave MCC+MNC {start[:prefix]}")
    return imsis


# --- editing element trees ---------------------------------------------------------------------


def _set_primitive(node: Node, tag: int, value: bytes) -> None:
    """Set component ``tag`` (context-tagged, so its number is its position) of a SEQUENCE."""
    assert node.children is not None
    for child in node.children:
        if child.tag == tag:
            child.value = value
            return
    _insert(node, Node(tag, value))


def _insert(node: Node, new: Node) -> None:
    assert node.children is not None
    position = next(
        (i for i, child in enumerate(node.children) if tag_number(child.tag) > tag_number(new.tag)),
        len(node.children),
    )
    node.children.insert(position, new)


def _remove(node: Node, tag: int) -> None:
    assert node.children is not None
    node.children[:] = [child for child in node.children if child.tag != tag]


class _Changes:
    """Edited copies of the template's element trees, by element index."""

    def __init__(self, package: ProfilePackage):
        self.package = package
        self.trees: dict[int, Node] = {}

    @property
    def elements(self) -> dict[int, ProfileElement]:
        return {i: ProfileElement.from_node(tree) for i, tree in self.trees.items()}

    def tree(self, index: int) -> Node:
        if index not in self.trees:
            self.trees[index] = self.package.elements[index].tree()
        return self.trees[index]

    def first(self, kind: str) -> int:
        index = next((i for i, pe in enumerate(self.package.elements) if pe.kind == kind), None)
        if index is None:
            raise PersonalizationError("template", f"has no {kind} PE")
        return index

    def header(self, iccid: str, algorithm: str | None, ki: bytes) -> None:
        tree = self.tree(0)
        _set_primitive(tree, context_tag(3), iccid_to_header_bytes(iccid))
        if algorithm is not None:
            self._services(tree, algorithm, ki)

    def _services(self, header: Node, algorithm: str, ki: bytes) -> None:
        """Mandatory services name exactly the AKA algorithms the profile now uses."""
        services = header.find(context_tag(5, True))
        if services is None:
            return
        used = {algorithm if algorithm != "tuak" else ("tuak256" if len(ki) == 32 else "tuak128")}
        for name in ALGORITHM_SERVICES:
            tag = context_tag(schema.SERVICES.index(name))
            if name in used and services.find(tag) is None:
                _insert(services, Node(tag, b""))
            elif name not in used:
                _remove(services, tag)

    def file(self, kind: str, field: str, content: bytes) -> None:
        """Make the PE's File ``field`` end with one fillFileContent holding the whole content."""
        tree = self.tree(self.first(kind))
        number = schema.TEMPLATE_FIELDS[kind].index(field)
        file = tree.find(context_tag(number, True))
        if file is None:
            file = Node(context_tag(number, True), children=[])
            _insert(tree, file)
        assert file.children is not None
        file.children[:] = [
            item for item in file.children if item.tag not in (context_tag(2), context_tag(3))
        ]
        file.children.append(Node(context_tag(3), content))

    def aka(self, ki: bytes, opc: bytes | None, algorithm: str | None) -> None:
        for index, pe in enumerate(self.package.elements):
            if pe.kind != "akaParameter":
                continue
            config = next(node for node in pe.components if node.tag == ALGO_CONFIGURATION)
            if config.find(ALGO_PARAMETER) is None:
                continue  # mappingParameter: the keys of another NAA
            params = self.tree(index).find(ALGO_CONFIGURATION).find(ALGO_PARAMETER)
            self._algo_parameter(params, bytes(ki), opc, algorithm)

    @staticmethod
    def _algo_parameter(params: Node, ki: bytes, opc: bytes | None, algorithm: str | None) -> None:
        if algorithm is not None:
            old = params.find(0x80)
            new_id = encode_uint(schema.ALGORITHM_IDS[algorithm])
            if algorithm == "milenage" and (old is None or old.value != new_id):
                _remove(params, 0x84)  # the template's constants were not Milenage's:
                _remove(params, 0x85)  # the DEFAULTs (TS 35.206) apply
            _set_primitive(params, 0x80, new_id)
        _set_primitive(params, 0x82, ki)
        if opc is not None:
            _set_primitive(params, 0x83, opc)

    def codes(self, codes: dict[str, tuple[int, bytes | None]]) -> None:
        for field, (reference, value) in codes.items():
            if value is None:
                continue
            found = self._pin(reference, value) if field != "puk1" else self._puk(reference, value)
            if not found:
                kind = "PIN" if field != "puk1" else "PUK"
                raise PersonalizationError(
                    field, f"the template defines no {kind} with key reference {reference}"
                )

    def _pin(self, reference: int, value: bytes) -> bool:
        found = False
        for index, pe in enumerate(self.package.elements):
            if pe.kind != "pinCodes" or not any(
                p.key_reference == reference for p in parse_pins(pe, pe.kind)
            ):
                continue
            configs = self.tree(index).find(PIN_CODES).find(PIN_CONFIG)
            found |= _set_code(configs, reference, value)
        return found

    def _puk(self, reference: int, value: bytes) -> bool:
        index = self.first("pukCodes")
        return _set_code(self.tree(index).find(PIN_CODES), reference, value)


def _set_code(configs: Node | None, reference: int, value: bytes) -> bool:
    """Set the value (tag 81) of the PIN/PUK configuration with ``reference`` (tag 80)."""
    found = False
    for entry in configs.children if configs is not None and configs.children else ():
        ref = entry.find(0x80)
        if ref is not None and int.from_bytes(ref.value, "big") == reference:
            _set_primitive(entry, 0x81, value)
            found = True
    return found


def _read_back(
    result: ProfilePackage, iccid: str, imsi: str, mnc: int | None, ki: bytes, opc: bytes | None
) -> None:
    """Decode-side proof that each value landed where a card will read it."""
    checks = [
        ("iccid", result.iccid == iccid and result.iccid_ef == iccid, "header and EF.ICCID"),
        ("imsi", result.imsi == imsi, "EF.IMSI"),
        ("mnc_length", mnc is None or result.mnc_length == mnc, "EF.AD"),
        ("ki", all(a.key == ki for a in result.aka_parameters if a.key is not None), "akaParameter"),
        (
            "opc",
            opc is None or all(a.opc == opc for a in result.aka_parameters if a.opc is not None),
            "akaParameter",
        ),
    ]
    for field, ok, where in checks:
        if not ok:
            raise PersonalizationError(
                field, f"the template overrides {where} later (genericFileManagement?)"
            )

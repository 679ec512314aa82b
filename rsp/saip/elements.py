"""Profile elements (PEs) and the typed views kinsim reads from them.

A ``ProfileElement`` is the DER of one PEDefinitions ``ProfileElement`` plus its parsed tree.
Views (``ProfileHeader``, ``AkaParameter``, ``PinCode``, ``PukCode``) are read from the tree;
nothing here re-encodes an element unless personalization replaces it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from rsp.errors import DecodeError
from rsp.saip import schema
from rsp.saip.der import (
    Node,
    context_tag,
    decode_oid,
    decode_uint,
    decode_utf8,
    is_constructed,
    parse_node,
    tag_class,
    tag_number,
)

# Tags shared by every element.
PE_HEADER = context_tag(0, constructed=True)  # PEHeader (and ProfileHeader.major-version is 0x80)
TEMPLATE_ID = context_tag(1)  # templateID in every template-based file system PE
APPLICATION_AID = 0x4F  # [APPLICATION 15] ApplicationIdentifier


def _kind_of(tag: int) -> str:
    if tag_class(tag) != 2 or not is_constructed(tag):
        raise DecodeError(f"tag {tag:X} is not a ProfileElement (expected a constructed context tag)")
    number = tag_number(tag)
    if number >= len(schema.PE_KINDS):
        raise DecodeError(f"unknown ProfileElement alternative [{number}] (tag {tag:X})")
    return schema.PE_KINDS[number]


def child(node: Node, tag: int, what: str) -> Node:
    """The mandatory component ``tag`` of ``node``."""
    found = optional(node, tag, what)
    if found is None:
        raise DecodeError(f"{what}: mandatory component {tag:X} missing")
    return found


def optional(node: Node, tag: int, what: str) -> Node | None:
    if node.children is None:
        raise DecodeError(f"{what}: expected a constructed value, got primitive tag {node.tag:X}")
    return node.find(tag)


def primitive(node: Node, what: str) -> bytes:
    if node.children is not None:
        raise DecodeError(f"{what}: expected a primitive value, got constructed tag {node.tag:X}")
    return node.value


def octets(node: Node, tag: int, what: str, size: int | None = None) -> bytes:
    value = primitive(child(node, tag, what), what)
    if size is not None and len(value) != size:
        raise DecodeError(f"{what}: must be {size} bytes, got {len(value)}")
    return value


def optional_octets(node: Node, tag: int, what: str, default: bytes | None = None) -> bytes | None:
    found = optional(node, tag, what)
    return default if found is None else primitive(found, what)


def uint(node: Node, tag: int, what: str, default: int | None = None) -> int:
    found = optional(node, tag, what)
    if found is None:
        if default is None:
            raise DecodeError(f"{what}: mandatory component {tag:X} missing")
        return default
    return decode_uint(primitive(found, what), what)


def constructed(node: Node, what: str) -> list[Node]:
    if node.children is None:
        raise DecodeError(f"{what}: expected a constructed value, got primitive tag {node.tag:X}")
    return node.children


@dataclass(frozen=True, eq=False)
class ProfileElement:
    """One PE: ``raw`` is its DER exactly as received (or as re-encoded after a change)."""

    raw: bytes
    kind: str
    _node: Node = field(repr=False)

    @classmethod
    def decode(cls, raw: bytes) -> ProfileElement:
        return cls.from_node(parse_node(raw), raw)

    @classmethod
    def from_node(cls, node: Node, raw: bytes | None = None) -> ProfileElement:
        kind = _kind_of(node.tag)
        constructed(node, kind)
        element = cls(node.encode() if raw is None else raw, kind, node)
        element.identification  # noqa: B018 - refuse a PE without its PEHeader now
        element.template_id  # noqa: B018 - and a template PE whose templateID is no OID
        return element

    def encode(self) -> bytes:
        return self.raw

    def tree(self) -> Node:
        """A private copy of the parsed tree, to edit and turn back into an element."""
        return self._node.copy()

    @property
    def components(self) -> list[Node]:
        return list(self._node.children or ())

    @property
    def identification(self) -> int | None:
        """PEHeader.identification (the header PE has no PEHeader)."""
        if self.kind == "header":
            return None
        return uint(child(self._node, PE_HEADER, self.kind), context_tag(1), f"{self.kind} PEHeader")

    @property
    def mandated(self) -> bool:
        if self.kind == "header":
            return True
        return optional(child(self._node, PE_HEADER, self.kind), context_tag(0), self.kind) is not None

    @property
    def template_id(self) -> str | None:
        """templateID of a template-based file system PE (e.g. '2.23.143.1.2.4' for USIM)."""
        if self.kind not in schema.TEMPLATE_FIELDS:
            return None
        value = octets(self._node, TEMPLATE_ID, f"{self.kind} templateID")
        return decode_oid(value, f"{self.kind} templateID")

    def file_fields(self) -> list[tuple[str, Node]]:
        """(field name, File node) of a template-based PE, in encoded order."""
        names = schema.TEMPLATE_FIELDS.get(self.kind)
        if names is None:
            return []
        out = []
        for node in self._node.children or ():
            number = tag_number(node.tag)
            if number < 2:
                continue
            name = names[number] if number < len(names) else f"{self.kind}[{number}]"
            out.append((name, node))
        return out

    def __repr__(self) -> str:
        return f"ProfileElement({self.kind}, {len(self.raw)} bytes)"


# --- ProfileHeader -----------------------------------------------------------------------------


@dataclass(frozen=True)
class ProfileHeader:
    major_version: int
    minor_version: int
    profile_type: str | None
    iccid_bytes: bytes
    mandatory_services: tuple[str, ...]
    mandatory_gfste: tuple[str, ...]
    mandatory_aids: tuple[tuple[bytes, bytes], ...]

    @property
    def iccid(self) -> str:
        """ICCID digits; the header holds them as plain (unswapped) BCD, padded with 'F'."""
        return iccid_from_header_bytes(self.iccid_bytes)


def iccid_from_header_bytes(value: bytes) -> str:
    text = value.hex().rstrip("f")
    if not text.isdigit():
        raise DecodeError(f"ProfileHeader iccid {value.hex().upper()} is not BCD digits")
    return text


def iccid_to_header_bytes(iccid: str) -> bytes:
    return bytes.fromhex(iccid.ljust(20, "f"))


def parse_header(pe: ProfileElement) -> ProfileHeader:
    node, what = pe._node, "ProfileHeader"
    services_node = child(node, context_tag(5, True), what)
    services = []
    for item in constructed(services_node, "eUICC-Mandatory-services"):
        number = tag_number(item.tag)
        services.append(schema.SERVICES[number] if number < len(schema.SERVICES) else f"service[{number}]")
    gfste = tuple(
        decode_oid(primitive(oid, what), "eUICC-Mandatory-GFSTEList")
        for oid in constructed(child(node, context_tag(6, True), what), what)
    )
    aids_node = optional(node, context_tag(8, True), what)
    aids = []
    for entry in constructed(aids_node, what) if aids_node is not None else ():
        aids.append(
            (octets(entry, 0x80, "eUICC-Mandatory-AIDs"), octets(entry, 0x81, "eUICC-Mandatory-AIDs", 2))
        )
    profile_type = optional_octets(node, context_tag(2), what)
    iccid_bytes = octets(node, context_tag(3), "ProfileHeader iccid", 10)
    iccid_from_header_bytes(iccid_bytes)  # refuse a non-BCD ICCID at decode time
    return ProfileHeader(
        major_version=uint(node, context_tag(0), "ProfileHeader major-version"),
        minor_version=uint(node, context_tag(1), "ProfileHeader minor-version"),
        profile_type=None if profile_type is None else decode_utf8(profile_type, "profileType"),
        iccid_bytes=iccid_bytes,
        mandatory_services=tuple(services),
        mandatory_gfste=gfste,
        mandatory_aids=tuple(aids),
    )


# --- PE-AKAParameter ---------------------------------------------------------------------------

ALGO_CONFIGURATION = context_tag(1, True)
MAPPING_PARAMETER = context_tag(0, True)
ALGO_PARAMETER = context_tag(1, True)


@dataclass(frozen=True)
class AkaParameter:
    """PE-AKAParameter: the network authentication key set of one NAA (USIM, ISIM, ...)."""

    identification: int | None
    application: str | None  # kind of the NAA PE it follows: "usim", "isim", "csim"
    application_aid: bytes | None
    algorithm: str | None  # "milenage" | "tuak" | "usim-test-algorithm" | "algorithm-N"; None = mapped
    algorithm_id: int | None
    algorithm_options: bytes | None
    key: bytes | None  # Ki
    opc: bytes | None  # OPc (Milenage), TOPc (TUAK); ignored by the test algorithm
    rotation_constants: bytes | None
    xoring_constants: bytes | None
    auth_counter_max: bytes | None
    number_of_keccak: int | None
    mapping_options: bytes | None  # set when the keys are shared with another NAA
    mapping_source: bytes | None
    sqn_options: bytes
    sqn_delta: bytes
    sqn_age_limit: bytes
    sqn_init: tuple[bytes, ...] | None  # None: all 32 entries at their default 0

    @property
    def ki(self) -> bytes | None:
        """The subscriber key K (PEDefinitions calls the field ``key``)."""
        return self.key


def parse_aka(pe: ProfileElement, application: str | None, aid: bytes | None) -> AkaParameter:
    node, what = pe._node, "akaParameter"
    config = constructed(child(node, ALGO_CONFIGURATION, what), what)
    if len(config) != 1:
        raise DecodeError(f"{what}: algoConfiguration must hold one alternative, found {len(config)}")
    chosen = config[0]
    values: dict = dict.fromkeys(
        (
            "algorithm",
            "algorithm_id",
            "algorithm_options",
            "key",
            "opc",
            "rotation_constants",
            "xoring_constants",
            "auth_counter_max",
            "number_of_keccak",
            "mapping_options",
            "mapping_source",
        ),
    )
    if chosen.tag == ALGO_PARAMETER:
        values.update(_parse_algo_parameter(chosen))
    elif chosen.tag == MAPPING_PARAMETER:
        values["mapping_options"] = octets(chosen, 0x80, "mappingParameter mappingOptions", 1)
        values["mapping_source"] = octets(chosen, 0x81, "mappingParameter mappingSource")
    else:
        raise DecodeError(f"{what}: unknown algoConfiguration alternative {chosen.tag:X}")
    sqn_init_node = optional(node, context_tag(5, True), what)
    sqn_init = None
    if sqn_init_node is not None:
        sqn_init = tuple(primitive(item, "sqnInit") for item in constructed(sqn_init_node, "sqnInit"))
        if len(sqn_init) != 32 or any(len(item) != 6 for item in sqn_init):
            raise DecodeError("akaParameter sqnInit must be 32 values of 6 bytes")
    return AkaParameter(
        identification=pe.identification,
        application=application,
        application_aid=aid,
        sqn_options=_sized(node, 2, 1, schema.DEFAULT_SQN_OPTIONS, "sqnOptions"),
        sqn_delta=_sized(node, 3, 6, schema.DEFAULT_SQN_DELTA, "sqnDelta"),
        sqn_age_limit=_sized(node, 4, 6, schema.DEFAULT_SQN_AGE_LIMIT, "sqnAgeLimit"),
        sqn_init=sqn_init,
        **values,
    )


def _sized(node: Node, number: int, size: int, default: bytes, what: str) -> bytes:
    value = optional_octets(node, context_tag(number), what, default)
    assert value is not None
    if len(value) != size:
        raise DecodeError(f"akaParameter {what} must be {size} bytes, got {len(value)}")
    return value


def _parse_algo_parameter(node: Node) -> dict:
    what = "algoParameter"
    algorithm_id = uint(node, 0x80, f"{what} algorithmID")
    return {
        "algorithm_id": algorithm_id,
        "algorithm": schema.ALGORITHMS.get(algorithm_id, f"algorithm-{algorithm_id}"),
        "algorithm_options": octets(node, 0x81, f"{what} algorithmOptions", 1),
        "key": octets(node, 0x82, f"{what} key"),
        "opc": octets(node, 0x83, f"{what} opc"),
        "rotation_constants": _algo_sized(
            node, 0x84, 5, schema.DEFAULT_ROTATION_CONSTANTS, "rotationConstants"
        ),
        "xoring_constants": _algo_sized(node, 0x85, 80, schema.DEFAULT_XORING_CONSTANTS, "xoringConstants"),
        "auth_counter_max": optional_octets(node, 0x86, f"{what} authCounterMax"),
        "number_of_keccak": uint(node, 0x87, f"{what} numberOfKeccak", default=1),
    }


def _algo_sized(node: Node, tag: int, size: int, default: bytes, what: str) -> bytes:
    value = optional_octets(node, tag, what, default)
    assert value is not None
    if len(value) != size:
        raise DecodeError(f"algoParameter {what} must be {size} bytes, got {len(value)}")
    return value


# --- PE-PINCodes / PE-PUKCodes -----------------------------------------------------------------

PIN_CODES = context_tag(1, True)  # pinCodes CHOICE wrapper in PE-PINCodes, pukCodes in PE-PUKCodes
PIN_CONFIG = context_tag(0, True)
SEQUENCE = 0x30


@dataclass(frozen=True)
class PinCode:
    key_reference: int
    name: str  # PINKeyReferenceValue name: "pinAppl1", "adm1", "secondPINAppl1", ...
    value: bytes  # 8 bytes: ASCII digits padded with 'FF' (ETSI TS 102 221 section 9)
    unblocking_reference: int | None
    attributes: int
    max_attempts: int  # high nibble of maxNumOfAttemps-retryNumLeft
    retries_left: int  # low nibble
    context: str  # the file system PE it applies to: "mf", "telecom", "usim", ...

    @property
    def digits(self) -> str:
        return code_text(self.value)


@dataclass(frozen=True)
class PukCode:
    key_reference: int
    name: str
    value: bytes
    max_attempts: int
    retries_left: int

    @property
    def digits(self) -> str:
        return code_text(self.value)


def code_text(value: bytes) -> str:
    """A PIN/PUK/ADM value as text: ASCII up to the 'FF' padding, else hex."""
    body = value.rstrip(b"\xff")
    return body.decode("ascii") if body.isascii() and body.isdigit() else value.hex().upper()


def parse_pins(pe: ProfileElement, context: str) -> list[PinCode]:
    what = "pinCodes"
    wrapper = constructed(child(pe._node, PIN_CODES, what), what)
    if len(wrapper) != 1:
        raise DecodeError(f"{what}: the pinCodes CHOICE must hold one alternative")
    if wrapper[0].tag == context_tag(1):
        return []  # filePath: PINs shared with another DF
    if wrapper[0].tag != PIN_CONFIG:
        raise DecodeError(f"{what}: unknown pinCodes alternative {wrapper[0].tag:X}")
    pins = []
    for entry in constructed(wrapper[0], what):
        reference = uint(entry, 0x80, "PINConfiguration keyReference")
        attempts = uint(
            entry, 0x84, "PINConfiguration maxNumOfAttemps-retryNumLeft", schema.DEFAULT_PIN_ATTEMPTS
        )
        unblock = optional(entry, 0x82, what)
        pins.append(
            PinCode(
                key_reference=reference,
                name=schema.PIN_REFERENCES.get(reference, f"pin-{reference}"),
                value=octets(entry, 0x81, "PINConfiguration pinValue", 8),
                unblocking_reference=None if unblock is None else decode_uint(primitive(unblock, what), what),
                attributes=uint(entry, 0x83, "PINConfiguration pinAttributes", schema.DEFAULT_PIN_ATTRIBUTES),
                max_attempts=attempts >> 4,
                retries_left=attempts & 0x0F,
                context=context,
            )
        )
    return pins


def parse_puks(pe: ProfileElement) -> list[PukCode]:
    what = "pukCodes"
    puks = []
    for entry in constructed(child(pe._node, PIN_CODES, what), what):
        reference = uint(entry, 0x80, "PUKConfiguration keyReference")
        attempts = uint(
            entry, 0x82, "PUKConfiguration maxNumOfAttemps-retryNumLeft", schema.DEFAULT_PUK_ATTEMPTS
        )
        puks.append(
            PukCode(
                key_reference=reference,
                name=schema.PUK_REFERENCES.get(reference, f"puk-{reference}"),
                value=octets(entry, 0x81, "PUKConfiguration pukValue", 8),
                max_attempts=attempts >> 4,
                retries_left=attempts & 0x0F,
            )
        )
    return puks


# --- applications, security domains, RFM: AIDs for the summary ---------------------------------


def instance_aids(pe: ProfileElement) -> list[bytes]:
    """instanceAID of each ApplicationInstance in a securityDomain or application PE."""
    node = pe._node
    if pe.kind == "securityDomain":
        instances = [child(node, context_tag(1, True), "securityDomain instance")]
    elif pe.kind == "application":
        found = optional(node, context_tag(2, True), "application instanceList")
        instances = constructed(found, "instanceList") if found is not None else []
    elif pe.kind == "rfm":
        return [octets(node, APPLICATION_AID, "rfm instanceAID")]
    else:
        return []
    out = []
    for instance in instances:
        aids = [
            primitive(item, "ApplicationInstance")
            for item in constructed(instance, "instance")
            if item.tag == APPLICATION_AID
        ]
        if len(aids) < 3:
            raise DecodeError(f"{pe.kind}: ApplicationInstance without an instanceAID")
        out.append(aids[2])  # applicationLoadPackageAID, classAID, instanceAID
    return out

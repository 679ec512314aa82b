"""SAIP profile packages (TCA eUICC Profile Package / PEDefinitions): decode, read, re-encode.

``ProfilePackage.decode(der)`` splits the package into its profile elements; each keeps its
received DER, so ``encode()`` returns the input byte for byte, whatever it holds. Typed views read
the elements kinsim uses: header (ICCID, mandatory services), akaParameter, pinCodes, pukCodes,
and the file system the template PEs and genericFileManagement PEs create (``files()``).
Personalization lives in ``rsp.saip.personalize``.
"""

from __future__ import annotations

from functools import cached_property
from typing import Any

from rsp.errors import DecodeError
from rsp.ids import iccid_from_bcd
from rsp.saip.efs import ad_mnc_length, decode_imsi
from rsp.saip.elements import (
    AkaParameter,
    PinCode,
    ProfileElement,
    ProfileHeader,
    PukCode,
    instance_aids,
    parse_aka,
    parse_header,
    parse_pins,
    parse_puks,
)
from rsp.saip.filesystem import MF_PATH, NAA_KINDS, FileEntry, adf_aid, build_files
from rsp.saip.schema import TEMPLATE_FIELDS
from rsp.tlv import read_tlv

__all__ = [
    "AkaParameter",
    "FileEntry",
    "PinCode",
    "ProfileElement",
    "ProfileHeader",
    "ProfilePackage",
    "PukCode",
]

EF_ICCID_PATH = (*MF_PATH, "2FE2")
EF_IMSI, EF_AD = "6F07", "6FAD"


class ProfilePackage:
    """An unprotected profile package: the ordered profile elements, header first, end last."""

    def __init__(self, elements: list[ProfileElement]):
        self.elements: tuple[ProfileElement, ...] = tuple(elements)
        _check_order(self.elements)
        self.header: ProfileHeader = parse_header(self.elements[0])
        self.aka_parameters: list[AkaParameter] = []
        self.pins: list[PinCode] = []
        self.puks: list[PukCode] = []
        self._read_views()

    @classmethod
    def decode(cls, data: bytes) -> ProfilePackage:
        """Decode a raw SAIP package (concatenated DER ProfileElements, no wrapper)."""
        data = bytes(data)
        if not data:
            raise DecodeError("empty profile package")
        elements, pos = [], 0
        while pos < len(data):
            start = pos
            try:
                tlv, pos = read_tlv(data, pos)
                elements.append(ProfileElement.decode(tlv.raw))
            except DecodeError as exc:
                raise DecodeError(f"profile element #{len(elements)} at offset {start}: {exc}") from None
        return cls(elements)

    def encode(self) -> bytes:
        return b"".join(pe.raw for pe in self.elements)

    def replace(self, changes: dict[int, ProfileElement]) -> ProfilePackage:
        """A new package with the elements at the given indexes replaced."""
        return ProfilePackage([changes.get(i, pe) for i, pe in enumerate(self.elements)])

    def _read_views(self) -> None:
        naa, naa_aid, context = None, None, "mf"
        for index, pe in enumerate(self.elements):
            try:
                if pe.kind in NAA_KINDS:
                    naa, naa_aid = pe.kind, adf_aid(pe)
                if pe.kind in TEMPLATE_FIELDS:
                    context = pe.kind
                if pe.kind == "akaParameter":
                    self.aka_parameters.append(parse_aka(pe, naa, naa_aid))
                elif pe.kind == "pinCodes":
                    self.pins += parse_pins(pe, context)
                elif pe.kind == "pukCodes":
                    self.puks += parse_puks(pe)
            except DecodeError as exc:
                raise DecodeError(f"profile element #{index} ({pe.kind}): {exc}") from None

    # --- header facts --------------------------------------------------------------------------

    @property
    def iccid(self) -> str:
        return self.header.iccid

    @property
    def profile_type(self) -> str | None:
        return self.header.profile_type

    @property
    def version(self) -> str:
        return f"{self.header.major_version}.{self.header.minor_version}"

    @property
    def mandatory_services(self) -> tuple[str, ...]:
        return self.header.mandatory_services

    @property
    def usim_aid(self) -> bytes | None:
        return self._naa_aid("usim")

    @property
    def isim_aid(self) -> bytes | None:
        return self._naa_aid("isim")

    def _naa_aid(self, kind: str) -> bytes | None:
        return next((adf_aid(pe) for pe in self.elements if pe.kind == kind), None)

    # --- file system ---------------------------------------------------------------------------

    @cached_property
    def _files(self) -> tuple[FileEntry, ...]:
        return tuple(build_files(list(self.elements)))

    def files(self) -> list[FileEntry]:
        """Every file the profile creates, in creation order (see rsp.saip.filesystem)."""
        return list(self._files)

    def file(self, *path: str) -> FileEntry | None:
        wanted = tuple(part.upper() for part in path)
        return next((f for f in self._files if f.path == wanted), None)

    def usim_file(self, fid: str) -> FileEntry | None:
        return self.file(self.usim_aid.hex(), fid) if self.usim_aid else None

    @property
    def iccid_ef(self) -> str | None:
        """The ICCID as EF.ICCID holds it (nibble-swapped BCD)."""
        ef = self.file(*EF_ICCID_PATH)
        return iccid_from_bcd(ef.content) if ef is not None and len(ef.content) == 10 else None

    @property
    def imsi(self) -> str | None:
        ef = self.usim_file(EF_IMSI)
        return decode_imsi(ef.content) if ef is not None else None

    @property
    def mnc_length(self) -> int | None:
        ef = self.usim_file(EF_AD)
        return ad_mnc_length(ef.content) if ef is not None else None

    # --- inspection ----------------------------------------------------------------------------

    def summary(self) -> dict[str, Any]:
        """Facts for people and scripts; secrets (Ki, OPc, PIN values) are left out."""
        return {
            "iccid": self.iccid,
            "iccidEf": self.iccid_ef,
            "imsi": self.imsi,
            "mncLength": self.mnc_length,
            "profileType": self.profile_type,
            "version": self.version,
            "size": sum(len(pe.raw) for pe in self.elements),
            "mandatoryServices": list(self.mandatory_services),
            "mandatoryGfste": list(self.header.mandatory_gfste),
            "usimAid": self.usim_aid,
            "isimAid": self.isim_aid,
            "aka": [_aka_summary(aka) for aka in self.aka_parameters],
            "pins": [
                {"reference": p.name, "context": p.context, "attempts": p.max_attempts} for p in self.pins
            ],
            "puks": [{"reference": p.name, "attempts": p.max_attempts} for p in self.puks],
            "securityDomains": [
                aid for pe in self.elements if pe.kind == "securityDomain" for aid in instance_aids(pe)
            ],
            "applications": [
                aid for pe in self.elements if pe.kind == "application" for aid in instance_aids(pe)
            ],
            "rfm": [aid for pe in self.elements if pe.kind == "rfm" for aid in instance_aids(pe)],
            "files": len(self._files),
            "elements": [
                {
                    "index": i,
                    "kind": pe.kind,
                    "identification": pe.identification,
                    "size": len(pe.raw),
                    "template": pe.template_id,
                }
                for i, pe in enumerate(self.elements)
            ],
        }


def _aka_summary(aka: AkaParameter) -> dict[str, Any]:
    return {
        "application": aka.application,
        "aid": aka.application_aid,
        "algorithm": aka.algorithm or "mapped",
        "keyLength": len(aka.key) if aka.key is not None else None,
        "mappingSource": aka.mapping_source,
    }


def _check_order(elements: tuple[ProfileElement, ...]) -> None:
    if not elements or elements[0].kind != "header":
        first = elements[0].kind if elements else "nothing"
        raise DecodeError(f"a profile package starts with a header PE, found {first}")
    if elements[-1].kind != "end":
        raise DecodeError(f"a profile package ends with an end PE, found {elements[-1].kind} (truncated?)")
    kinds = [pe.kind for pe in elements]
    if kinds.count("header") != 1 or kinds.count("end") != 1:
        raise DecodeError("a profile package holds exactly one header PE and one end PE")

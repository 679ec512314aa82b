"""File structure templates of the TCA eUICC Profile Package (Annex A), the parts kinsim needs.

A template-based PE (PE-MF, PE-USIM, ...) names its files by field; whatever the profile's Fcp
leaves out (file size, short file id, default content) comes from the template named by the PE's
templateID. Covered here: MF, DF.TELECOM (phonebook counters), ADF.USIM and its optional files,
DF.GSM-ACCESS, DF.5GS, DF.SAIP, ADF.ISIM. Not covered: CSIM/OPT-CSIM, EAP, CD, PHONEBOOK, IoT
templates and every file whose size the TS.48 profiles already give in their Fcp; such files
get their size from the profile or none (see ``ProfilePackage.files``).

Default content follows fill-pattern rules (ETSI TS 102 222 tag 'C1'): the pattern, then its last
byte repeated to the end of the file or record.
"""

from __future__ import annotations

from dataclasses import dataclass, field

TRANSPARENT, LINEAR_FIXED, CYCLIC, BER_TLV = "transparent", "linear-fixed", "cyclic", "ber-tlv"
MF, DF, ADF = "mf", "df", "adf"
DIRECTORIES = (MF, DF, ADF)


@dataclass(frozen=True)
class TemplateFile:
    fid: str | None
    structure: str
    size: int | None = None  # bytes; for record files number of records x record length
    record_length: int | None = None
    sfi: int | None = None
    default: bytes | None = None


@dataclass(frozen=True)
class Template:
    name: str
    created_by_default: bool  # files the PE omits are still created (unless doNotCreate)
    files: dict[str, TemplateFile] = field(default_factory=dict)


def _tr(fid: str, size: int | None, sfi: int | None = None, default: str | None = None) -> TemplateFile:
    return TemplateFile(
        fid, TRANSPARENT, size, None, sfi, None if default is None else bytes.fromhex(default)
    )


def _records(
    structure: str,
    fid: str,
    count: int | None,
    length: int | None,
    sfi: int | None = None,
    default: str | None = None,
) -> TemplateFile:
    size = count * length if count is not None and length is not None else None
    return TemplateFile(
        fid, structure, size, length, sfi, None if default is None else bytes.fromhex(default)
    )


def _lf(fid: str, count: int | None, length: int | None, sfi: int | None = None, default: str | None = None):
    return _records(LINEAR_FIXED, fid, count, length, sfi, default)


def _cy(fid: str, count: int | None, length: int | None, sfi: int | None = None, default: str | None = None):
    return _records(CYCLIC, fid, count, length, sfi, default)


def _dir(structure: str, fid: str | None) -> TemplateFile:
    return TemplateFile(fid, structure)


PREFIX = "2.23.143.1.2."

_MF_FILES = {
    "mf": _dir(MF, "3F00"),
    "ef-pl": _tr("2F05", 2, 0x05, "FF"),
    "ef-iccid": _tr("2FE2", 10, 0x02),
    "ef-dir": _lf("2F00", None, None, 0x1E),
    "ef-arr": _lf("2F06", None, None, 0x06),
    "ef-umpc": _tr("2F08", 5, 0x08),
}

_TELECOM_FILES = {
    "df-telecom": _dir(DF, "7F10"),
    "ef-arr": _lf("6F06", None, None),
    "ef-sume": _tr("6F54", 22),
    "df-graphics": _dir(DF, "5F50"),
    "df-phonebook": _dir(DF, "5F3A"),
    "ef-psc": _tr("4F22", 4, None, "00"),
    "ef-cc": _tr("4F23", 2, None, "00"),
    "ef-puid": _tr("4F24", 2, None, "00"),
    "df-multimedia": _dir(DF, "5F3B"),
    "df-mmss": _dir(DF, "5F3C"),
    "df-mcs": _dir(DF, "5F3D"),
    "df-v2x": _dir(DF, "5F3E"),
}


def _usim_files(ust_size: int) -> dict[str, TemplateFile]:
    return {
        "adf-usim": _dir(ADF, None),
        "ef-imsi": _tr("6F07", 9, 0x07),
        "ef-arr": _lf("6F06", None, None, 0x17),
        "ef-keys": _tr("6F08", 33, 0x08, "07FF"),
        "ef-keysPS": _tr("6F09", 33, 0x09, "07FF"),
        "ef-hpplmn": _tr("6F31", 1, 0x12, "0A"),
        "ef-ust": _tr("6F38", ust_size, 0x04),
        "ef-fdn": _lf("6F3B", 20, 26, None, "FF"),
        "ef-sms": _lf("6F3C", 10, 176, None, "00FF"),
        "ef-smsp": _lf("6F42", 1, 38, None, "FF"),
        "ef-smss": _tr("6F43", 2, None, "FF"),
        "ef-spn": _tr("6F46", 17),
        "ef-est": _tr("6F56", 1, 0x05),
        "ef-start-hfn": _tr("6F5B", 6, 0x0F, "F00000F00000"),
        "ef-threshold": _tr("6F5C", 3, 0x10, "FF"),
        "ef-psloci": _tr("6F73", 14, 0x0C, "FFFFFFFFFFFFFFFFFFFF0000FF01"),
        "ef-acc": _tr("6F78", 2, 0x06),
        "ef-fplmn": _tr("6F7B", 12, 0x0D, "FF"),
        "ef-loci": _tr("6F7E", 11, 0x0B, "FFFFFFFFFFFFFF0000FF01"),
        "ef-ad": _tr("6FAD", 4, 0x03, "00000002"),
        "ef-ecc": _lf("6FB7", 1, 4, 0x01),
        "ef-netpar": _tr("6FC4", 128, None, "FF"),
        "ef-epsloci": _tr("6FE3", 18, 0x1E, "FFFFFFFFFFFFFFFFFFFFFFFFFFFFFF000001"),
        "ef-epsnsc": _lf("6FE4", 1, 80, 0x18, "FF"),
    }


_OPT_USIM_FILES = {
    "ef-li": _tr("6F05", 6, 0x02, "FF"),
    "ef-acmax": _tr("6F37", 3, None, "00"),
    "ef-acm": _cy("6F39", 1, 3, None, "00"),
    "ef-gid1": _tr("6F3E", 8),
    "ef-gid2": _tr("6F3F", 8),
    "ef-msisdn": _lf("6F40", 1, 24, None, "FF"),
    "ef-puct": _tr("6F41", 5, None, "FFFFFF0000"),
    "ef-cbmid": _tr("6F48", 10, 0x0E, "FF"),
    "ef-plmnwact": _tr("6F60", 40, 0x0A, "FFFFFF0000" * 8),
    "ef-oplmnwact": _tr("6F61", 40, 0x11, "FFFFFF0000" * 8),
    "ef-hplmnwact": _tr("6F62", 5, 0x13, "FFFFFF0000"),
    "ef-dck": _tr("6F2C", 16, None, "FF"),
    "ef-ccp2": _lf("6F4F", 5, 15, 0x16, "FF"),
    "ef-ici": _cy("6F80", 20, 38, 0x14),
    "ef-oci": _cy("6F81", 20, 37, 0x15),
    "ef-vgcss": _tr("6FB2", 7),
    "ef-vbss": _tr("6FB4", 7),
    "ef-emlpp": _tr("6FB5", 2),
    "ef-aaem": _tr("6FB6", 1, None, "00"),
    "ef-hiddenkey": _tr("6FC3", 4, None, "FF"),
    "ef-pnn": _lf("6FC5", 10, 16, 0x19),
    "ef-opl": _lf("6FC6", 5, 8, 0x1A),
    "ef-spdi": _tr("6FCD", 17, 0x1B),
    "ef-ext8": _lf("6FCF", 10, 13, None, "00FF"),
    "ef-ehplmn": _tr("6FD9", 15, 0x1D, "FF"),
    "ef-ehplmnpi": _tr("6FDB", 1, None, "00"),
    "ef-lrplmnsi": _tr("6FDC", 1, None, "00"),
}

_GSM_ACCESS_FILES = {
    "df-gsm-access": _dir(DF, "5F3B"),
    "ef-kc": _tr("4F20", 9, 0x01, "FFFFFFFFFFFFFFFF07"),
    "ef-kcgprs": _tr("4F52", 9, 0x02, "FFFFFFFFFFFFFFFF07"),
    "ef-cpbcch": _tr("4F63", 10, None, "FF"),
    "ef-invscan": _tr("4F64", 1, None, "00"),
}


def _df_5gs_files(nsc_records: int, nsc_length: int) -> dict[str, TemplateFile]:
    loci_default = "FF" * 16 + "00000001"
    return {
        "df-df-5gs": _dir(DF, "5FC0"),
        "ef-5gs3gpploci": _tr("4F01", 20, 0x01, loci_default),
        "ef-5gsn3gpploci": _tr("4F02", 20, 0x02, loci_default),
        "ef-5gs3gppnsc": _lf("4F03", nsc_records, nsc_length, 0x03, "FF"),
        "ef-5gsn3gppnsc": _lf("4F04", nsc_records, nsc_length, 0x04, "FF"),
        "ef-5gauthkeys": _tr("4F05", 110, 0x05),
        "ef-uac-aic": _tr("4F06", 4, 0x06),
        "ef-suci-calc-info": _tr("4F07", None, 0x07, "FF"),
        "ef-opl5g": _lf("4F08", None, 10, 0x08, "FF"),
        "ef-supinai": _tr("4F09", None, 0x09),
        "ef-routing-indicator": _tr("4F0A", 4, 0x0A, "F0FFFFFF"),
        "ef-ursp": TemplateFile("4F0B", BER_TLV),
        "ef-tn3gppsnn": _tr("4F0C", 1, 0x0C, "00"),
    }


_ISIM_FILES = {
    "adf-isim": _dir(ADF, None),
    "ef-impi": _tr("6F02", None, 0x02),
    "ef-impu": _lf("6F04", 1, None, 0x04),
    "ef-domain": _tr("6F03", None, 0x05),
    "ef-ist": _tr("6F07", 14, 0x07),
    "ef-ad": _tr("6FAD", 3, 0x03, "00"),
    "ef-arr": _lf("6F06", None, None, 0x06),
}

TEMPLATES: dict[str, Template] = {
    PREFIX + "1": Template("MF", True, _MF_FILES),
    PREFIX + "3": Template("DF.TELECOM", False, _TELECOM_FILES),
    PREFIX + "3.2": Template("DF.TELECOM v2", False, _TELECOM_FILES),
    PREFIX + "4": Template("ADF.USIM", True, _usim_files(14)),
    PREFIX + "4.2": Template("ADF.USIM v2", True, _usim_files(17)),
    PREFIX + "5": Template("ADF.USIM optional", False, _OPT_USIM_FILES),
    PREFIX + "5.2": Template("ADF.USIM optional v2", False, _OPT_USIM_FILES),
    PREFIX + "5.3": Template("ADF.USIM optional v3", False, _OPT_USIM_FILES),
    PREFIX + "7": Template("DF.GSM-ACCESS", False, _GSM_ACCESS_FILES),
    PREFIX + "8": Template("ADF.ISIM", True, _ISIM_FILES),
    PREFIX + "13": Template("DF.5GS", False, _df_5gs_files(1, 57)),
    PREFIX + "13.2": Template("DF.5GS v2", False, _df_5gs_files(1, 57)),
    PREFIX + "13.3": Template("DF.5GS v3", False, _df_5gs_files(2, 62)),
    PREFIX + "14": Template(
        "DF.SAIP", False, {"df-df-saip": _dir(DF, "5FD0"), "ef-suci-calc-info-usim": _tr("4F01", None)}
    ),
}


def template_file(template_id: str | None, name: str) -> TemplateFile | None:
    template = TEMPLATES.get(template_id or "")
    return template.files.get(name) if template else None

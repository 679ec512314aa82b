"""The file system a profile package creates: each file's path, descriptor and initial content.

Rules applied (TCA eUICC Profile Package, sections on File and PE-GenericFileManagement):
- a template PE's Fcp overrides its template; missing values (size, SFI, default content) come
  from the template (``rsp.saip.templates``); "created by default" templates also create the
  files the PE omits, unless the PE marks them doNotCreate;
- content starts as the fillPattern (ETSI TS 102 222 'C1': pattern, then its last byte repeated)
  or repeatPattern ('C2'), per record for record files, else the template default, else 'FF';
- fillFileContent writes at a cursor that starts at 0 and follows each write; fillFileOffset
  moves the cursor forward; for record files the records are one continuous byte range;
- genericFileManagement: filePath (FIDs below the MF, an ADF by its temporary FID) selects a DF
  or an EF; createFCP creates a file in the current DF (a created DF becomes the current DF);
- a link file (linkPath) shows the content of the file it links to.

Paths: MF files start at '3F00' (('3F00', '2FE2') is EF.ICCID); files in an ADF start with the
ADF's AID in hex (('A0000000871002FF49FF0589', '6F07') is EF.IMSI of the TS.48 USIM).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from rsp.errors import DecodeError
from rsp.saip import templates as tpl
from rsp.saip.der import Node, context_tag, decode_uint
from rsp.saip.elements import ProfileElement, constructed, primitive
from rsp.saip.schema import TEMPLATE_FIELDS

MF_PATH = ("3F00",)
MAX_FILE_SIZE = 0xFFFF  # two-byte file sizes (ETSI TS 102 221 tag '80'); bounds memory on bad input

# Template PEs that add files to the last ADF of an NAA instead of creating their own root.
NAA_OF_PE = {
    "opt-usim": "usim", "gsm-access": "usim", "df-5gs": "usim", "df-saip": "usim", "df-snpn": "usim",
    "df-5gprose": "usim", "phonebook": "usim", "eap": "usim", "opt-isim": "isim", "opt-csim": "csim",
}  # fmt: skip
NAA_KINDS = ("usim", "isim", "csim")
UNSUPPORTED_KINDS = ("iot", "opt-iot")  # IoT minimal profile templates: not modelled


@dataclass(frozen=True)
class FileEntry:
    """One file of the profile as the eUICC would create it."""

    path: tuple[str, ...]
    structure: str  # "mf" | "df" | "adf" | "transparent" | "linear-fixed" | "cyclic" | "ber-tlv"
    fid: str | None  # for an ADF its temporary FID
    name: str | None  # the PE field ('ef-imsi'); None for files made by genericFileManagement
    aid: bytes | None  # the ADF's AID, for the ADF and every file inside it
    sfi: int | None
    size: int | None  # None: neither the profile nor a known template gives it
    record_length: int | None
    content: bytes
    descriptor: bytes | None  # Fcp fileDescriptor as given by the profile
    lcsi: bytes
    security_attributes: bytes | None
    pin_status_template: bytes | None
    link_target: tuple[str, ...] | None
    pe_index: int

    @property
    def is_directory(self) -> bool:
        return self.structure in tpl.DIRECTORIES

    @property
    def records(self) -> list[bytes]:
        if not self.record_length:
            raise ValueError(f"{'/'.join(self.path)} is not a record file")
        n = self.record_length
        return [self.content[i : i + n] for i in range(0, len(self.content), n)]


@dataclass
class _Fcp:
    descriptor: bytes | None = None
    fid: str | None = None
    df_name: bytes | None = None
    lcsi: bytes = b"\x05"
    security: bytes | None = None
    size: int | None = None
    pin_status: bytes | None = None
    sfi: bytes | None = None  # None: absent; b"": "no SFI"; else the coded byte
    fill_pattern: bytes | None = None
    repeat_pattern: bytes | None = None
    link_path: bytes | None = None


_FCP_FIELDS = {
    0x82: "descriptor",
    0x84: "df_name",
    0x8A: "lcsi",
    0x8B: "security",
    0xC6: "pin_status",
    0x88: "sfi",
    0xC7: "link_path",
}


def parse_fcp(node: Node, what: str) -> _Fcp:
    fcp = _Fcp()
    for item in constructed(node, what):
        if item.tag == 0x83:
            fid = primitive(item, what)
            if len(fid) != 2:
                raise DecodeError(f"{what}: fileID must be 2 bytes, got {len(fid)}")
            fcp.fid = fid.hex().upper()
        elif item.tag == 0x80:
            fcp.size = int.from_bytes(primitive(item, what), "big")
            if fcp.size > MAX_FILE_SIZE:
                raise DecodeError(f"{what}: efFileSize {fcp.size} exceeds {MAX_FILE_SIZE} bytes")
        elif item.tag == 0xA5:
            for info in constructed(item, what):
                if info.tag == 0xC1:
                    fcp.fill_pattern = primitive(info, what)
                elif info.tag == 0xC2:
                    fcp.repeat_pattern = primitive(info, what)
        elif item.tag in _FCP_FIELDS:
            setattr(fcp, _FCP_FIELDS[item.tag], primitive(item, what))
    return fcp


def structure_of(descriptor: bytes, what: str) -> str:
    """File type from the file descriptor byte (ETSI TS 102 221 section 11.1.1.4.3)."""
    byte = descriptor[0] & 0xBF  # bit 7: shareable
    if byte == 0x38:
        return tpl.DF
    if byte == 0x39:
        return tpl.BER_TLV
    if byte & 0x30 == 0:
        found = {1: tpl.TRANSPARENT, 2: tpl.LINEAR_FIXED, 6: tpl.CYCLIC}.get(byte & 0x07)
        if found:
            return found
    raise DecodeError(f"{what}: unknown file descriptor byte {descriptor[0]:02X}")


def _pattern_fill(pattern: bytes, unit: int, repeat: bool) -> bytes:
    if not pattern:
        return b"\xff" * unit
    if repeat:
        return (pattern * (unit // len(pattern) + 1))[:unit]
    return (pattern + pattern[-1:] * unit)[:unit]


@dataclass
class _File:
    path: tuple[str, ...]
    structure: str
    fid: str | None
    name: str | None
    aid: bytes | None
    sfi: int | None
    size: int | None
    record_length: int | None
    content: bytearray
    fcp: _Fcp
    pe_index: int
    link_target: tuple[str, ...] | None = None

    def write(self, cursor: int, data: bytes) -> None:
        end = cursor + len(data)
        if end > MAX_FILE_SIZE:
            raise DecodeError(
                f"fillFileContent for {'/'.join(self.path)} ends at byte {end}, past {MAX_FILE_SIZE}"
            )
        if self.size is not None and end > self.size and self.structure != tpl.BER_TLV:
            raise DecodeError(
                f"fillFileContent for {'/'.join(self.path)} ends at byte {end}, past its size {self.size}"
            )
        if end > len(self.content):
            self.content.extend(b"\xff" * (end - len(self.content)))
        self.content[cursor:end] = data

    def entry(self) -> FileEntry:
        return FileEntry(
            path=self.path,
            structure=self.structure,
            fid=self.fid,
            name=self.name,
            aid=self.aid,
            sfi=self.sfi,
            size=self.size,
            record_length=self.record_length,
            content=bytes(self.content),
            descriptor=self.fcp.descriptor,
            lcsi=self.fcp.lcsi,
            security_attributes=self.fcp.security,
            pin_status_template=self.fcp.pin_status,
            link_target=self.link_target,
            pe_index=self.pe_index,
        )


@dataclass
class _Builder:
    files: dict[tuple[str, ...], _File] = field(default_factory=dict)
    adf_by_temp_fid: dict[str, tuple[str, ...]] = field(default_factory=dict)
    last_adf: dict[str, tuple[str, ...]] = field(default_factory=dict)

    # --- creating one file -----------------------------------------------------------------

    def create(
        self, path, fcp: _Fcp, template: tpl.TemplateFile | None, name, pe_index, aid, structure=None
    ) -> _File:
        what = f"file {'/'.join(path)}"
        if structure is None:
            if fcp.descriptor:
                structure = structure_of(fcp.descriptor, what)
            elif template is not None:
                structure = template.structure
            else:
                raise DecodeError(f"{what}: no file descriptor in the profile and no known template")
        record_length = self._record_length(fcp, template, structure)
        size = self._size(fcp, template, structure, record_length)
        file = _File(
            path,
            structure,
            path[-1] if structure != tpl.ADF else fcp.fid,
            name,
            aid,
            self._sfi(fcp, template, path, name, structure),
            size,
            record_length,
            bytearray(),
            fcp,
            pe_index,
        )
        if structure not in tpl.DIRECTORIES and structure != tpl.BER_TLV and size is not None:
            file.content = bytearray(self._initial_content(fcp, template, size, record_length))
        if fcp.link_path:
            file.link_target = self.resolve(fcp.link_path, f"{what} linkPath")
        if path in self.files:
            raise DecodeError(f"{what} is created twice")
        self.files[path] = file
        return file

    @staticmethod
    def _record_length(fcp: _Fcp, template, structure: str) -> int | None:
        if structure not in (tpl.LINEAR_FIXED, tpl.CYCLIC):
            return None
        if fcp.descriptor and len(fcp.descriptor) >= 4:
            return int.from_bytes(fcp.descriptor[2:4], "big") or None
        return template.record_length if template else None

    @staticmethod
    def _size(fcp: _Fcp, template, structure: str, record_length: int | None) -> int | None:
        if structure in tpl.DIRECTORIES:
            return None
        if fcp.size is not None:
            return fcp.size
        if template is None or template.size is None:
            return None
        if record_length and template.record_length and record_length != template.record_length:
            return template.size // template.record_length * record_length  # same count, new length
        return template.size

    @staticmethod
    def _sfi(fcp: _Fcp, template, path, name, structure) -> int | None:
        if structure in tpl.DIRECTORIES:
            return None
        if fcp.sfi is not None:
            return fcp.sfi[0] >> 3 if fcp.sfi else None
        if name is None:  # genericFileManagement: the SFI is the FID's 5 low bits
            return int(path[-1], 16) & 0x1F
        return template.sfi if template else None

    @staticmethod
    def _initial_content(fcp: _Fcp, template, size: int, record_length: int | None) -> bytes:
        unit = record_length or size
        if fcp.fill_pattern is not None:
            record = _pattern_fill(fcp.fill_pattern, unit, repeat=False)
        elif fcp.repeat_pattern is not None:
            record = _pattern_fill(fcp.repeat_pattern, unit, repeat=True)
        elif template is not None and template.default is not None:
            record = _pattern_fill(template.default, unit, repeat=False)
        else:
            record = b"\xff" * unit
        return (record * (size // unit + 1))[:size] if unit else b""

    # --- paths -----------------------------------------------------------------------------

    def resolve(self, coded: bytes, what: str) -> tuple[str, ...]:
        """A filePath/linkPath: FIDs below the MF, the first one possibly an ADF temporary FID."""
        if len(coded) % 2:
            raise DecodeError(f"{what}: path {coded.hex().upper()} has an odd length")
        fids = [coded[i : i + 2].hex().upper() for i in range(0, len(coded), 2)]
        if fids and fids[0] == "3F00":
            fids = fids[1:]
        path = MF_PATH
        for position, fid in enumerate(fids):
            if position == 0 and fid in self.adf_by_temp_fid:
                path = self.adf_by_temp_fid[fid]
            else:
                path = path + (fid,)
        if path not in self.files:
            raise DecodeError(f"{what}: path {coded.hex().upper()} names no file created before it")
        return path


def _file_items(node: Node, what: str) -> tuple[bool, _Fcp, list[tuple[str, object]]]:
    """doNotCreate flag, Fcp and fill operations of one template File (SEQUENCE OF CHOICE)."""
    do_not_create, fcp, fills = False, None, []
    for item in constructed(node, what):
        if item.tag == context_tag(0):
            do_not_create = True
        elif item.tag == context_tag(1, True):
            if fcp is not None:
                raise DecodeError(f"{what}: more than one fileDescriptor")
            fcp = parse_fcp(item, what)
        elif item.tag == context_tag(2):
            fills.append(("offset", decode_uint(primitive(item, what), f"{what} fillFileOffset")))
        elif item.tag == context_tag(3):
            fills.append(("content", primitive(item, what)))
    return do_not_create, fcp or _Fcp(), fills


def _apply_fills(file: _File, fills, cursor: int = 0) -> int:
    for op, value in fills:
        if op == "offset":
            cursor += value
        else:
            file.write(cursor, value)
            cursor += len(value)
    return cursor


def _template_pe(builder: _Builder, pe: ProfileElement, index: int) -> None:
    kind, template_id = pe.kind, pe.template_id
    template = tpl.TEMPLATES.get(template_id or "")
    if kind in NAA_OF_PE:
        naa = NAA_OF_PE[kind]
        if naa not in builder.last_adf:
            raise DecodeError(f"{kind} PE (#{index}) comes before any {naa} PE")
        base = builder.last_adf[naa]
    else:
        base = MF_PATH
    pe_root, current, aid = None, base, _aid_of(builder, base)
    present = set()
    for name, node in pe.file_fields():
        present.add(name)
        what = f"{kind}.{name}"
        do_not_create, fcp, fills = _file_items(node, what)
        if do_not_create and kind != "mf":
            continue
        entry = tpl.template_file(template_id, name)
        if kind in NAA_KINDS and pe_root is None and not name.startswith("adf-"):
            raise DecodeError(f"{what}: file before the ADF of its {kind} PE")
        if name == "mf":
            file = builder.create(MF_PATH, fcp, entry, name, index, None, tpl.MF)
            pe_root = current = MF_PATH
        elif name.startswith("adf-"):
            file = _create_adf(builder, kind, fcp, entry, name, index)
            pe_root = current = file.path
            aid = file.aid
        elif name.startswith("df-"):
            fid = fcp.fid or (entry.fid if entry else None)
            if fid is None:
                raise DecodeError(f"{what}: no file ID in the profile or the template")
            parent = base if pe_root is None else pe_root
            file = builder.create(parent + (fid,), fcp, entry, name, index, aid, tpl.DF)
            pe_root = pe_root or file.path
            current = file.path
        else:
            fid = fcp.fid or (entry.fid if entry else None)
            if fid is None:
                raise DecodeError(f"{what}: no file ID in the profile or the template")
            file = builder.create(current + (fid,), fcp, entry, name, index, aid)
        _apply_fills(file, fills)
    if template is not None and template.created_by_default and pe_root is not None:
        _create_defaults(builder, template, present, pe_root, index, aid)


def _aid_of(builder: _Builder, path: tuple[str, ...]) -> bytes | None:
    file = builder.files.get(path[:1])
    return file.aid if file else None


def _create_adf(builder: _Builder, kind: str, fcp: _Fcp, entry, name: str, index: int) -> _File:
    if not fcp.df_name:
        raise DecodeError(f"{kind}.{name}: an ADF needs its AID (dfName)")
    path = (fcp.df_name.hex().upper(),)
    file = builder.create(path, fcp, entry, name, index, fcp.df_name, tpl.ADF)
    if fcp.fid:
        builder.adf_by_temp_fid[fcp.fid] = path
    if kind in NAA_KINDS:
        builder.last_adf[kind] = path
    return file


def _create_defaults(builder, template: tpl.Template, present: set[str], root, index: int, aid) -> None:
    for name, entry in template.files.items():
        if name in present or entry.structure in tpl.DIRECTORIES or entry.size is None or entry.fid is None:
            continue
        builder.create(root + (entry.fid,), _Fcp(), entry, name, index, aid)


def _generic_file_management(builder: _Builder, pe: ProfileElement, index: int) -> None:
    what = f"genericFileManagement (#{index})"
    commands = next((n for n in pe.components if n.tag == context_tag(1, True)), None)
    if commands is None:
        raise DecodeError(f"{what}: fileManagementCMD missing")
    current_dir, file, cursor = MF_PATH, None, 0
    for command in constructed(commands, what):
        for item in constructed(command, what):
            if item.tag == context_tag(0):  # filePath
                path = builder.resolve(primitive(item, what), f"{what} filePath")
                if builder.files[path].structure in tpl.DIRECTORIES:
                    current_dir, file = path, None
                else:
                    file, cursor = builder.files[path], 0
            elif item.tag == 0x62:  # createFCP
                fcp = parse_fcp(item, what)
                if fcp.fid is None:
                    raise DecodeError(f"{what}: createFCP without a fileID")
                created = builder.create(
                    current_dir + (fcp.fid,), fcp, None, None, index, _aid_of(builder, current_dir)
                )
                if created.structure in tpl.DIRECTORIES:
                    current_dir, file = created.path, None
                else:
                    file, cursor = created, 0
            elif item.tag in (0x02, context_tag(1)):  # fillFileOffset, fillFileContent
                if file is None:
                    raise DecodeError(f"{what}: fill operation with no file selected or created")
                value = primitive(item, what)
                op = ("offset", decode_uint(value, what)) if item.tag == 0x02 else ("content", value)
                cursor = _apply_fills(file, [op], cursor)


def adf_aid(pe: ProfileElement) -> bytes | None:
    """The AID (dfName) of the ADF an NAA PE (usim, isim, csim) creates."""
    for name, node in pe.file_fields():
        if name.startswith("adf-"):
            return _file_items(node, f"{pe.kind}.{name}")[1].df_name
    return None


def build_files(elements: list[ProfileElement]) -> list[FileEntry]:
    builder = _Builder()
    for index, pe in enumerate(elements):
        if pe.kind == "genericFileManagement":
            _generic_file_management(builder, pe, index)
        elif pe.kind in TEMPLATE_FIELDS and pe.kind not in UNSUPPORTED_KINDS:
            _template_pe(builder, pe, index)
    for file in builder.files.values():
        if file.link_target is not None:
            target = builder.files[file.link_target]
            file.content, file.size = bytearray(target.content), target.size
    return [file.entry() for file in builder.files.values()]

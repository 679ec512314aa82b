"""``kinsim profile``: inspect SAIP profile packages and personalize templates (rsp.saip)."""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path

from kinsim.output import command_group, emit, json_parent, key_values, table, to_jsonable
from rsp.errors import KinsimError
from rsp.saip import ProfilePackage
from rsp.saip.personalize import (
    KEY_LENGTHS,
    PersonalizationError,
    iccid_range,
    personalize,
    personalize_batch,
)

SECRET_COLUMNS = ("iccid", "imsi", "ki", "opc", "algorithm", "file")


class ProfileFileError(KinsimError):
    """A profile file that cannot be read or must not be overwritten."""


def register(subparsers, name: str, help_text: str) -> None:
    commands = command_group(subparsers, name, help_text)

    inspect = commands.add_parser(
        "inspect",
        parents=[json_parent()],
        help="summarize a profile package (ICCID, IMSI, elements, AKA algorithm)",
        description="Decode a raw SAIP profile package (DER ProfileElements) and summarize it. "
        "Secrets (Ki, OPc, PIN values) are not shown.",
    )
    inspect.add_argument("file", metavar="FILE")
    inspect.set_defaults(func=cmd_inspect)

    perso = commands.add_parser(
        "personalize",
        parents=[json_parent()],
        help="make profiles from a template: ICCID, IMSI, Ki/OPc, PINs",
        description="Write DIR/<ICCID>.der for each profile and DIR/secrets.csv (or .json) with Ki and "
        "OPc for the operator's authenticator. Without --ki the keys are random; --count N makes N "
        "profiles with consecutive ICCIDs (Luhn digit recomputed) and IMSIs.",
    )
    perso.add_argument("template", metavar="TEMPLATE")
    perso.add_argument("--iccid", required=True, help="first ICCID (19 or 20 digits with its Luhn digit)")
    perso.add_argument("--imsi", required=True, help="first IMSI (MCC MNC MSIN digits)")
    perso.add_argument("--ki", help="subscriber key, hex (only with --count 1; default: random)")
    keys = perso.add_mutually_exclusive_group()
    keys.add_argument("--opc", help="OPc, hex (with --ki)")
    keys.add_argument("--op", help="operator OP, hex: OPc is derived per Ki (Milenage)")
    perso.add_argument("--algorithm", choices=tuple(KEY_LENGTHS), help="replace the template's AKA algorithm")
    perso.add_argument("--mnc-length", type=int, choices=(2, 3), help="MNC digits, written to EF.AD")
    perso.add_argument("--pin1", help="PIN1, 4 to 8 digits")
    perso.add_argument("--puk1", help="PUK1, 8 digits")
    perso.add_argument("--adm1", help="ADM1, 4 to 8 digits or 16 hex digits")
    perso.add_argument("--count", type=int, default=1, help="number of profiles (default 1)")
    perso.add_argument("--out", required=True, metavar="DIR", help="output directory (created if missing)")
    perso.add_argument("--secrets-format", choices=("csv", "json"), default="csv", help="default: csv")
    perso.add_argument("--force", action="store_true", help="overwrite files already in DIR")
    perso.set_defaults(func=cmd_personalize)



def _read(path: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise ProfileFileError(f"cannot read {path}: {exc.strerror or exc}") from None


# --- inspect -----------------------------------------------------------------------------------


def cmd_inspect(args) -> int:
    package = ProfilePackage.decode(_read(args.file))
    emit(args, package.summary(), _inspect_text)
    return 0


def _inspect_text(summary: dict) -> str:
    plain = to_jsonable(summary)
    facts = key_values(
        [
            ("ICCID", plain["iccid"]),
            ("ICCID (EF.ICCID)", plain["iccidEf"]),
            ("IMSI", plain["imsi"]),
            ("MNC length", plain["mncLength"]),
            ("profile type", plain["profileType"]),
            ("SAIP version", plain["version"]),
            ("size", f"{plain['size']} bytes, {len(plain['elements'])} elements, {plain['files']} files"),
            ("USIM AID", plain["usimAid"]),
            ("ISIM AID", plain["isimAid"]),
            ("mandatory services", ", ".join(plain["mandatoryServices"])),
            ("security domains", ", ".join(plain["securityDomains"])),
            ("RFM instances", ", ".join(plain["rfm"])),
        ]
    )
    aka = table(
        [(a["application"], a["aid"], a["algorithm"], a["keyLength"]) for a in plain["aka"]],
        ("application", "AID", "algorithm", "key bytes"),
    )
    elements = table(
        [(e["index"], e["kind"], e["identification"], e["size"], e["template"]) for e in plain["elements"]],
        ("#", "element", "id", "bytes", "template"),
    )
    return f"{facts}\n\nAKA\n{aka}\n\nElements\n{elements}"


# --- personalize -------------------------------------------------------------------------------


def _hex(field: str, text: str | None) -> bytes | None:
    if text is None:
        return None
    try:
        return bytes.fromhex(text)
    except ValueError:
        raise PersonalizationError(field, f"is not hex: {text!r}") from None


def cmd_personalize(args) -> int:
    template = ProfilePackage.decode(_read(args.template))
    ki, opc, op = _hex("ki", args.ki), _hex("opc", args.opc), _hex("op", args.op)
    if ki is not None and args.count != 1:
        raise PersonalizationError("ki", "one Ki for several profiles is refused; omit --ki for random keys")
    if opc is not None and ki is None:
        raise PersonalizationError("opc", "an OPc belongs to one Ki; give --ki too, or --op")
    codes = {"pin1": args.pin1, "puk1": args.puk1, "adm1": args.adm1}
    options = dict(op=op, mnc_length=args.mnc_length, algorithm=args.algorithm, **codes)
    if ki is not None:
        der = personalize(template, iccid=args.iccid, imsi=args.imsi, ki=ki, opc=opc, **options)
        produced = [(args.iccid, args.imsi, ki, _stored_opc(der), der)]
    else:
        produced = personalize_batch(
            template, iccid_start=args.iccid, imsi_start=args.imsi, count=args.count, **options
        )
    out = Path(args.out)
    secrets = out / f"secrets.{args.secrets_format}"
    if not args.force:  # refuse before writing anything
        targets = [out / f"{iccid}.der" for iccid in iccid_range(args.iccid, max(args.count, 1))] + [secrets]
        existing = [str(path) for path in targets if path.exists()]
        if existing:
            raise ProfileFileError(f"{', '.join(existing[:3])} already exist(s); use --force to overwrite")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ProfileFileError(f"cannot create {out}: {exc.strerror or exc}") from None
    algorithm = args.algorithm or next((a.algorithm for a in template.aka_parameters if a.algorithm), None)
    rows = []
    for iccid, imsi, row_ki, row_opc, der in produced:
        target = out / f"{iccid}.der"
        _write(target, der)
        rows.append(
            {
                "iccid": iccid,
                "imsi": imsi,
                "ki": row_ki.hex(),
                "opc": row_opc.hex() if row_opc else "",
                "algorithm": algorithm,
                "file": target.name,
            }
        )
    _write(secrets, _secrets_text(rows, args.secrets_format).encode(), private=True)
    result = {
        "out": str(out),
        "count": len(rows),
        "secrets": str(secrets),
        "profiles": [{k: r[k] for k in ("iccid", "imsi", "file")} for r in rows],
    }
    emit(args, result, lambda r: f"wrote {r['count']} profile(s) to {r['out']}; Ki/OPc in {r['secrets']}")
    return 0


def _stored_opc(der: bytes) -> bytes | None:
    return next((a.opc for a in ProfilePackage.decode(der).aka_parameters if a.opc is not None), None)


def _secrets_text(rows: list[dict], fmt: str) -> str:
    if fmt == "json":
        return json.dumps(rows, indent=2) + "\n"
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=SECRET_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def _write(path: Path, data: bytes, private: bool = False) -> None:
    """Write via a temporary file and rename; secrets files are readable by the owner only."""
    temporary = path.with_name(f".{path.name}.tmp")
    try:
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if private else 0o644)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(temporary, path)
    except OSError as exc:
        raise ProfileFileError(f"cannot write {path}: {exc.strerror or exc}") from None

"""``kinsim certs``: write a fresh SGP.22 test PKI, show a certificate, verify one for a role."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime
from pathlib import Path

from cryptography import x509

from certs.pki import DEFAULT_SMDP_OID, generate_pki, random_eid, read_certificate
from certs.validate import (
    CURVE_NAMES,
    Role,
    ValidatedChain,
    authority_key_id,
    dns_names,
    eid_of,
    eum_name_constraints,
    name_text,
    registered_id,
    role_of,
    subject_key_id,
    validate_chain,
)
from kinsim.output import command_group, emit, json_parent, key_values, table
from rsp.errors import KinsimError
from rsp.ids import validate_eid


def register(subparsers, name: str, help_text: str) -> None:
    commands = command_group(subparsers, name, help_text)

    generate = commands.add_parser(
        "generate",
        parents=[json_parent()],
        help="write a fresh test PKI (CI, EUM, eUICC, SM-DP+, SM-DS) to DIR",
        description="Write DER certificates (NAME.der) and PEM private keys (NAME.key.pem) for the CI, EUM, "
        "eUICC, SM-DP+ (dp_auth, dp_pb, dp_tls) and SM-DS (ds_auth, ds_tls). With --curve both, "
        "DIR/nist and DIR/brp hold one hierarchy each, for the same EID.",
    )
    generate.add_argument("directory", metavar="DIR")
    generate.add_argument("--curve", choices=("nist", "brp", "both"), default="nist", help="default: nist")
    generate.add_argument("--smdp-address", default="localhost", help="host name in the TLS certificates")
    generate.add_argument(
        "--smdp-oid", default=DEFAULT_SMDP_OID, help=f"SM-DP+ OID (default {DEFAULT_SMDP_OID})"
    )
    generate.add_argument("--eid", type=_eid, help="EID of the eUICC (default: random, EUM prefix 89049032)")
    generate.add_argument("--force", action="store_true", help="replace a PKI already in DIR")
    generate.set_defaults(func=cmd_generate)

    show = commands.add_parser("show", parents=[json_parent()], help="describe a certificate (DER or PEM)")
    show.add_argument("file", metavar="FILE")
    show.set_defaults(func=cmd_show)

    verify = commands.add_parser(
        "verify",
        parents=[json_parent()],
        help="validate a certificate for its role against trusted CIs",
        description="Apply the SGP.22 chain and role rules; an eUICC needs its EUM as --intermediate.",
    )
    verify.add_argument("file", metavar="CERT")
    verify.add_argument("--role", required=True, choices=[r.cli_name for r in Role])
    verify.add_argument("--ci", action="append", required=True, metavar="CI", help="trusted CI (repeatable)")
    verify.add_argument("--intermediate", action="append", default=[], metavar="X", help="EUM certificate")
    verify.add_argument(
        "--at", type=_moment, help="validation time, ISO 8601 (default: now; naive means UTC)"
    )
    verify.set_defaults(func=cmd_verify)



def _eid(text: str) -> str:
    try:
        return validate_eid(text)
    except KinsimError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _moment(text: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 date or time: {text!r}") from None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


def _iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


# --- generate -----------------------------------------------------------------------------------


def cmd_generate(args) -> int:
    curves = ["nist", "brp"] if args.curve == "both" else [args.curve]
    root = Path(args.directory)
    targets = {curve: root / curve if len(curves) > 1 else root for curve in curves}
    for target in targets.values():  # refuse before writing anything
        if (target / "ci.der").exists() and not args.force:
            raise KinsimError(f"{target} already holds a PKI (ci.der); use --force to replace it")
    eid = args.eid or random_eid()
    now = datetime.now(UTC)
    written = []
    for curve, target in targets.items():
        pki = generate_pki(curve, smdp_address=args.smdp_address, smdp_oid=args.smdp_oid, eid=eid, now=now)
        try:
            pki.save(target)
        except OSError as exc:
            raise KinsimError(f"cannot write the PKI to {target}: {exc.strerror or exc}") from None
        certificates = [
            {"name": name, "file": str(target / f"{name}.der"), **certificate_summary(credential.cert)}
            for name, credential in pki.credentials().items()
        ]
        written.append(
            {
                "curve": curve,
                "directory": str(target),
                "eid": pki.eid,
                "ciPkid": pki.ci.pkid,
                "certificates": certificates,
            }
        )
    emit(args, {"pkis": written}, _generated_text)
    return 0


def _generated_text(result: dict) -> str:
    parts = []
    for pki in result["pkis"]:
        rows = [(c["name"], c["role"], c["curve"], c["notAfter"], c["subject"]) for c in pki["certificates"]]
        heading = (
            f"{pki['curve']} PKI in {pki['directory']}  (EID {pki['eid']}, CI PKId {pki['ciPkid'].hex()})"
        )
        parts.append(heading + "\n" + table(rows, ("file", "role", "curve", "not after", "subject")))
    return "\n\n".join(parts)


# --- show ---------------------------------------------------------------------------------------


def certificate_summary(cert: x509.Certificate) -> dict:
    """What a person or script wants to know about an RSP certificate."""
    role = role_of(cert)
    aki = authority_key_id(cert)
    permitted, _ = eum_name_constraints(cert)
    return {
        "subject": name_text(cert.subject),
        "issuer": name_text(cert.issuer),
        "role": role.cli_name if role else None,
        "serialNumber": format(cert.serial_number, "x"),
        "notBefore": _iso(cert.not_valid_before_utc),
        "notAfter": _iso(cert.not_valid_after_utc),
        "curve": _curve(cert),
        "subjectKeyIdentifier": subject_key_id(cert),
        "authorityKeyIdentifier": aki,
        "eid": eid_of(cert) if role is Role.EUICC else None,
        "oid": registered_id(cert),
        "dnsNames": list(dns_names(cert)),
        "permittedSubtrees": [name_text(name) for name in permitted],
    }


def _curve(cert: x509.Certificate) -> str:
    """'nist', 'brp', or whatever else the key is, for display (validation rejects other curves)."""
    try:
        curve = getattr(cert.public_key(), "curve", None)
    except ValueError:
        return "unreadable key"
    return CURVE_NAMES.get(curve.name, curve.name) if curve else "not an EC key"


def cmd_show(args) -> int:
    emit(args, certificate_summary(read_certificate(args.file)), _summary_text)
    return 0


def _summary_text(summary: dict) -> str:
    labels = {
        "subjectKeyIdentifier": "SKI",
        "authorityKeyIdentifier": "AKI",
        "dnsNames": "DNS names",
        "permittedSubtrees": "permitted (EUM)",
    }

    def text(value):
        if isinstance(value, bytes):
            return value.hex()
        if isinstance(value, list):
            return ", ".join(value)
        return value

    return key_values((labels.get(k, k), text(v)) for k, v in summary.items())


# --- verify -------------------------------------------------------------------------------------


def cmd_verify(args) -> int:
    now = args.at or datetime.now(UTC)
    chain = validate_chain(
        read_certificate(args.file),
        Role.parse(args.role),
        intermediates=[read_certificate(p) for p in args.intermediate],
        trusted_cis=[read_certificate(p) for p in args.ci],
        now=now,
    )
    emit(args, verification_summary(chain, now), _verified_text)
    return 0


def verification_summary(chain: ValidatedChain, at: datetime) -> dict:
    return {
        "valid": True,
        "role": chain.role.cli_name,
        "subject": name_text(chain.leaf.subject),
        "ci": name_text(chain.ci.subject),
        "ciPkid": chain.ci_pkid,
        "eum": name_text(chain.eum.subject) if chain.eum is not None else None,
        "eid": chain.eid,
        "oid": chain.oid,
        "dnsNames": list(chain.dns_names),
        "checkedAt": _iso(at),
    }


def _verified_text(summary: dict) -> str:
    lines = [f"OK: {summary['role']} certificate '{summary['subject']}' is valid for its role"]
    lines.append(f"  chains to CI '{summary['ci']}' (PKId {summary['ciPkid'].hex()})")
    if summary["eum"]:
        lines.append(f"  via EUM '{summary['eum']}'")
    for label, key in (("EID", "eid"), ("OID", "oid")):
        if summary[key]:
            lines.append(f"  {label} {summary[key]}")
    if summary["dnsNames"]:
        lines.append(f"  DNS names {', '.join(summary['dnsNames'])}")
    return "\n".join(lines)

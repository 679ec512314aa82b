"""``kinsim plan``: family shared plans for owners and operators.

Most commands talk to a running service over its REST API (``--api URL --token T``, or the
environment variables KINSIM_API and KINSIM_TOKEN). Without ``--api``, an operator works on the
PostgreSQL store directly (``--dsn``, KINSIM_PG_DSN) for everything that does not need the SM-DP+
(inviting, revoking and device changes do: they go through ``kinsim plan serve``).

Amounts take units: data in B/kB/MB/GB (powers of 1000), voice in s/min/h, SMS as a count; a cap is
an amount or a percentage of the pool (``data=25%``), ``none`` removes it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import secrets
import sys
import urllib.error
import urllib.request
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from kinsim.output import emit, json_parent, key_values, table
from mno import plans, qr
from rsp.errors import KinsimError

UNIT_FACTORS = {
    "data": {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12},
    "voice": {"": 1, "s": 1, "min": 60, "h": 3600},
    "sms": {"": 1},
}
_AMOUNT = re.compile(r"(\d+)\s*([a-z]*)")


class CliError(KinsimError):
    """A command could not be carried out (bad arguments, refused by the service)."""


# --- argument parsing helpers ------------------------------------------------------------------------


def parse_amount(kind: str, text: str) -> int:
    match = _AMOUNT.fullmatch(text.strip().lower())
    factor = UNIT_FACTORS[kind].get(match.group(2)) if match else None
    if factor is None:
        units = ", ".join(u for u in UNIT_FACTORS[kind] if u) or "none"
        raise CliError(f"{kind} amount {text!r}: a whole number with a unit ({units})")
    return int(match.group(1)) * factor


def _assignments(items: list[str], what: str) -> dict[str, str]:
    out = {}
    for item in items:
        kind, eq, value = item.partition("=")
        if not eq or kind not in plans.KINDS:
            raise CliError(f"{what} {item!r}: write KIND=VALUE with KIND one of {', '.join(plans.KINDS)}")
        out[kind] = value
    return out


def parse_pool(items: list[str]) -> dict[str, int]:
    return {kind: parse_amount(kind, value) for kind, value in _assignments(items, "pool").items()}


def parse_caps(items: list[str]) -> dict[str, Any]:
    caps: dict[str, Any] = {}
    for kind, value in _assignments(items, "cap").items():
        if value.lower() == "none":
            caps[kind] = None
        elif value.endswith("%"):
            try:
                share = float(value[:-1]) / 100
            except ValueError:
                raise CliError(f"cap {kind}={value}: a percentage is a number followed by %") from None
            caps[kind] = {"share": share}
        else:
            caps[kind] = {"amount": parse_amount(kind, value)}
    return caps


def format_amount(kind: str, amount: int) -> str:
    if kind == "data":
        for unit, factor in (("TB", 10**12), ("GB", 10**9), ("MB", 10**6), ("kB", 10**3)):
            if amount >= factor:
                return f"{amount / factor:.2f} {unit}"
        return f"{amount} B"
    if kind == "voice":
        return f"{amount // 60} min" + (f" {amount % 60} s" if amount % 60 else "")
    return f"{amount} SMS"


# --- the two back-ends ---------------------------------------------------------------------------------


class ApiClient:
    """The REST API over HTTP(S), synchronously (one request per command)."""

    def __init__(self, base_url: str, token: str | None, ca_file: str | None = None):
        self.base_url = base_url.rstrip("/")
        self.token = token
        self._context = None
        if ca_file:
            import ssl

            self._context = ssl.create_default_context(cafile=ca_file)

    def call(self, method: str, path: str, body: Any = None, raw: bool = False) -> Any:
        data = json.dumps(body).encode("utf-8") if body is not None else None
        request = urllib.request.Request(self.base_url + path, data=data, method=method)
        if self.token:
            request.add_header("Authorization", f"Bearer {self.token}")
        if data is not None:
            request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request, context=self._context, timeout=60) as response:
                payload = response.read()
        except urllib.error.HTTPError as exc:
            raise CliError(_api_error(exc)) from None
        except (urllib.error.URLError, OSError) as exc:
            raise CliError(f"cannot reach the plan service at {self.base_url}: {exc}") from None
        return payload if raw else json.loads(payload or b"{}")


def _api_error(exc: urllib.error.HTTPError) -> str:
    try:
        error = json.loads(exc.read())["error"]
    except (ValueError, KeyError, TypeError):
        return f"the plan service answered HTTP {exc.code}"
    codes = f" [{error['subjectCode']}/{error['reasonCode']}]" if "subjectCode" in error else ""
    return f"{error.get('message', 'refused')}{codes} (HTTP {exc.code})"


def _api(args) -> ApiClient | None:
    url = args.api or os.environ.get("KINSIM_API")
    if not url:
        return None
    return ApiClient(url, args.token or os.environ.get("KINSIM_TOKEN"), args.ca)


def _book(args) -> plans.PlanBook:
    from mno.store import PgStore

    store = PgStore(args.dsn, schema=args.schema)
    store.migrate()
    return plans.PlanBook(store)


def _needs_service(what: str) -> CliError:
    return CliError(f"{what} needs the SM-DP+: run 'kinsim plan serve' and pass --api URL --token T")


# --- commands ------------------------------------------------------------------------------------------

P = "/api/v1/plans"


def cmd_create(args) -> int:
    body = {"name": args.name, "owner_name": args.owner, "max_members": args.max_members,
            "pool": parse_pool(args.pool), "policy": args.policy, "period_days": args.period_days}
    client = _api(args)
    if client:
        result = client.call("POST", P, body)
    else:
        plan, owner, token = _book(args).create_plan(plans.OPERATOR, args.name, args.owner, args.max_members,
                                                     body["pool"], policy=args.policy, period_days=args.period_days)
        result = {"plan": plans.plan_view(plan, plans.OPERATOR), "owner": plans.member_view(owner, plans.OPERATOR),
                  "owner_token": token}
    emit(args, result, lambda r: key_values([
        ("plan", r["plan"]["plan_id"]), ("owner", r["owner"]["member_id"]), ("policy", r["plan"]["policy"]),
        ("owner token", r["owner_token"]), ("", "give the owner token to the owner; it is shown only now")]))
    return 0


def cmd_list(args) -> int:
    client = _api(args)
    if client:
        found = client.call("GET", P)["plans"]
    else:
        found = [plans.plan_view(p, plans.OPERATOR) for p in _book(args).list_plans(plans.OPERATOR)]
    emit(args, {"plans": found}, lambda r: table(
        [(p["plan_id"], p["name"], p["policy"], p["max_members"]) for p in r["plans"]],
        ["plan", "name", "policy", "max members"]))
    return 0


def cmd_show(args) -> int:
    client = _api(args)
    if client:
        plan = client.call("GET", f"{P}/{args.plan}")
    else:
        plan = plans.plan_view(_book(args).get_plan(plans.OPERATOR, args.plan), plans.OPERATOR)
    emit(args, plan, lambda p: key_values([(k, json.dumps(v) if isinstance(v, dict) else v) for k, v in p.items()]))
    return 0


def cmd_policy(args) -> int:
    client = _api(args)
    if client:
        plan = client.call("PATCH", f"{P}/{args.plan}", {"policy": args.policy})
    else:
        plan = plans.plan_view(_book(args).update_plan(plans.OPERATOR, args.plan, policy=args.policy), plans.OPERATOR)
    emit(args, plan, f"policy of {plan['plan_id']} is now {plan['policy']}")
    return 0


def cmd_members(args) -> int:
    client = _api(args)
    if client:
        members = client.call("GET", f"{P}/{args.plan}/members")["members"]
    else:
        book = _book(args)
        members = [plans.member_view(m, plans.OPERATOR) for m in book.list_members(plans.OPERATOR, args.plan)]
    emit(args, {"members": members}, lambda r: table(
        [(m["member_id"], m["display_name"], m["role"], m["state"]) for m in r["members"]],
        ["member", "name", "role", "state"]))
    return 0


def _write_qr(args, activation_code: str) -> None:
    if args.png:
        Path(args.png).write_bytes(qr.png(activation_code))
    if args.svg:
        Path(args.svg).write_bytes(qr.svg(activation_code))


def _invite_human(args, result: dict) -> str:
    lines = [key_values([
        ("member", result["member"]["member_id"]), ("invitation", result["invitation"]["invitation_id"]),
        ("activation code", result["activation_code"]),
        ("confirmation code", result.get("confirmation_code") or "(not required)"),
        ("member token", result.get("member_token") or "(unchanged)"),
        ("expires", result["invitation"]["expires_at"]),
    ])]
    if result.get("confirmation_code"):
        lines.append("Give the confirmation code by another channel than the QR code (a call, a message).")
    if not args.no_qr:
        lines.append(qr.terminal(result["activation_code"]))
    return "\n".join(lines)


def cmd_invite(args) -> int:
    client = _api(args)
    if client is None:
        raise _needs_service("inviting")
    body: dict[str, Any] = {"display_name": args.name, "role": args.role}
    if args.eid:
        body["eid"] = args.eid
    if args.no_cc:
        body["cc_required"] = False
    if args.ttl_hours:
        body["ttl_seconds"] = int(args.ttl_hours * 3600)
    result = client.call("POST", f"{P}/{args.plan}/members", body)
    _write_qr(args, result["activation_code"])
    emit(args, result, lambda r: _invite_human(args, r))
    return 0


def cmd_device(args) -> int:
    client = _api(args)
    if client is None:
        raise _needs_service("a new profile")
    body = {"eid": args.eid} if args.eid else {}
    result = client.call("POST", f"{P}/{args.plan}/members/{args.member}/profiles", body)
    _write_qr(args, result["activation_code"])
    emit(args, result, lambda r: _invite_human(args, r))
    return 0


def cmd_invitations(args) -> int:
    client = _api(args)
    if client:
        found = client.call("GET", f"{P}/{args.plan}/invitations")["invitations"]
    else:
        book = _book(args)
        now = book.now()
        found = [plans.invitation_view(i, now) for i in book.list_invitations(plans.OPERATOR, args.plan)]
    emit(args, {"invitations": found}, lambda r: table(
        [(i["invitation_id"], i["member_id"], i["state"], i["expires_at"], "yes" if i["eid_bound"] else "no")
         for i in r["invitations"]], ["invitation", "member", "state", "expires", "EID-bound"]))
    return 0


def cmd_qr(args) -> int:
    client = _api(args)
    if client:
        invitation = client.call("GET", f"{P}/{args.plan}/invitations/{args.invitation}")
    else:
        book = _book(args)
        invitation = plans.invitation_view(book.get_invitation(plans.OPERATOR, args.plan, args.invitation), book.now())
    code = invitation.get("activation_code")
    if not code:
        raise CliError(f"invitation {args.invitation} is {invitation['state']}: it has no usable activation code")
    _write_qr(args, code)
    emit(args, {"activation_code": code, "qr_payload": qr.qr_payload(code)}, lambda r: qr.terminal(code))
    return 0


def cmd_cancel(args) -> int:
    client = _api(args)
    if client is None:
        raise _needs_service("cancelling an invitation")
    result = client.call("DELETE", f"{P}/{args.plan}/invitations/{args.invitation}")
    emit(args, result, f"invitation {args.invitation} is {result['state']}")
    return 0


def cmd_caps(args) -> int:
    caps = parse_caps(args.caps)
    client = _api(args)
    if client:
        result = client.call("PUT", f"{P}/{args.plan}/members/{args.member}/caps", caps)
    else:
        kept = _book(args).set_caps(plans.OPERATOR, args.plan, args.member, caps)
        result = {"caps": {c.kind: plans.cap_json(c) for c in kept}}
    emit(args, result, lambda r: key_values([(k, json.dumps(v)) for k, v in r["caps"].items()]) or "no caps")
    return 0


def _usage_human(view: dict) -> str:
    lines = [f"period {view['period']}: {view['period_start']} .. {view['period_end']} ({view['policy']})"]
    lines.append(table([(k, format_amount(k, p["used"]), format_amount(k, p["total"]), format_amount(k, p["remaining"]))
                        for k, p in view["pool"].items()], ["pool", "used", "total", "remaining"]))
    rows = []
    for member in view["members"]:
        for kind, line in member["usage"].items():
            rows.append((member["display_name"], kind, format_amount(kind, line["used"]),
                         format_amount(kind, line["allowance"]), "throttled" if line["throttled"] else ""))
    lines.append(table(rows, ["member", "kind", "used", "allowance", ""]))
    return "\n".join(lines)


def cmd_usage(args) -> int:
    client = _api(args)
    query = f"?period={args.period}" if args.period is not None else ""
    if args.member:
        path = f"{P}/{args.plan}/members/{args.member}/usage{query}"
        if client:
            result = client.call("GET", path)
        else:
            records = _book(args).member_records(plans.OPERATOR, args.plan, args.member, args.period)
            result = {"records": [plans.usage_record_view(r) for r in records]}
        emit(args, result, lambda r: table([(x["at"], x["kind"], x["amount"], x["charged"], x["excess"],
                                             x["idempotency_key"]) for x in r["records"]],
                                           ["at", "kind", "amount", "charged", "excess", "key"]))
        return 0
    view = client.call("GET", f"{P}/{args.plan}/usage{query}") if client else \
        _book(args).plan_usage(plans.OPERATOR, args.plan, args.period)
    emit(args, view, _usage_human)
    return 0


def cmd_ingest(args) -> int:
    at = args.at or datetime.now(UTC).isoformat()
    record = {"kind": args.kind, "amount": parse_amount(args.kind, args.amount), "at": at,
              "idempotency_key": args.key or secrets.token_hex(12)}
    for name in ("imsi", "member_id", "plan_id"):
        if getattr(args, name):
            record[name] = getattr(args, name)
    client = _api(args)
    if client:
        result = client.call("POST", "/api/v1/usage", record)
    else:
        when = datetime.fromisoformat(at.replace("Z", "+00:00"))
        outcome = _book(args).ingest_usage(plans.OPERATOR, kind=record["kind"], amount=record["amount"], at=when,
                                           idempotency_key=record["idempotency_key"], plan_id=args.plan_id,
                                           member_id=args.member_id, imsi=args.imsi)
        result = {"duplicate": outcome.duplicate, "charged": outcome.record.charged, "excess": outcome.record.excess,
                  "throttled": outcome.throttled, "member_remaining": outcome.member_remaining,
                  "pool_remaining": outcome.pool_remaining}
    emit(args, result, lambda r: key_values(list(r.items())))
    return 0


def _service_member_call(args, method: str, suffix: str, what: str) -> dict:
    client = _api(args)
    if client is None:
        raise _needs_service(what)
    return client.call(method, f"{P}/{args.plan}/members/{args.member}{suffix}")


def cmd_revoke(args) -> int:
    result = _service_member_call(args, "DELETE", "", "revoking")
    emit(args, result, f"member {args.member} is revoked: {result['profiles_barred']} profile(s) barred, "
                       f"{result['remote_deletions']} remote deletion(s) requested")
    return 0


def cmd_suspend(args) -> int:
    result = _service_member_call(args, "POST", "/resume" if args.resume else "/suspend", "suspending")
    emit(args, result, f"member {args.member} is {result['state']}")
    return 0


def cmd_token(args) -> int:
    client = _api(args)
    if client:
        token = client.call("POST", f"{P}/{args.plan}/members/{args.member}/token")["token"]
    else:
        token = _book(args).rotate_token(plans.OPERATOR, args.plan, args.member)
    emit(args, {"token": token}, f"new token (the old one no longer works): {token}")
    return 0


def cmd_audit(args) -> int:
    client = _api(args)
    path = f"{P}/{args.plan}/audit" if args.plan else "/api/v1/audit"
    if client:
        events = client.call("GET", path)["events"]
    else:
        events = [plans.audit_view(e) for e in _book(args).audit_log(plans.OPERATOR, args.plan)]
    emit(args, {"events": events}, lambda r: table(
        [(e["at"], e["actor"], e["action"], e["target"], json.dumps(e["details"])) for e in r["events"]],
        ["when", "who", "what", "target", "details"]))
    return 0


def cmd_serve(args) -> int:
    import logging

    from mno.api import ServeOptions, serve

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")

    token = args.operator_token or os.environ.get("KINSIM_OPERATOR_TOKEN")
    if not token:
        token = plans.new_token(os.urandom)
        print(f"operator token (generated, shown once): {token}", file=sys.stderr)
    options = ServeOptions(
        host=args.host, port=args.port, dsn=args.dsn, schema=args.schema, operator_token=token,
        smdp_url=args.smdp_url, requester_id=args.requester_id, es2_cert=args.es2_cert, es2_key=args.es2_key,
        es2_ca=args.es2_ca, tls_cert=args.tls_cert, tls_key=args.tls_key, client_ca=args.client_ca,
        callback_token=args.callback_token, smdp_address=args.smdp_address, smds_address=args.smds_address,
        profile_dir=args.profile_dir, sweep_interval=args.sweep_interval, service_provider=args.service_provider)
    asyncio.run(serve(options))
    return 0


# --- the argparse tree ---------------------------------------------------------------------------------


def _connection_parent() -> argparse.ArgumentParser:
    parent = argparse.ArgumentParser(add_help=False)
    group = parent.add_argument_group("where")
    group.add_argument("--api", help="base URL of the plan service (env KINSIM_API)")
    group.add_argument("--token", help="bearer token: operator, owner or member (env KINSIM_TOKEN)")
    group.add_argument("--ca", help="CA file to verify an HTTPS plan service")
    group.add_argument("--dsn", default=None, help="without --api: PostgreSQL DSN (env KINSIM_PG_DSN)")
    group.add_argument("--schema", default="kinsim", help="PostgreSQL schema (default: kinsim)")
    return parent


def _qr_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--png", metavar="FILE", help="also write the QR code as PNG")
    parser.add_argument("--svg", metavar="FILE", help="also write the QR code as SVG")
    parser.add_argument("--no-qr", action="store_true", help="do not print the QR code in the terminal")


def register(subparsers, name: str, help_text: str) -> None:
    parser = subparsers.add_parser(name, help=help_text, description=__doc__.replace("``", ""),
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.set_defaults(func=lambda _args: (parser.print_help(), 2)[1])
    commands = parser.add_subparsers(dest="plan_command", metavar="COMMAND")
    parents = [json_parent(), _connection_parent()]

    def add(command: str, func, help_line: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(command, parents=parents, help=help_line, description=help_line)
        sub.set_defaults(func=func)
        return sub

    p = add("create", cmd_create, "create a plan with its owner (operator)")
    p.add_argument("--name", required=True, help="the plan's name (not shown on devices)")
    p.add_argument("--owner", required=True, help="the owner's display name")
    p.add_argument("--max-members", type=int, default=5, help="members including the owner (default 5)")
    p.add_argument("--pool", nargs="+", required=True, metavar="KIND=AMOUNT", help="e.g. data=20GB voice=600min sms=500")
    p.add_argument("--policy", choices=[x.value for x in plans.Policy], default="shared")
    p.add_argument("--period-days", type=int, default=30)

    add("list", cmd_list, "list plans (operator)")
    p = add("show", cmd_show, "show a plan")
    p.add_argument("plan")
    p = add("policy", cmd_policy, "set the quota policy: fixed caps, shared pool, or dynamic")
    p.add_argument("plan")
    p.add_argument("policy", choices=[x.value for x in plans.Policy])

    p = add("invite", cmd_invite, "invite a member: a linked profile, its activation code and QR code")
    p.add_argument("plan")
    p.add_argument("name", help="the member's display name")
    p.add_argument("--role", choices=("adult", "child"), default="adult")
    p.add_argument("--eid", help="bind the invitation to this eUICC (32 digits)")
    p.add_argument("--no-cc", action="store_true", help="no confirmation code")
    p.add_argument("--ttl-hours", type=float, help="validity of the invitation (default: the plan's)")
    _qr_options(p)

    p = add("device-change", cmd_device, "a fresh profile for a member's new device (the old one is revoked)")
    p.add_argument("plan")
    p.add_argument("member")
    p.add_argument("--eid", help="the new device's EID")
    _qr_options(p)

    p = add("invitations", cmd_invitations, "list invitations and their state")
    p.add_argument("plan")
    p = add("qr", cmd_qr, "show a pending invitation's QR code")
    p.add_argument("plan")
    p.add_argument("invitation")
    _qr_options(p)
    p = add("cancel", cmd_cancel, "withdraw a pending invitation")
    p.add_argument("plan")
    p.add_argument("invitation")

    p = add("members", cmd_members, "list members")
    p.add_argument("plan")
    p = add("caps", cmd_caps, "set a member's caps: KIND=AMOUNT, KIND=PERCENT%%, KIND=none")
    p.add_argument("plan")
    p.add_argument("member")
    p.add_argument("caps", nargs="+", metavar="KIND=CAP")
    p = add("usage", cmd_usage, "pool and per-member usage (or one member's records with --member)")
    p.add_argument("plan")
    p.add_argument("--member", help="list this member's own records (the member or the operator)")
    p.add_argument("--period", type=int, help="billing period index (default: current)")
    p = add("ingest", cmd_ingest, "account one usage record (operator; idempotent by --key)")
    p.add_argument("--kind", choices=plans.KINDS, required=True)
    p.add_argument("--amount", required=True, help="with unit, e.g. 150MB, 5min, 3")
    p.add_argument("--imsi")
    p.add_argument("--member-id")
    p.add_argument("--plan-id")
    p.add_argument("--key", help="idempotency key (default: random)")
    p.add_argument("--at", help="ISO 8601 time (default: now)")
    p = add("revoke", cmd_revoke, "remove a member: bar the profile and delete it remotely")
    p.add_argument("plan")
    p.add_argument("member")
    p = add("suspend", cmd_suspend, "suspend (or --resume) a member")
    p.add_argument("plan")
    p.add_argument("member")
    p.add_argument("--resume", action="store_true")
    p = add("token", cmd_token, "issue a new token for a member (the old one stops working)")
    p.add_argument("plan")
    p.add_argument("member")
    p = add("audit", cmd_audit, "the audit log of a plan (or all, for the operator)")
    p.add_argument("plan", nargs="?")

    p = commands.add_parser("serve", help="run the plan service (REST API, owner page, ES2+ callback)")
    p.set_defaults(func=cmd_serve)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--dsn", default=None, help="PostgreSQL DSN (env KINSIM_PG_DSN)")
    p.add_argument("--schema", default="kinsim")
    p.add_argument("--operator-token", help="(env KINSIM_OPERATOR_TOKEN; generated when absent)")
    p.add_argument("--smdp-url", help="ES2+ base URL of the SM-DP+")
    p.add_argument("--requester-id", help="our ES2+ functionRequesterIdentifier (the client certificate's CN)")
    p.add_argument("--es2-cert", help="ES2+ client certificate (PEM)")
    p.add_argument("--es2-key", help="ES2+ client key (PEM)")
    p.add_argument("--es2-ca", help="CA(s) of the SM-DP+'s TLS certificate")
    p.add_argument("--tls-cert", help="serve HTTPS with this certificate (PEM)")
    p.add_argument("--tls-key")
    p.add_argument("--client-ca", help="CA(s) of the SM-DP+'s client certificate on callbacks")
    p.add_argument("--callback-token", help="alternatively, a bearer token the SM-DP+ sends on callbacks")
    p.add_argument("--smdp-address", help="SM-DP+ address for activation codes (host[:port])")
    p.add_argument("--smds-address", help="SM-DS address for EID-bound invitations")
    p.add_argument("--profile-dir", help="hand personalised profiles to the SM-DP+ through this directory "
                   "(default: kinsim's uploadProfile on its ES2+ listener)")
    p.add_argument("--sweep-interval", type=float, default=60.0, help="seconds between expiry sweeps")
    p.add_argument("--service-provider", default="kinsim", help="serviceProviderName shown on devices")

"""The operator's REST API for family plans (aiohttp), its OpenAPI 3 document, the owner's web page
and the ES2+ HandleDownloadProgressInfo endpoint the SM-DP+ calls.

Every API call carries ``Authorization: Bearer <token>``: the operator's token, a plan owner's token
or a member's token. Which of them may call what is the rule table of ``mno.plans`` (``RULES``),
checked in the core; the table of routes below repeats it as ``x-kinsim-access`` in the OpenAPI
document, so clients and the tests can see it. The SM-DP+ authenticates with its TLS client
certificate (when the server runs TLS with a client CA) or a callback token.

Logs name the route template, the status and the caller's role: never ids, tokens, names or EIDs.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from aiohttp import web

from mno import plans, qr
from mno.es2_client import HANDLE_DOWNLOAD_PROGRESS_INFO, Es2Unavailable, parse_progress_info
from mno.plans import (
    Principal,
    audit_view,
    cap_json,
    invitation_view,
    iso,
    member_view,
    plan_view,
    profile_view,
    usage_record_view,
)
from mno.service import FamilyService
from mno.store import StoreUnavailable
from rsp import status
from rsp.errors import DecodeError, KinsimError, StatusCodeError
from rsp.es9_json import ADMIN_PROTOCOL, CONTENT_TYPE, encode_error

log = logging.getLogger("kinsim.mno.api")
API = "/api/v1"
WEB_DIR = Path(__file__).with_name("web")
WEB_FILES = {"index.html": "text/html", "app.js": "text/javascript", "style.css": "text/css"}
PRINCIPAL = web.RequestKey("principal_role", str)  # the caller's role, for the log line
SERVICE = web.AppKey("service", FamilyService)
CALLBACK = web.AppKey("callback", object)
MAX_BODY = 256 * 1024
MIN_OPERATOR_TOKEN = 20
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
    "Content-Security-Policy": "default-src 'self'; img-src 'self' blob:; frame-ancestors 'none'; base-uri 'none'",
}

Handler = Callable[[web.Request, Principal], Awaitable[web.StreamResponse]]


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    operation_id: str
    summary: str
    access: tuple[str, ...]  # public, operator, owner, self, member (any member of the plan), smdp
    handler: Callable[..., Awaitable[web.StreamResponse]]
    body: dict[str, Any] | None = None  # JSON schema of the request body
    response: str = "application/json"
    query: tuple[tuple[str, str, str], ...] = ()  # (name, type, description)

    @property
    def path_params(self) -> list[str]:
        return [part[1:-1] for part in self.path.split("/") if part.startswith("{")]


@dataclass(frozen=True)
class CallbackAuth:
    """How the SM-DP+ proves itself on the callback: a verified client certificate (optionally with a
    given subject CN) or a shared bearer token."""

    token_hash: str | None = None
    client_cert_cn: str | None = None
    accept_client_cert: bool = True

    def allows(self, request: web.Request) -> bool:
        token = _bearer(request)
        if token and self.token_hash and hmac.compare_digest(plans.token_hash(token), self.token_hash):
            return True
        cert = request.transport.get_extra_info("peercert") if request.transport else None
        if not (self.accept_client_cert and cert):
            return False
        if self.client_cert_cn is None:
            return True
        names = [value for rdn in cert.get("subject", ()) for key, value in rdn if key == "commonName"]
        return self.client_cert_cn in names


def _bearer(request: web.Request) -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def json_response(value: Any, status_code: int = 200) -> web.Response:
    return web.json_response(value, status=status_code, dumps=lambda v: json.dumps(v, separators=(",", ":")))


async def _json_body(request: web.Request) -> dict[str, Any]:
    if request.content_length is not None and request.content_length > MAX_BODY:
        raise plans.InvalidRequest("request body too large")
    try:
        body = await request.json()
    except (ValueError, UnicodeDecodeError):
        raise plans.InvalidRequest("the body must be a JSON object") from None
    if not isinstance(body, dict):
        raise plans.InvalidRequest("the body must be a JSON object")
    return body


def _service(request: web.Request) -> FamilyService:
    return request.app[SERVICE]


async def _core(request: web.Request, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    return await _service(request)._core(fn, *args, **kwargs)


def _period(request: web.Request) -> int | None:
    raw = request.query.get("period")
    if raw is None:
        return None
    try:
        return int(raw)
    except ValueError:
        raise plans.InvalidRequest("period must be an integer") from None


def _ttl(body: dict) -> timedelta | None:
    seconds = body.get("ttl_seconds")
    if seconds is None:
        return None
    if isinstance(seconds, bool) or not isinstance(seconds, int):
        raise plans.InvalidRequest("ttl_seconds must be an integer")
    try:
        return timedelta(seconds=seconds)
    except OverflowError:
        raise plans.InvalidRequest("ttl_seconds is out of range") from None


def _optional_bool(body: dict, name: str) -> bool | None:
    value = body.get(name)
    if value is not None and not isinstance(value, bool):
        raise plans.InvalidRequest(f"{name} must be true or false")
    return value


# --- handlers ----------------------------------------------------------------------------------------


async def whoami(request: web.Request, actor: Principal) -> web.Response:
    return json_response({"role": actor.role, "plan_id": actor.plan_id, "member_id": actor.member_id})


async def list_plans(request: web.Request, actor: Principal) -> web.Response:
    found = await _core(request, _service(request).book.list_plans, actor)
    return json_response({"plans": [plan_view(p, actor) for p in found]})


async def create_plan(request: web.Request, actor: Principal) -> web.Response:
    body = await _json_body(request)
    ttl = _ttl(body)
    extra = {"invitation_ttl": ttl} if ttl else {}
    for name in ("period_days", "template", "cc_required", "max_cc_attempts", "policy"):
        if name in body:
            extra[name] = body[name]
    plan, owner, token = await _core(
        request, _service(request).book.create_plan, actor, body.get("name"), body.get("owner_name"),
        body.get("max_members"), body.get("pool"), **extra)
    return json_response({"plan": plan_view(plan, actor), "owner": member_view(owner, actor), "owner_token": token}, 201)


async def get_plan(request: web.Request, actor: Principal) -> web.Response:
    plan = await _core(request, _service(request).book.get_plan, actor, request.match_info["plan_id"])
    return json_response(plan_view(plan, actor))


async def update_plan(request: web.Request, actor: Principal) -> web.Response:
    body = await _json_body(request)
    unknown = set(body) - {"name", "policy", "pool", "max_members"}
    if unknown:
        raise plans.InvalidRequest(f"cannot change {', '.join(sorted(unknown))}")
    plan = await _core(request, _service(request).book.update_plan, actor, request.match_info["plan_id"], **body)
    return json_response(plan_view(plan, actor))


async def list_members(request: web.Request, actor: Principal) -> web.Response:
    found = await _core(request, _service(request).book.list_members, actor, request.match_info["plan_id"])
    return json_response({"members": [member_view(m, actor) for m in found]})


def _invite_view(invite, actor: Principal) -> dict[str, Any]:
    order, inv = invite.order, invite.invitation
    base = f"{API}/plans/{inv.plan_id}/invitations/{inv.invitation_id}"
    return {
        "member": member_view(order.member, actor),
        "invitation": invitation_view(inv, inv.created_at),
        "activation_code": invite.activation_code,
        "qr_payload": qr.qr_payload(invite.activation_code) if invite.activation_code else None,
        "confirmation_code": order.confirmation_code,  # to deliver by a second channel
        "member_token": order.member_token,
        "qr": {"png": base + "/qr.png", "svg": base + "/qr.svg"},
    }


async def invite_member(request: web.Request, actor: Principal) -> web.Response:
    body = await _json_body(request)
    invite = await _service(request).invite(
        actor, request.match_info["plan_id"], body.get("display_name"), body.get("role", "adult"),
        eid=body.get("eid"), cc_required=_optional_bool(body, "cc_required"), ttl=_ttl(body))
    return json_response(_invite_view(invite, actor), 201)


async def get_member(request: web.Request, actor: Principal) -> web.Response:
    member, profiles = await _core(request, _service(request).book.get_member, actor,
                                   request.match_info["plan_id"], request.match_info["member_id"])
    view = member_view(member, actor)
    if plans.sees_private(actor, member):
        view["profiles"] = [profile_view(p) for p in profiles]
    return json_response(view)


async def revoke_member(request: web.Request, actor: Principal) -> web.Response:
    revocation = await _service(request).revoke_member(actor, request.match_info["plan_id"],
                                                       request.match_info["member_id"])
    return json_response({"member": member_view(revocation.member, actor),
                          "profiles_barred": len(revocation.bar_imsis),
                          "remote_deletions": len(revocation.remote_deletes)})


async def suspend_member(request: web.Request, actor: Principal) -> web.Response:
    member = await _service(request).set_suspended(actor, request.match_info["plan_id"],
                                                   request.match_info["member_id"], True)
    return json_response(member_view(member, actor))


async def resume_member(request: web.Request, actor: Principal) -> web.Response:
    member = await _service(request).set_suspended(actor, request.match_info["plan_id"],
                                                   request.match_info["member_id"], False)
    return json_response(member_view(member, actor))


async def issue_profile(request: web.Request, actor: Principal) -> web.Response:
    body = await _json_body(request)
    invite = await _service(request).issue_profile(
        actor, request.match_info["plan_id"], request.match_info["member_id"], eid=body.get("eid"),
        cc_required=_optional_bool(body, "cc_required"), ttl=_ttl(body))
    return json_response(_invite_view(invite, actor), 201)


async def rotate_token(request: web.Request, actor: Principal) -> web.Response:
    token = await _core(request, _service(request).book.rotate_token, actor, request.match_info["plan_id"],
                        request.match_info["member_id"])
    return json_response({"token": token}, 201)


async def set_caps(request: web.Request, actor: Principal) -> web.Response:
    body = await _json_body(request)
    caps = await _core(request, _service(request).book.set_caps, actor, request.match_info["plan_id"],
                       request.match_info["member_id"], body)
    return json_response({"caps": {c.kind: cap_json(c) for c in caps}})


async def list_caps(request: web.Request, actor: Principal) -> web.Response:
    caps = await _core(request, _service(request).book.caps, actor, request.match_info["plan_id"])
    grouped: dict[str, dict] = {}
    for cap in caps:
        grouped.setdefault(cap.member_id, {})[cap.kind] = cap_json(cap)
    return json_response({"caps": grouped})


async def member_usage(request: web.Request, actor: Principal) -> web.Response:
    records = await _core(request, _service(request).book.member_records, actor, request.match_info["plan_id"],
                          request.match_info["member_id"], _period(request))
    return json_response({"records": [usage_record_view(r) for r in records]})


async def member_notices(request: web.Request, actor: Principal) -> web.Response:
    found = await _core(request, _service(request).book.notices, actor, request.match_info["plan_id"],
                        request.match_info["member_id"])
    return json_response({"notices": [{"at": iso(n.at), "kind": n.kind, **n.details} for n in found]})


async def plan_usage(request: web.Request, actor: Principal) -> web.Response:
    view = await _core(request, _service(request).book.plan_usage, actor, request.match_info["plan_id"],
                       _period(request))
    return json_response(view)


async def list_invitations(request: web.Request, actor: Principal) -> web.Response:
    service = _service(request)
    found = await _core(request, service.book.list_invitations, actor, request.match_info["plan_id"])
    now = service.book.now()
    return json_response({"invitations": [invitation_view(i, now) for i in found]})


async def get_invitation(request: web.Request, actor: Principal) -> web.Response:
    service = _service(request)
    inv = await _core(request, service.book.get_invitation, actor, request.match_info["plan_id"],
                      request.match_info["invitation_id"])
    return json_response(invitation_view(inv, service.book.now()))


async def cancel_invitation(request: web.Request, actor: Principal) -> web.Response:
    service = _service(request)
    closed = await service.cancel_invitation(actor, request.match_info["plan_id"], request.match_info["invitation_id"])
    return json_response(invitation_view(closed.invitation, service.book.now()))


async def _pending_code(request: web.Request, actor: Principal) -> str:
    service = _service(request)
    inv = await _core(request, service.book.get_invitation, actor, request.match_info["plan_id"],
                      request.match_info["invitation_id"])
    if inv.effective_state(service.book.now()) is not plans.InvitationState.PENDING or not inv.activation_code:
        raise plans.Conflict("only a pending invitation has a QR code")
    return inv.activation_code


async def invitation_png(request: web.Request, actor: Principal) -> web.Response:
    return web.Response(body=qr.png(await _pending_code(request, actor)), content_type="image/png")


async def invitation_svg(request: web.Request, actor: Principal) -> web.Response:
    return web.Response(body=qr.svg(await _pending_code(request, actor)), content_type="image/svg+xml")


async def plan_audit(request: web.Request, actor: Principal) -> web.Response:
    events = await _core(request, _service(request).book.audit_log, actor, request.match_info["plan_id"])
    return json_response({"events": [audit_view(e) for e in events]})


async def all_audit(request: web.Request, actor: Principal) -> web.Response:
    events = await _core(request, _service(request).book.audit_log, actor, None)
    return json_response({"events": [{**audit_view(e), "plan_id": e.plan_id} for e in events]})


def _usage_time(value: Any) -> datetime:
    if not isinstance(value, str):
        raise plans.InvalidRequest("at must be an ISO 8601 timestamp with a time zone")
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise plans.InvalidRequest("at must be an ISO 8601 timestamp with a time zone") from None
    if moment.tzinfo is None:
        raise plans.InvalidRequest("at must carry a time zone")
    return moment


async def _ingest_one(request: web.Request, actor: Principal, record: Any) -> dict[str, Any]:
    if not isinstance(record, dict):
        raise plans.InvalidRequest("each usage record is a JSON object")
    result = await _core(
        request, _service(request).book.ingest_usage, actor, kind=record.get("kind"), amount=record.get("amount"),
        at=_usage_time(record.get("at")), idempotency_key=record.get("idempotency_key"),
        plan_id=record.get("plan_id"), member_id=record.get("member_id"), imsi=record.get("imsi"))
    return {"duplicate": result.duplicate, "charged": result.record.charged, "excess": result.record.excess,
            "throttled": result.throttled, "member_remaining": result.member_remaining,
            "pool_remaining": result.pool_remaining, "member_id": result.record.member_id,
            "period": result.record.period}


async def ingest_usage(request: web.Request, actor: Principal) -> web.Response:
    body = await _json_body(request)
    if "records" not in body:
        return json_response(await _ingest_one(request, actor, body))
    records = body["records"]
    if not isinstance(records, list) or len(records) > 1000:
        raise plans.InvalidRequest("records must be a list of at most 1000 usage records")
    results = []
    for record in records:  # each record is its own transaction: a retry resends them all safely
        try:
            results.append(await _ingest_one(request, actor, record))
        except plans.PlanError as exc:
            results.append({"error": {"type": type(exc).__name__, "message": str(exc)}})
    return json_response({"results": results})


async def openapi(request: web.Request, actor: Principal | None = None) -> web.Response:
    return json_response(openapi_document())


async def health(request: web.Request, actor: Principal | None = None) -> web.Response:
    return json_response({"status": "ok"})


async def web_page(request: web.Request, actor: Principal | None = None) -> web.StreamResponse:
    name = request.match_info.get("name") or "index.html"
    if name not in WEB_FILES:
        raise web.HTTPNotFound()
    return web.Response(body=(WEB_DIR / name).read_bytes(), content_type=WEB_FILES[name], charset="utf-8")


async def handle_download_progress_info(request: web.Request, actor: Principal | None = None) -> web.Response:
    """ES2+.HandleDownloadProgressInfo (SGP.22 5.3.5): 204 when handled, an ES2+ failure otherwise."""
    if not request.app[CALLBACK].allows(request):
        return json_response({"error": {"type": "Unauthenticated", "message": "unknown function requester"}}, 401)
    try:
        body = await request.json()
        requester, event = parse_progress_info(body)
        await _service(request).handle_progress(requester, event)
    except (ValueError, DecodeError) as exc:
        return _es2_failure(StatusCodeError(status.INVALID_REQUEST, str(exc)))
    except plans.NotFound:
        return _es2_failure(StatusCodeError(status.ICCID_UNKNOWN, "no profile of ours has that ICCID"))
    except plans.Forbidden as exc:
        return _es2_failure(StatusCodeError(status.FUNCTION_REQUESTER_NOT_ALLOWED, str(exc)))
    return web.Response(status=204)


def _es2_failure(error: StatusCodeError) -> web.Response:
    return web.Response(body=json.dumps(encode_error(error)).encode("utf-8"),
                        headers={"Content-Type": CONTENT_TYPE, "X-Admin-Protocol": ADMIN_PROTOCOL})


# --- the route table (also the OpenAPI document) -----------------------------------------------------

OPERATOR, OWNER, SELF, MEMBER = "operator", "owner", "self", "member"
P, PM, PI = API + "/plans/{plan_id}", API + "/plans/{plan_id}/members/{member_id}", \
    API + "/plans/{plan_id}/invitations/{invitation_id}"
_POOL = {"type": "object", "properties": {k: {"type": "integer", "minimum": 0, "description": plans.UNITS[k]}
                                          for k in plans.KINDS}, "additionalProperties": False}
_CAP = {"oneOf": [{"type": "null"},
                  {"type": "object", "properties": {"amount": {"type": "integer", "minimum": 0}}, "required": ["amount"]},
                  {"type": "object", "properties": {"share": {"type": "number", "minimum": 0, "maximum": 1}},
                   "required": ["share"]}]}  # fmt: skip
_USAGE = {"type": "object", "required": ["kind", "amount", "at", "idempotency_key"], "properties": {
    "kind": {"enum": list(plans.KINDS)}, "amount": {"type": "integer", "minimum": 1},
    "at": {"type": "string", "format": "date-time"}, "idempotency_key": {"type": "string", "maxLength": 128},
    "imsi": {"type": "string"}, "member_id": {"type": "string"}, "plan_id": {"type": "string"}}}
_INVITE = {"type": "object", "required": ["display_name"], "properties": {
    "display_name": {"type": "string", "maxLength": plans.MAX_NAME}, "role": {"enum": ["adult", "child"]},
    "eid": {"type": "string", "pattern": "^[0-9]{32}$", "description": "bind the invitation to this eUICC"},
    "cc_required": {"type": "boolean"}, "ttl_seconds": {"type": "integer"}}}

ROUTES: tuple[Route, ...] = (
    Route("GET", "/openapi.json", "getOpenApi", "This document", ("public",), openapi),
    Route("GET", "/health", "health", "Liveness", ("public",), health),
    Route("GET", API + "/me", "whoAmI", "The caller's role, plan and member", (OPERATOR, OWNER, MEMBER), whoami),
    Route("GET", API + "/plans", "listPlans", "Every plan", (OPERATOR,), list_plans),
    Route("POST", API + "/plans", "createPlan", "A plan with its owner; returns the owner's token", (OPERATOR,),
          create_plan, body={"type": "object", "required": ["name", "owner_name", "max_members", "pool"],
                             "properties": {"name": {"type": "string"}, "owner_name": {"type": "string"},
                                            "max_members": {"type": "integer"}, "pool": _POOL,
                                            "policy": {"enum": [p.value for p in plans.Policy]},
                                            "period_days": {"type": "integer"}, "cc_required": {"type": "boolean"},
                                            "ttl_seconds": {"type": "integer"}}}),
    Route("GET", P, "getPlan", "The plan (members see the shared parts)", (OPERATOR, OWNER, MEMBER), get_plan),
    Route("PATCH", P, "updatePlan", "Rename, change the policy; pool and size: operator only", (OPERATOR, OWNER),
          update_plan, body={"type": "object", "properties": {
              "name": {"type": "string"}, "policy": {"enum": [p.value for p in plans.Policy]}, "pool": _POOL,
              "max_members": {"type": "integer"}}}),
    Route("GET", P + "/members", "listMembers", "Members (no EIDs, ICCIDs or IMSIs of others)", (OPERATOR, OWNER),
          list_members),
    Route("POST", P + "/members", "inviteMember", "Invite a member: a linked profile on the SM-DP+",
          (OPERATOR, OWNER), invite_member, body=_INVITE),
    Route("GET", PM, "getMember", "One member; their own profiles only to themselves and the operator",
          (OPERATOR, OWNER, SELF), get_member),
    Route("DELETE", PM, "revokeMember", "Remove a member: bar the profile, delete it remotely", (OPERATOR, OWNER),
          revoke_member),
    Route("POST", PM + "/suspend", "suspendMember", "Bar the member's profile for now", (OPERATOR, OWNER),
          suspend_member),
    Route("POST", PM + "/resume", "resumeMember", "Lift a suspension", (OPERATOR, OWNER), resume_member),
    Route("POST", PM + "/profiles", "issueProfile", "A fresh profile (new device); the old one is revoked",
          (OPERATOR, OWNER, SELF), issue_profile, body={"type": "object", "properties": {
              "eid": {"type": "string"}, "cc_required": {"type": "boolean"}, "ttl_seconds": {"type": "integer"}}}),
    Route("POST", PM + "/token", "rotateToken", "A new token for the member; the old one stops working",
          (OPERATOR, SELF), rotate_token),
    Route("PUT", PM + "/caps", "setCaps", "Caps per usage kind: an amount or a share of the pool",
          (OPERATOR, OWNER), set_caps, body={"type": "object", "properties": {k: _CAP for k in plans.KINDS}}),
    Route("GET", PM + "/usage", "memberUsage", "The member's own usage records", (OPERATOR, SELF), member_usage,
          query=(("period", "integer", "billing period index (default: current)"),)),
    Route("GET", PM + "/notices", "memberNotices", "What the member was told (throttling)", (SELF,),
          member_notices),
    Route("GET", P + "/usage", "planUsage", "Pool totals; per-member totals for the owner, own line for members",
          (OPERATOR, OWNER, MEMBER), plan_usage, query=(("period", "integer", "billing period index"),)),
    Route("GET", P + "/caps", "listCaps", "Every member's caps", (OPERATOR, OWNER), list_caps),
    Route("GET", P + "/invitations", "listInvitations", "Invitations and their state", (OPERATOR, OWNER),
          list_invitations),
    Route("GET", PI, "getInvitation", "One invitation", (OPERATOR, OWNER), get_invitation),
    Route("DELETE", PI, "cancelInvitation", "Withdraw a pending invitation", (OPERATOR, OWNER), cancel_invitation),
    Route("GET", PI + "/qr.png", "invitationQrPng", "QR code of a pending invitation (PNG)", (OPERATOR, OWNER),
          invitation_png, response="image/png"),
    Route("GET", PI + "/qr.svg", "invitationQrSvg", "QR code of a pending invitation (SVG)", (OPERATOR, OWNER),
          invitation_svg, response="image/svg+xml"),
    Route("GET", P + "/audit", "planAudit", "Who changed what, when", (OPERATOR, OWNER), plan_audit),
    Route("GET", API + "/audit", "allAudit", "The whole audit log", (OPERATOR,), all_audit),
    Route("POST", API + "/usage", "ingestUsage", "Usage records from the network (idempotent)", (OPERATOR,),
          ingest_usage, body={"oneOf": [_USAGE, {"type": "object", "required": ["records"],
                                                  "properties": {"records": {"type": "array", "items": _USAGE}}}]}),
    Route("POST", HANDLE_DOWNLOAD_PROGRESS_INFO, "handleDownloadProgressInfo",
          "ES2+.HandleDownloadProgressInfo from the SM-DP+ (SGP.22 5.3.5)", ("smdp",),
          handle_download_progress_info, body={"type": "object"}),
)


def openapi_document() -> dict[str, Any]:
    paths: dict[str, dict] = {}
    for route in ROUTES:
        operation: dict[str, Any] = {
            "operationId": route.operation_id, "summary": route.summary, "x-kinsim-access": list(route.access),
            "parameters": [{"name": n, "in": "path", "required": True, "schema": {"type": "string"}}
                           for n in route.path_params]
                          + [{"name": n, "in": "query", "required": False, "schema": {"type": t}, "description": d}
                             for n, t, d in route.query],
            "responses": {
                "200": {"description": "OK", "content": {route.response: {"schema": {}}}},
                "401": {"$ref": "#/components/responses/Error"}, "403": {"$ref": "#/components/responses/Error"},
                "404": {"$ref": "#/components/responses/Error"}, "409": {"$ref": "#/components/responses/Error"},
            },
        }  # fmt: skip
        if route.access == ("public",):
            operation["security"] = []
        elif route.access == ("smdp",):
            operation["security"] = [{"smdpClientCertificate": []}, {"bearerAuth": []}]
            operation["responses"] = {"204": {"description": "handled"}}
        if route.body is not None:
            operation["requestBody"] = {"required": True, "content": {"application/json": {"schema": route.body}}}
        paths.setdefault(route.path, {})[route.method.lower()] = operation
    return {
        "openapi": "3.0.3",
        "info": {"title": "kinsim family plans (operator side)", "version": "1",
                 "description": "Shared family plans on standard SGP.22 consumer RSP. Amounts: data in bytes, "
                                "voice in seconds, SMS in messages."},
        "paths": paths,
        "security": [{"bearerAuth": []}],
        "components": {
            "securitySchemes": {
                "bearerAuth": {"type": "http", "scheme": "bearer",
                               "description": "operator, plan owner or member token"},
                "smdpClientCertificate": {"type": "mutualTLS"},
            },
            "responses": {"Error": {"description": "refused", "content": {"application/json": {"schema": {
                "type": "object", "properties": {"error": {"type": "object", "properties": {
                    "type": {"type": "string"}, "message": {"type": "string"}}}}}}}}},
        },
    }  # fmt: skip


# --- the application ---------------------------------------------------------------------------------


def _wrap(route: Route) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    needs_token = route.access not in (("public",), ("smdp",))

    async def handler(request: web.Request) -> web.StreamResponse:
        actor = None
        if needs_token:
            actor = await _core(request, _service(request).book.authenticate, _bearer(request))
            request[PRINCIPAL] = actor.role
        return await route.handler(request, actor)

    return handler


def _error(status_code: int, kind: str, message: str, **extra: Any) -> web.Response:
    return json_response({"error": {"type": kind, "message": message, **extra}}, status_code)


def _operator(request: web.Request) -> bool:
    return request.get(PRINCIPAL) == "operator"


@web.middleware
async def errors_and_logs(request: web.Request, handler) -> web.StreamResponse:
    try:
        response = await handler(request)
    except plans.PlanError as exc:
        response = _error(exc.http_status, type(exc).__name__, str(exc))
        if isinstance(exc, plans.Unauthenticated):
            response.headers["WWW-Authenticate"] = "Bearer"
    # What went wrong behind us (SM-DP+, authenticator) is told in detail to the operator only: those
    # sentences name ICCIDs, IMSIs and EIDs, which owners and members must not see of one another.
    except StatusCodeError as exc:  # the SM-DP+ refused an ES2+ call
        message = exc.message if _operator(request) else exc.code.describe()
        response = _error(502, "SmdpRefused", message, subjectCode=exc.subject_code, reasonCode=exc.reason_code)
    except Es2Unavailable as exc:
        response = _error(502, "SmdpUnavailable", str(exc) if _operator(request) else "the SM-DP+ is not reachable")
    except StoreUnavailable:
        response = _error(503, "StoreUnavailable", "the operator database is not available")
    except DecodeError as exc:
        response = _error(400, "InvalidRequest", str(exc))
    except KinsimError as exc:
        message = str(exc) if _operator(request) else "the operator's systems could not complete the request"
        response = _error(503, type(exc).__name__, message)
    except web.HTTPException as exc:  # 404 of an unknown file, the redirect of /
        response = web.Response(status=exc.status, body=exc.body, headers=exc.headers)
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    resource = request.match_info.route.resource
    template = resource.canonical if resource is not None else "-"
    log.info("%s %s -> %s (%s)", request.method, template, response.status, request.get(PRINCIPAL, "-"))
    return response


def create_app(service: FamilyService, callback: CallbackAuth | None = None,
               sweep_interval: float | None = None) -> web.Application:
    """The API, the OpenAPI document, the owner's page (/owner/) and the ES2+ callback.

    ``sweep_interval`` (seconds) runs the invitation expiry sweep in the background.
    """
    app = web.Application(middlewares=[errors_and_logs], client_max_size=MAX_BODY)
    app[SERVICE] = service
    app[CALLBACK] = callback or CallbackAuth()
    for route in ROUTES:
        app.router.add_route(route.method, route.path, _wrap(route), name=route.operation_id)
    app.router.add_get("/owner/", web_page, name="ownerPage")
    app.router.add_get("/owner/{name}", web_page, name="ownerPageFile")
    app.router.add_get("/", _redirect_owner, name="root")
    if sweep_interval:
        app.cleanup_ctx.append(_sweeper(sweep_interval))
    return app


async def _redirect_owner(request: web.Request) -> web.StreamResponse:
    raise web.HTTPFound("/owner/")


def _sweeper(interval: float):
    async def context(app: web.Application):
        async def loop() -> None:
            while True:
                await asyncio.sleep(interval)
                try:
                    await app[SERVICE].expire_invitations()
                    await app[SERVICE].retry_remote_deletes()
                except Exception as exc:  # the only enforcement of expiry must outlive one bad round
                    log.warning("background sweep failed: %s", type(exc).__name__)

        task = asyncio.create_task(loop())
        yield
        task.cancel()

    return context


@dataclass
class ServerTls:
    """HTTPS for the API: our certificate; ``client_ca`` lets the SM-DP+ present a client certificate."""

    cert_file: str
    key_file: str
    client_ca: str | None = None

    def context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.cert_file, self.key_file)
        if self.client_ca:
            context.load_verify_locations(self.client_ca)
            context.verify_mode = ssl.CERT_OPTIONAL  # browsers have none; the callback route insists
        return context


# --- running it ----------------------------------------------------------------------------------------


@dataclass
class ServeOptions:
    host: str = "127.0.0.1"
    port: int = 8080
    dsn: str | None = None
    schema: str = "kinsim"
    operator_token: str = ""
    smdp_url: str | None = None
    requester_id: str | None = None
    es2_cert: str | None = None
    es2_key: str | None = None
    es2_ca: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    client_ca: str | None = None
    callback_token: str | None = None
    smdp_address: str | None = None
    smds_address: str | None = None
    profile_dir: str | None = None
    sweep_interval: float | None = 60.0
    service_provider: str = "kinsim"


def build_service(options: ServeOptions) -> FamilyService:
    """The service on PostgreSQL with the authenticator table, ES2+ client and profile hand-over."""
    from mno.authenticator import Authenticator
    from mno.es2_client import Es2Client, client_ssl_context
    from mno.plans import OperatorConfig, PlanBook
    from mno.service import DirectorySink, Es2RemoteManager, HttpProfileSink, ServiceConfig
    from mno.store import PgStore

    if len(options.operator_token) < MIN_OPERATOR_TOKEN:  # it opens every plan: no guessable passwords
        raise KinsimError(f"the operator token must be at least {MIN_OPERATOR_TOKEN} characters "
                          "(leave it out and one is generated)")
    store = PgStore(options.dsn, schema=options.schema)
    store.migrate()
    config = OperatorConfig(service_provider_name=options.service_provider,
                            operator_token_hashes=(plans.token_hash(options.operator_token),))
    es2 = None
    if options.smdp_url:
        if not (options.requester_id and options.es2_cert and options.es2_key and options.es2_ca):
            raise KinsimError("ES2+ needs --requester-id, --es2-cert, --es2-key and --es2-ca")
        es2 = Es2Client(options.smdp_url, options.requester_id,
                        ssl_context=client_ssl_context(options.es2_cert, options.es2_key, options.es2_ca))
    sink = DirectorySink(options.profile_dir) if options.profile_dir else (HttpProfileSink(es2) if es2 else None)
    remote = Es2RemoteManager(es2, options.smds_address) if es2 else None
    return FamilyService(PlanBook(store, config), Authenticator(store.authenticator_store()), es2, sink, remote,
                         config=ServiceConfig(smdp_address=options.smdp_address, smds_address=options.smds_address))


async def serve(options: ServeOptions) -> None:
    service = build_service(options)
    callback = CallbackAuth(plans.token_hash(options.callback_token) if options.callback_token else None,
                            accept_client_cert=options.client_ca is not None)
    app = create_app(service, callback, sweep_interval=options.sweep_interval)
    tls = ServerTls(options.tls_cert, options.tls_key, options.client_ca).context() if options.tls_cert else None
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, options.host, options.port, ssl_context=tls).start()
    scheme = "https" if tls else "http"
    print(f"plan service on {scheme}://{options.host}:{options.port}/ (owner page: /owner/)", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        if service.es2 is not None:
            await service.es2.close()
        await runner.cleanup()

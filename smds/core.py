"""The SM-DS (Discovery Server) core, sans-IO: Event Records kept per EID (SGP.22 3.6), registered and
deleted by SM-DP+s over ES12 (5.9), and retrieved by LPAs over ES11 (5.8) after common mutual
authentication with the eUICC (3.1.2 / 3.6.3).

An eUICC only ever sees the events registered for the EID in its own certificate: the EID comes from
the eUICC certificate after its chain (eUICC -> EUM -> CI) and euiccSignature1 verified, never from
anything the LPA could choose. ctxParams1.matchingId absent or empty asks for every event of that EID;
an EventID there asks for that one record (the second step of a cascade, 3.6.3), and an EventID the
EID does not have is "Event Record unknown".

Each ES11 session serves exactly one AuthenticateClient: the session is closed by the first
AuthenticateClient that names it, whatever the outcome, so a replayed step finds an unknown
transactionId. Clock and randomness are injected; the store is the only state.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cached_property

from asn1crypto import core
from asn1crypto import x509 as asn1_x509
from cryptography import x509

from certs.pki import Credential, Pki
from certs.validate import Role, authority_key_id, pkid, registered_id, validate_chain
from rsp import crypto, es9_json, status
from rsp import messages as m
from rsp.errors import CertificateError, DecodeError, KinsimError, StatusCode, StatusCodeError
from rsp.ids import validate_eid
from rsp.status import (
    EID_INVALID,
    EUICC_REPORTED_ERROR,
    EVENT_ID_INVALID,
    EVENT_RECORD_ALREADY_EXISTS,
    INVALID_SMDS_ADDRESS,
)
from smds.store import EventRecord, Session, Store

DEFAULT_SESSION_TIMEOUT = timedelta(minutes=5)
SUPPORTED_SVN_MAJOR = 2  # the v2 message set: eUICCs announcing SVN 2.x.y
TRANSACTION_ID_LENGTH = 16
CHALLENGE_LENGTH = 16
MAX_EVENT_ID_LENGTH = 255

# Status codes of 5.8 / 5.9 that rsp.status does not name yet (subject and reason codes of 5.2.6).

_HOST_LABEL = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
_IPV4 = re.compile(r"^\d{1,3}(\.\d{1,3}){3}$")


class ConfigError(KinsimError):
    """An SM-DS deployment setting is missing or inconsistent."""


def utc_now() -> datetime:
    return datetime.now(UTC)


# --- configuration ------------------------------------------------------------------------------


@dataclass(frozen=True)
class DsCredentials:
    """CERT.DSauth.ECDSA with its key, issued under one CI (SGP.22 4.5.2.1.0.5)."""

    ci: x509.Certificate
    ds_auth: Credential

    @cached_property
    def ci_pkid(self) -> bytes:
        return pkid(self.ci)

    @cached_property
    def certificate_value(self) -> asn1_x509.Certificate:
        return asn1_x509.Certificate.load(self.ds_auth.cert_der)


@dataclass(frozen=True)
class SmdsConfig:
    """Everything the core needs, already loaded: no file is read after this."""

    address: str  # the SM-DS address LPAs contact (host or host:port), compared case-insensitively
    credentials: tuple[DsCredentials, ...]
    trusted_cis: tuple[x509.Certificate, ...]  # CIs whose eUICCs (EUM chains) we accept
    session_timeout: timedelta = DEFAULT_SESSION_TIMEOUT

    def __post_init__(self):
        if not self.credentials:
            raise ConfigError("the SM-DS needs at least one DSauth certificate with its key")
        split_address(self.address, "the SM-DS address")
        if self.session_timeout <= timedelta(0):
            raise ConfigError(f"the session timeout must be positive, got {self.session_timeout.total_seconds()} s")

    @cached_property
    def smds_oid(self) -> str | None:
        return registered_id(self.credentials[0].ds_auth.cert)

    @cached_property
    def trusted_cis_by_pkid(self) -> dict[bytes, x509.Certificate]:
        return {pkid(ci): ci for ci in self.trusted_cis}

    @classmethod
    def from_pkis(cls, pkis: Sequence[Pki], *, address: str, extra_cis: Sequence[x509.Certificate] = (),
                  now: datetime | None = None, **settings) -> SmdsConfig:
        """One DSauth credential per PKI (one per CI); every PKI's CI is trusted, plus ``extra_cis``."""
        now = now or utc_now()
        credentials = []
        for pki in pkis:
            if pki.ds_auth is None or pki.ds_auth.key is None:
                raise ConfigError("the PKI has no DSauth certificate with its key (ds_auth.der, ds_auth.key.pem)")
            try:
                validate_chain(pki.ds_auth.cert, Role.DS_AUTH, trusted_cis=[pki.ci.cert], now=now)
            except CertificateError as exc:
                raise ConfigError(f"DSauth: {exc}") from None
            credentials.append(DsCredentials(pki.ci.cert, pki.ds_auth))
        cis = {pkid(c): c for c in [p.ci.cert for p in pkis] + list(extra_cis)}
        return cls(address=address, credentials=tuple(credentials), trusted_cis=tuple(cis.values()), **settings)


# --- addresses ----------------------------------------------------------------------------------


def split_address(address: str, what: str = "address") -> tuple[str, int | None]:
    """(host in lower case, port or None) of "host", "host:port" or "[v6]:port"; DecodeError otherwise."""
    text = address.strip()
    host, port = text, None
    head, sep, tail = text.rpartition(":")
    if sep and tail.isdigit() and (head.endswith("]") or ":" not in head):
        host, port = head, int(tail)
        if not 1 <= port <= 65535:
            raise DecodeError(f"{what} {address!r} has port {port} outside 1..65535")
    host = host.strip("[]").lower()
    labels = host.split(".")
    is_ip = _IPV4.match(host) or (":" in host and all(c in "0123456789abcdef:." for c in host))
    if not host or len(host) > 253 or not (is_ip or all(_HOST_LABEL.match(label) for label in labels)):
        raise DecodeError(f"{what} {address!r} is not a host name or IP address (without scheme or path)")
    return host, port


def same_address(a: str, b: str) -> bool:
    return a.strip().lower() == b.strip().lower()


# --- requests and results -----------------------------------------------------------------------


@dataclass(frozen=True)
class Requester:
    """Who calls ES12: the identity its TLS client certificate proves and the hosts it names.

    An RSP server may only register events that point at itself (a host of its certificate) and may
    only delete its own records. ``operator`` is the SM-DS's own operator (the CLI): no such limits.
    """

    name: str
    hosts: frozenset[str] = frozenset()
    operator: bool = False


@dataclass(frozen=True)
class Discovery:
    """The outcome of ES11.AuthenticateClient: the authenticated EID and its event entries."""

    transaction_id: bytes
    eid: str
    events: tuple[EventRecord, ...]


# --- the core -----------------------------------------------------------------------------------


class Smds:
    """ES11 and ES12 against one store. Methods raise StatusCodeError with the spec's code."""

    def __init__(self, store: Store, config: SmdsConfig, *, clock: Callable[[], datetime] = utc_now,
                 rng: Callable[[int], bytes] = os.urandom):
        self.store = store
        self.config = config
        self._clock = clock
        self._rng = rng

    def _now(self) -> datetime:
        now = self._clock()
        if now.tzinfo is None:
            raise ValueError("the clock must return timezone-aware datetimes")
        return now.astimezone(UTC)

    # --- ES12 (SGP.22 5.9) ----------------------------------------------------------------------

    def register_event(self, requester: Requester, *, eid: str, rsp_server_address: str, event_id: str,
                       forwarding_indicator: bool = False) -> EventRecord:
        """ES12.RegisterEvent (5.9.1). This SM-DS is a root SM-DS: nothing is forwarded (3.6.1)."""
        eid = _checked_eid(eid)
        _check_event_id(event_id)
        try:
            host, _ = split_address(rsp_server_address, "rspServerAddress")
        except DecodeError as exc:
            raise StatusCodeError(status.INVALID_SMDP_ADDRESS, str(exc)) from None
        if not requester.operator and host not in requester.hosts:
            raise StatusCodeError(status.FUNCTION_REQUESTER_NOT_ALLOWED,
                                  f"{requester.name} may only register events for its own address "
                                  f"({', '.join(sorted(requester.hosts)) or 'none in its certificate'}), "
                                  f"not {rsp_server_address}")
        record = EventRecord(eid=eid, event_id=event_id, rsp_server_address=rsp_server_address.strip(),
                             forwarding_indicator=forwarding_indicator, registrant=requester.name,
                             registered_at=self._now())
        with self.store.transaction():
            if not self.store.add_event(record):
                raise StatusCodeError(EVENT_RECORD_ALREADY_EXISTS,
                                      f"an event {event_id!r} is already registered for EID {eid}")
        return record

    def delete_event(self, requester: Requester, *, eid: str, event_id: str) -> EventRecord:
        """ES12.DeleteEvent (5.9.2): only the registrant (or the operator) may delete a record."""
        eid = _checked_eid(eid)
        with self.store.transaction():
            record = self.store.event(eid, event_id)
            # Another server's record answers like a missing one: its existence is not disclosed.
            if record is None or not (requester.operator or record.registrant == requester.name):
                raise StatusCodeError(status.EVENT_RECORD_UNKNOWN,
                                      f"no event {event_id!r} for EID {eid} registered by {requester.name}")
            self.store.delete_event(eid, event_id)
        return record

    def events(self, eid: str | None = None) -> list[EventRecord]:
        return self.store.events(eid)

    # --- ES11.InitiateAuthentication (5.8.1) ----------------------------------------------------

    def initiate_authentication(self, *, euicc_challenge: bytes, euicc_info1: m.EUICCInfo1,
                                smds_address: str) -> dict:
        """Open an ES11 session; the response fields by their JSON names (es9_json binding)."""
        if not same_address(smds_address, self.config.address):
            raise StatusCodeError(INVALID_SMDS_ADDRESS,
                                  f"this is SM-DS {self.config.address}, not {smds_address}")
        if len(euicc_challenge) != CHALLENGE_LENGTH:
            raise StatusCodeError(status.INVALID_REQUEST, f"euiccChallenge must be {CHALLENGE_LENGTH} bytes")
        svn = euicc_info1["svn"].native
        if svn[0] != SUPPORTED_SVN_MAJOR:
            raise StatusCodeError(status.SVN_UNSUPPORTED,
                                  f"eUICC SVN {'.'.join(map(str, svn))} is not supported (v{SUPPORTED_SVN_MAJOR}.x)")
        credentials = self._credentials_for(euicc_info1["euiccCiPKIdListForVerification"].native)
        ci_pkid = self._signing_ci(euicc_info1["euiccCiPKIdListForSigning"].native)
        now = self._now()
        transaction_id, server_challenge = self._rng(TRANSACTION_ID_LENGTH), self._rng(CHALLENGE_LENGTH)
        signed1 = m.ServerSigned1({
            "transactionId": transaction_id,
            "euiccChallenge": euicc_challenge,
            "serverAddress": self.config.address,
            "serverChallenge": server_challenge,
        })
        signature1 = crypto.sign(credentials.ds_auth.signing_key(), signed1.dump())
        with self.store.transaction():
            self.store.purge_sessions(now)
            self.store.add_session(Session(transaction_id, euicc_challenge, server_challenge, ci_pkid,
                                           created_at=now, expires_at=now + self.config.session_timeout))
        return {
            "transactionId": transaction_id,
            "serverSigned1": signed1,
            "serverSignature1": es9_json.Signature(signature1),
            "euiccCiPKIdToBeUsed": core.OctetString(ci_pkid),
            "serverCertificate": credentials.certificate_value,
        }

    def _credentials_for(self, verification_pkids: list[bytes]) -> DsCredentials:
        """Our DSauth certificate under the first CI the eUICC can verify (its list order)."""
        by_ci = {c.ci_pkid: c for c in self.config.credentials}
        for ci_pkid in verification_pkids:
            if ci_pkid in by_ci:
                return by_ci[ci_pkid]
        raise StatusCodeError(status.CI_PK_UNKNOWN, "the eUICC can verify no CI this SM-DS has a DSauth "
                                                    f"certificate under ({_pkids(verification_pkids)})")

    def _signing_ci(self, signing_pkids: list[bytes]) -> bytes:
        """euiccCiPKIdToBeUsed: the first CI the eUICC signs under that we trust."""
        for ci_pkid in signing_pkids:
            if ci_pkid in self.config.trusted_cis_by_pkid:
                return ci_pkid
        raise StatusCodeError(status.CI_PK_UNKNOWN,
                              f"the eUICC signs under no CI this SM-DS trusts ({_pkids(signing_pkids)})")

    # --- ES11.AuthenticateClient (5.8.2) --------------------------------------------------------

    def authenticate_client(self, *, transaction_id: bytes,
                            authenticate_server_response: m.AuthenticateServerResponse) -> Discovery:
        """Authenticate the eUICC and hand out the event entries of its EID; the session ends here."""
        now = self._now()
        refusal: StatusCodeError | None = None
        with self.store.transaction():
            session = self.store.session(transaction_id)
            if session is None or session.closed is not None or now > session.expires_at:
                raise StatusCodeError(status.TRANSACTION_ID_UNKNOWN,
                                      f"transactionId {transaction_id.hex().upper()} is unknown, used or expired")
            try:
                eid, matching_id = self._authenticate_euicc(session, authenticate_server_response, now)
                events = self._select_events(eid, matching_id)
            except StatusCodeError as exc:
                refusal = exc
                self.store.close_session(transaction_id, f"refused {exc.subject_code}/{exc.reason_code}")
            else:
                self.store.close_session(transaction_id, "completed")
        if refusal is not None:
            raise refusal
        return Discovery(transaction_id, eid, tuple(events))

    def _authenticate_euicc(self, session: Session, response: m.AuthenticateServerResponse,
                            now: datetime) -> tuple[str, str | None]:
        """(EID from the verified eUICC certificate, matchingId or None) -- or StatusCodeError."""
        if response.name != "authenticateResponseOk":
            code = response.chosen["authenticateErrorCode"]
            raise StatusCodeError(EUICC_REPORTED_ERROR,
                                  f"the eUICC refused the SM-DS in AuthenticateServer: {code.native} ({int(code)})")
        ok = response.chosen
        signed1 = ok["euiccSigned1"]
        if signed1["transactionId"].native != session.transaction_id:
            raise StatusCodeError(status.TRANSACTION_ID_UNKNOWN, "euiccSigned1 belongs to another transaction")
        if not same_address(signed1["serverAddress"].native, self.config.address):
            raise StatusCodeError(INVALID_SMDS_ADDRESS,
                                  f"the eUICC signed for server {signed1['serverAddress'].native!r}")
        if signed1["serverChallenge"].native != session.server_challenge:
            raise StatusCodeError(status.EUICC_SIGNATURE_INVALID, "euiccSigned1 answers another serverChallenge")
        chain = self._verify_euicc_chain(ok["euiccCertificate"], ok["eumCertificate"], session.ci_pkid, now)
        # Over the received bytes of euiccSigned1 (dump() of the parsed value returns them unchanged).
        if not crypto.verify(chain.public_key, signed1.dump(), ok["euiccSignature1"].native):
            raise StatusCodeError(status.EUICC_SIGNATURE_INVALID, "euiccSignature1 does not verify")
        matching_id = signed1["ctxParams1"].chosen["matchingId"].native  # None when absent
        return chain.eid or "", matching_id or None

    def _verify_euicc_chain(self, euicc_value, eum_value, ci_pkid: bytes, now: datetime):
        euicc = _certificate(euicc_value, status.EUICC_CERT_INVALID, "eUICC")
        eum = _certificate(eum_value, status.EUM_CERT_INVALID, "EUM")
        ci = self.config.trusted_cis_by_pkid.get(ci_pkid)
        issuer = authority_key_id(eum)
        if ci is None or issuer != ci_pkid:
            raise StatusCodeError(status.CI_PK_UNKNOWN,
                                  f"the EUM certificate chains to CI {issuer.hex() if issuer else '-'}, not to the "
                                  f"CI {ci_pkid.hex()} this session asked the eUICC to sign under")
        try:
            validate_chain(eum, Role.EUM, trusted_cis=[ci], now=now)
        except CertificateError as exc:
            code = status.EUM_CERT_EXPIRED if exc.expired else status.EUM_CERT_INVALID
            raise StatusCodeError(code, str(exc)) from None
        try:
            return validate_chain(euicc, Role.EUICC, intermediates=[eum], trusted_cis=[ci], now=now)
        except CertificateError as exc:
            code = status.EUICC_CERT_EXPIRED if exc.expired else status.EUICC_CERT_INVALID
            raise StatusCodeError(code, str(exc)) from None

    def _select_events(self, eid: str, matching_id: str | None) -> list[EventRecord]:
        if matching_id is None:
            return self.store.events(eid)
        record = self.store.event(eid, matching_id)
        if record is None:
            raise StatusCodeError(status.EVENT_RECORD_UNKNOWN, f"no event {matching_id!r} for this eUICC")
        return [record]


# --- helpers ------------------------------------------------------------------------------------


def _checked_eid(eid: str) -> str:
    try:
        return validate_eid(eid)
    except DecodeError as exc:
        raise StatusCodeError(EID_INVALID, str(exc)) from None


def _check_event_id(event_id: str) -> None:
    if not 1 <= len(event_id) <= MAX_EVENT_ID_LENGTH or not event_id.isprintable():
        raise StatusCodeError(EVENT_ID_INVALID,
                              f"eventId must be 1..{MAX_EVENT_ID_LENGTH} printable characters, got {event_id!r}")


def _certificate(value, code: StatusCode, what: str) -> x509.Certificate:
    try:
        return x509.load_der_x509_certificate(value.dump())
    except ValueError as exc:
        raise StatusCodeError(code, f"unreadable {what} certificate: {exc}") from None


def _pkids(pkids: list[bytes]) -> str:
    return ", ".join(p.hex() for p in pkids) or "empty list"

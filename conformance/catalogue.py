"""The conformance catalogue: every test case with its ID, the SGP.22 section it checks, its
preconditions, the outcome a conformant peer produces, and the features it needs.

Two interfaces: ``ES9+`` cases talk to an SM-DP+ under test (the runner plays LPA and eUICC);
``ES10`` cases talk to an eUICC under test (the runner plays LPA and SM-DP+). The code of each case
lives in ``conformance.es9_cases`` / ``conformance.es10_cases`` under the same ID.

Features say what a case needs. Target features describe the peer under test (a target that lacks
one is run with ``--skip-feature NAME``); runner features name material the runner must hold (an
EUM or CI private key to forge test certificates). Order kinds say which download order an ES9+
case consumes (see ``conformance.orders``). Section numbers refer to SGP.22 v2.5.
"""

from __future__ import annotations

from dataclasses import dataclass

ES9 = "ES9+"
ES10 = "ES10"

# Download orders an ES9+ case needs (conformance.orders explains how each kind is obtained).
SHARED = "shared"  # a released order no conformant target lets the case consume
FRESH = "fresh"  # a released order the case consumes
CC = "cc"  # a released order with a confirmation code, consumed
UNRELEASED = "unreleased"  # a confirmed order not yet released (ES2+ releaseFlag false)
OTHER_EID = "other-eid"  # a released order bound to an EID that is not the runner's
ORDER_KINDS = (SHARED, FRESH, CC, UNRELEASED, OTHER_EID)

FEATURES = {
    # SM-DP+ features
    "confirmation-code": "download orders protected by a confirmation code (SGP.22 3.1.3)",
    "cancel-session": "ES9+.CancelSession (5.6.5)",
    "eid-binding": "download orders bound to one EID (ES2+.DownloadOrder with an EID)",
    "release": "orders confirmed without release (ES2+.ConfirmOrder releaseFlag false, 5.3.2)",
    "download-attempt-limit": "a limit on download attempts per order (8.8.5 / 6.4)",
    "admin-protocol-header": "refusal of requests without the X-Admin-Protocol header (6.5.1)",
    "notifications": "ES9+.HandleNotification (5.6.4)",
    # eUICC features
    "profile-install": "cases that install (and then delete) a test profile on the card",
    "profile-management": "ES10c enable, disable and delete of an installed profile (5.7.16-5.7.18)",
    # runner material
    "euicc-eum-key": "the runner's test eUICC identity includes the EUM private key",
    "euicc-ci-key": "the runner's test eUICC identity includes its CI's private key",
    "smdp-ci-key": "the runner's SM-DP+ PKI includes the CI private key",
}


@dataclass(frozen=True)
class Case:
    id: str
    interface: str
    section: str
    title: str
    preconditions: str
    expected: str
    negative: bool = False
    features: tuple[str, ...] = ()
    order: str | None = None  # ES9+ only: the kind of download order the case uses
    order_count: int = 1  # how many orders of that kind it takes

    def __post_init__(self) -> None:
        unknown = [f for f in self.features if f not in FEATURES]
        if unknown:
            raise ValueError(f"{self.id}: unknown features {unknown}")
        if self.order is not None and self.order not in ORDER_KINDS:
            raise ValueError(f"{self.id}: unknown order kind {self.order!r}")

    @property
    def kind(self) -> str:
        return "negative" if self.negative else "positive"


def _es9(id_, section, title, expected, *, pre="", negative=True, features=(), order=None, count=1) -> Case:
    return Case(f"ES9-{id_}", ES9, section, title, pre or "a fresh RSP session", expected, negative,
                tuple(features), order, count)


def _es10(id_, section, title, expected, *, pre="", negative=True, features=()) -> Case:
    return Case(f"ES10-{id_}", ES10, section, title, pre or "a new RSP session (GetEUICCChallenge)", expected,
                negative, tuple(features))


_AFTER_INIT = "InitiateAuthentication succeeded"
_AFTER_AUTH = "AuthenticateClient succeeded on a released order"
_AFTER_AUTH_CC = "AuthenticateClient succeeded on an order with a confirmation code"
_AUTHENTICATED = "AuthenticateServer succeeded"
_PREPARED = "PrepareDownload succeeded; a Bound Profile Package bound to the card's otPK"

ES9_CASES = (
    _es9("DOWNLOAD-001", "3.1.3, 5.6.1-5.6.4",
         "complete profile download with a released order",
         "serverSigned1/smdpSigned2/smdpSign verify under DPauth/DPpb chains to the CI; the BPP opens with "
         "the session keys, its metadata equals profileMetadata, its profile decodes; the installation "
         "result is acknowledged (HTTP 204)",
         pre="a released order", negative=False, features=("notifications",), order=FRESH),
    _es9("DOWNLOAD-002", "3.1.3, 5.6.2",
         "complete download of an order with a confirmation code",
         "ccRequiredFlag is true; with the right hashCc the SM-DP+ returns the bound profile package",
         pre="a released order with a confirmation code", negative=False, features=("confirmation-code",),
         order=CC),
    _es9("INITAUTH-001", "5.6.1, 3.1.2",
         "InitiateAuthentication answers with a signed serverSigned1",
         "transactionId equals serverSigned1.transactionId; serverSigned1 carries our euiccChallenge and the "
         "SM-DP+ address; serverSignature1 verifies with CERT.DPauth, which chains to the CI; "
         "euiccCiPKIdToBeUsed is one of our signing CIs",
         negative=False),
    _es9("INITAUTH-002", "5.6.1", "smdpAddress names another SM-DP+",
         "Failed, 8.8.1 / 3.8 (SM-DP+ Address refused)"),
    _es9("INITAUTH-003", "5.6.1", "euiccInfo1 announces an unsupported SVN (255.0.0)",
         "Failed, 8.8.3 / 3.1 (SVN unsupported)"),
    _es9("INITAUTH-004", "5.6.1", "euiccCiPKIdListForSigning names only an unknown CI",
         "Failed, 8.8.2 / 3.1 (security configuration unsupported)"),
    _es9("INITAUTH-005", "5.6.1", "euiccCiPKIdListForVerification names only an unknown CI",
         "Failed, 8.8.4 / 3.7 (no CERT.DPauth for the eUICC's CIs)"),
    _es9("AUTHCLIENT-001", "5.6.3", "AuthenticateClient naming an unknown transactionId (signed for the live session)",
         "Failed, 8.10.1 / 3.9 (TransactionId unknown)", pre=_AFTER_INIT, order=SHARED),
    _es9("AUTHCLIENT-002", "5.6.3, 3.1.2", "the same AuthenticateClient replayed after it succeeded",
         "the replay fails with 8.10.1 / 3.9 (the session has moved on)", pre=_AFTER_AUTH, order=FRESH),
    _es9("AUTHCLIENT-003", "5.6.3", "euiccSignature1 does not match euiccSigned1",
         "Failed, 8.1 / 6.1 (eUICC verification failed)", pre=_AFTER_INIT, order=SHARED),
    _es9("AUTHCLIENT-004", "5.6.3, 3.1.2", "euiccSigned1 echoes a wrong serverChallenge (correctly signed)",
         "Failed, 8.1 / 6.1 (eUICC verification failed)", pre=_AFTER_INIT, order=SHARED),
    _es9("AUTHCLIENT-005", "5.6.3", "euiccSigned1 carries another transactionId (correctly signed)",
         "Failed, 8.10.1 / 3.9 (TransactionId unknown)", pre=_AFTER_INIT, order=SHARED),
    _es9("AUTHCLIENT-006", "5.6.3, 4.5.2", "EUM and eUICC certificates from a CI the SM-DP+ does not trust",
         "Failed, 8.11.1 / 3.9 (CI public key unknown)", pre=_AFTER_INIT, order=SHARED),
    _es9("AUTHCLIENT-007", "5.6.3, 4.5.2.1.0.3", "expired EUM certificate",
         "Failed, 8.1.2 / 6.3 (EUM certificate expired)", pre=_AFTER_INIT, features=("euicc-ci-key",),
         order=SHARED),
    _es9("AUTHCLIENT-008", "5.6.3, 4.5.2.1.0.2", "expired eUICC certificate",
         "Failed, 8.1.3 / 6.3 (eUICC certificate expired)", pre=_AFTER_INIT, features=("euicc-eum-key",),
         order=SHARED),
    _es9("AUTHCLIENT-009", "5.6.3, 4.5.2", "eUICC certificate carrying another role's certificate policy",
         "Failed, 8.1.3 / 6.1 (eUICC certificate invalid)", pre=_AFTER_INIT, features=("euicc-eum-key",),
         order=SHARED),
    _es9("AUTHCLIENT-010", "5.6.3, 4.5.2", "eUICC certificate whose signature is not the EUM's",
         "Failed, 8.1.3 / 6.1 (eUICC certificate invalid)", pre=_AFTER_INIT, order=SHARED),
    _es9("AUTHCLIENT-011", "5.6.3", "matching ID that no order has",
         "Failed, 8.2.6 / 3.8 (Matching ID refused)", pre=_AFTER_INIT),
    _es9("AUTHCLIENT-012", "5.6.3", "order bound to another EID",
         "Failed, 8.1.1 / 3.8 (EID refused)", pre="a released order linked to another EID",
         features=("eid-binding",), order=OTHER_EID),
    _es9("AUTHCLIENT-013", "5.6.3", "order confirmed but not released",
         "Failed, 8.2 / 1.2 (profile not released)", pre="a confirmed, unreleased order",
         features=("release",), order=UNRELEASED),
    _es9("AUTHCLIENT-014", "5.6.3", "download attempts beyond the order's limit",
         "each attempt is cancelled (postponed); once the limit is reached AuthenticateClient fails with "
         "8.8.5 / 6.4 (maximum number of attempts exceeded)",
         pre="a released order", features=("download-attempt-limit", "cancel-session"), order=FRESH),
    _es9("GETBPP-001", "5.6.2, 3.1.3", "GetBoundProfilePackage before AuthenticateClient (out of order)",
         "Failed, 8.10.1 / 3.9 (TransactionId unknown)", pre=_AFTER_INIT),
    _es9("GETBPP-002", "5.6.2", "the same GetBoundProfilePackage replayed after it succeeded",
         "the replay fails with 8.10.1 / 3.9", pre=_AFTER_AUTH, order=FRESH),
    _es9("GETBPP-003", "5.6.2", "euiccSignature2 does not match euiccSigned2",
         "Failed, 8.1 / 6.1 (eUICC verification failed)", pre=_AFTER_AUTH, order=FRESH),
    _es9("GETBPP-004", "5.6.2", "euiccSigned2 carries another transactionId (correctly signed)",
         "Failed, 8.10.1 / 3.9 (TransactionId unknown)", pre=_AFTER_AUTH, order=FRESH),
    _es9("GETBPP-005", "5.6.2, 3.1.3", "confirmation code required but no hashCc",
         "Failed, 8.2.7 / 2.2 (confirmation code missing)", pre=_AFTER_AUTH_CC,
         features=("confirmation-code",), order=CC),
    _es9("GETBPP-006", "5.6.2, 3.1.3", "wrong confirmation code",
         "Failed, 8.2.7 / 3.8 (confirmation code refused)", pre=_AFTER_AUTH_CC,
         features=("confirmation-code",), order=CC),
    _es9("GETBPP-007", "5.6.2, 3.1.3", "wrong confirmation codes up to the attempt limit",
         "8.2.7 / 3.8 for each wrong code, then 8.2.7 / 6.4 (retries exceeded); afterwards even the right "
         "code cannot download the order", pre="a released order with a confirmation code",
         features=("confirmation-code",), order=CC),
    _es9("GETBPP-008", "5.6.2", "otPK.EUICC.ECKA of an earlier binding used again",
         "Failed, 8.2 / 3.7 (BPP not available for a new binding) or 8.2.10 / 3.8 (rebinding refused)",
         pre="a BPP was bound to the same otPK.EUICC.ECKA for another order", order=FRESH, count=2),
    _es9("CANCEL-001", "5.6.5", "CancelSession (postponed) after AuthenticateClient",
         "Executed-Success; the order stays downloadable: a new session on the same matching ID passes "
         "AuthenticateClient", pre=_AFTER_AUTH, negative=False, features=("cancel-session",), order=FRESH),
    _es9("CANCEL-002", "5.6.5", "euiccCancelSessionSignature does not verify",
         "Failed, 8.1 / 6.1 (eUICC verification failed)", pre=_AFTER_AUTH, features=("cancel-session",),
         order=FRESH),
    _es9("CANCEL-003", "5.6.5", "euiccCancelSessionSigned names another SM-DP+ OID",
         "Failed, 8.8 / 3.10 (SM-DP+ OID invalid)", pre=_AFTER_AUTH, features=("cancel-session",),
         order=FRESH),
    _es9("CANCEL-004", "5.6.5", "CancelSession naming an unknown transactionId (signed for the live session)",
         "Failed, 8.10.1 / 3.9 (TransactionId unknown)", pre=_AFTER_AUTH, features=("cancel-session",),
         order=FRESH),
    _es9("NOTIF-001", "5.6.4, 3.5", "HandleNotification of a signed delete notification",
         "acknowledged with HTTP 204 and no body", pre="none", negative=False, features=("notifications",)),
    _es9("PROTO-001", "6.5.1", "request without the X-Admin-Protocol header",
         "Failed, 1.3.2 / 3.1 (unsupported protocol version)", pre="none",
         features=("admin-protocol-header",)),
    _es9("PROTO-002", "6.5.1", "request body that is not JSON", "Failed, 1.3.1 / 2.1 (invalid)", pre="none"),
    _es9("PROTO-003", "6.5.1, 5.6.3", "AuthenticateClient without authenticateServerResponse",
         "Failed, 1.3.1 / 2.2 (mandatory element missing)", pre=_AFTER_INIT),
    _es9("PROTO-004", "6.5.1, 5.6.1", "euiccInfo1 is truncated DER (malformed ASN.1)",
         "Failed, 1.3.1 / 2.1 (invalid)", pre="none"),
    _es9("PROTO-005", "6.5.1", "euiccInfo1 is not base64", "Failed, 1.3.1 / 2.1 (invalid)", pre="none"),
    _es9("PROTO-006", "6.5.1, 5.6.3", "transactionId of 17 bytes (oversized)",
         "Failed, 1.3.1 / 2.1 (invalid)", pre="none"),
    _es9("PROTO-007", "6.5.1, 5.7.8", "euiccInfo1.svn of 4 bytes (violates SIZE(3))",
         "Failed, 1.3.1 / 2.1 (invalid)", pre="none"),
)

ES10_CASES = (
    _es10("INFO-001", "5.7.8", "GetEUICCInfo1",
          "SVN 2.x; non-empty CI lists; the runner's CI is in euiccCiPKIdListForVerification", negative=False,
          pre="none"),
    _es10("INFO-002", "5.7.8", "GetEUICCInfo2 agrees with EUICCInfo1",
          "same SVN and CI lists as EUICCInfo1", negative=False, pre="none"),
    _es10("EID-001", "5.7.20", "GetEID", "a 32-digit EID with valid check digits (SGP.29)", negative=False,
          pre="none"),
    _es10("CHAL-001", "5.7.7", "GetEUICCChallenge", "16 bytes, a different value on each call",
          negative=False, pre="none"),
    _es10("AUTHSRV-001", "5.7.13, 3.1.2", "AuthenticateServer with a valid request",
          "authenticateResponseOk echoing transactionId, serverAddress, serverChallenge and ctxParams1; "
          "euiccSignature1 verifies with CERT.EUICC, which chains through CERT.EUM to a CI; its EID is GetEID's",
          negative=False),
    _es10("AUTHSRV-002", "5.7.13", "serverSignature1 does not verify", "authenticateResponseError invalidSignature(2)"),
    _es10("AUTHSRV-003", "5.7.13", "serverSigned1 carries another euiccChallenge",
          "authenticateResponseError euiccChallengeMismatch(6)"),
    _es10("AUTHSRV-004", "5.7.13", "euiccCiPKIdToBeUsed names a CI the card does not have",
          "authenticateResponseError ciPKUnknown(7)"),
    _es10("AUTHSRV-005", "5.7.13, 4.5.2", "CERT.DPauth issued by a CI the card does not trust",
          "authenticateResponseError ciPKUnknown(7) or invalidCertificate(1)"),
    _es10("AUTHSRV-006", "5.7.13, 4.5.2.1.0.4", "expired CERT.DPauth", "authenticateResponseError invalidCertificate(1)",
          features=("smdp-ci-key",)),
    _es10("AUTHSRV-007", "5.7.13, 4.5.2", "CERT.DPpb (wrong role) as serverCertificate",
          "authenticateResponseError invalidCertificate(1)"),
    _es10("AUTHSRV-008", "5.7.13", "CERT.DPauth without the SM-DP+ OID (no registeredID)",
          "authenticateResponseError invalidOid(5)", features=("smdp-ci-key",)),
    _es10("AUTHSRV-009", "5.7.13", "AuthenticateServer replayed in the same session",
          "authenticateResponseError noSessionContext(4)", pre=_AUTHENTICATED),
    _es10("AUTHSRV-010", "5.7.13, 4.5.2", "CERT.DPauth whose signature is not the CI's",
          "authenticateResponseError invalidCertificate(1)"),
    _es10("AUTHSRV-011", "5.7.13, 2.6.5", "CERT.DPauth whose key names an unknown curve (namedCurve OID)",
          "authenticateResponseError unsupportedCurve(3) or invalidCertificate(1), not an error status word"),
    _es10("PREP-001", "5.7.5, 3.1.3", "PrepareDownload with a valid request",
          "downloadResponseOk; euiccSigned2 carries the transactionId and an otPK on the DPpb curve; "
          "euiccSignature2 verifies over euiccSigned2 || smdpSignature2", negative=False, pre=_AUTHENTICATED),
    _es10("PREP-002", "5.7.5", "smdpSignature2 does not verify", "downloadResponseError invalidSignature(2)",
          pre=_AUTHENTICATED),
    _es10("PREP-003", "5.7.5", "smdpSigned2 for another transactionId",
          "downloadResponseError invalidTransactionId(5)", pre=_AUTHENTICATED),
    _es10("PREP-004", "5.7.5", "CERT.DPpb of another SM-DP+ (OID differs from CERT.DPauth's)",
          "downloadResponseError invalidCertificate(1)", pre=_AUTHENTICATED, features=("smdp-ci-key",)),
    _es10("PREP-005", "5.7.5", "PrepareDownload replayed in the same session",
          "downloadResponseError noSessionContext(4)", pre="PrepareDownload succeeded"),
    _es10("PREP-006", "5.7.5, 4.5.2.1.0.5", "expired CERT.DPpb", "downloadResponseError invalidCertificate(1)",
          pre=_AUTHENTICATED, features=("smdp-ci-key",)),
    _es10("LOAD-001", "5.7.6, 2.5.5, 5.7.9-5.7.11, 5.7.15, 5.7.18",
          "LoadBoundProfilePackage of a TS.48 test profile",
          "successResult with an ISD-P AID; euiccSignPIR verifies; the profile is listed (disabled); the "
          "install notification is listed, retrievable and removable; DeleteProfile removes the profile",
          negative=False, pre=_PREPARED, features=("profile-install",)),
    _es10("LOAD-002", "5.7.6, 5.5.1", "smdpSign does not verify",
          "errorResult initialiseSecureChannel(0) / invalidSignature(2); no profile installed", pre=_PREPARED,
          features=("profile-install",)),
    _es10("LOAD-003", "5.7.6, 5.5.1", "InitialiseSecureChannel for another transactionId",
          "errorResult initialiseSecureChannel(0) / invalidTransactionId(3); no profile installed",
          pre=_PREPARED, features=("profile-install",)),
    _es10("LOAD-004", "5.7.6, 2.6.6", "MAC failure in a LoadProfileElements ('86') segment",
          "errorResult loadProfileElements(5) / scp03tSecurityError(8); no profile installed", pre=_PREPARED,
          features=("profile-install",)),
    _es10("LOAD-005", "5.7.6, 2.5.5", "truncated LoadProfileElements ('86') segment",
          "errorResult loadProfileElements(5) / scp03tStructureError(7); no profile installed", pre=_PREPARED,
          features=("profile-install",)),
    _es10("LOAD-006", "5.7.6", "profile ICCID differs from the metadata ICCID",
          "errorResult loadProfileElements(5) / installFailedDueToIccidMismatch(13); no profile installed",
          pre=_PREPARED, features=("profile-install",)),
    _es10("LOAD-007", "5.7.6", "a profile whose ICCID is already installed",
          "errorResult storeMetadata(2) / installFailedDueToIccidAlreadyExistsOnEuicc(9); one profile remains",
          pre="a profile with that ICCID is installed", features=("profile-install",)),
    _es10("LOAD-008", "5.7.6, 2.5.5", "BPP segments out of order (StoreMetadata before ConfigureISDP)",
          "errorResult with scp03tStructureError(7); no profile installed", pre=_PREPARED,
          features=("profile-install",)),
    _es10("CANCEL-001", "5.7.14", "CancelSession after AuthenticateServer",
          "cancelSessionResponseOk; euiccCancelSessionSigned carries the transactionId, the DPauth OID and "
          "the reason; its signature verifies", negative=False, pre=_AUTHENTICATED),
    _es10("CANCEL-002", "5.7.14", "CancelSession for another transactionId",
          "cancelSessionResponseError invalidTransactionId(5)", pre=_AUTHENTICATED),
    _es10("APDU-001", "5.7.2", "STORE DATA carrying truncated AuthenticateServer DER (malformed ASN.1)",
          "an error status word (not 9000, not 6F00); the card keeps answering", pre="none"),
    _es10("APDU-002", "5.7.2", "STORE DATA carrying an unknown ES10 request tag",
          "an error status word (not 9000, not 6F00); the card keeps answering", pre="none"),
    _es10("APDU-003", "5.7.2, 5.7.13", "AuthenticateServer with a 17-byte transactionId (oversized)",
          "an error status word (not 6F00) or authenticateResponseError; the card keeps answering",
          pre="none"),
    _es10("PROF-001", "5.7.16-5.7.18", "EnableProfile, DisableProfile and DeleteProfile of an installed profile",
          "each answers ok(0); GetProfilesInfo shows the state after each step", negative=False,
          pre="a test profile installed by the runner", features=("profile-install", "profile-management")),
)

CASES = ES9_CASES + ES10_CASES
BY_ID = {case.id: case for case in CASES}
if len(BY_ID) != len(CASES):
    raise RuntimeError("duplicate conformance case IDs")


def cases_for(interface: str) -> tuple[Case, ...]:
    return tuple(case for case in CASES if case.interface == interface)

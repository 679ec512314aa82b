"""The ISD-R of the software eUICC: ES10a, ES10b and ES10c (SGP.22 5.7) over one card store.

``Isdr.handle(request_der) -> response_der`` is all the APDU layer sees (STORE DATA reassembly is
euicc_sim.apdu's). Requests that cannot be parsed raise DecodeError (the card answers '6A80');
every parsed request gets its function's result enum. A function either commits one new state
(profiles, notifications, counters together) or changes nothing.

Download and ES8+ processing live in es10b_auth.py and es8_loader.py; this module keeps the
session between them and turns their outcome into ProfileInstallationResult notifications.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime

from asn1crypto import x509 as asn1_x509
from cryptography.hazmat.primitives.serialization import Encoding

from euicc_sim import es10b_auth, policy, profile_info, rpm
from euicc_sim.apdu import SW_CONDITIONS_NOT_SATISFIED
from euicc_sim.es8_loader import (
    INSTALL_INTERRUPTED,
    PE_OK,
    BppLoader,
    BppLoadError,
    LoadedProfile,
    continues_bpp,
    euicc_response,
    starts_bpp,
)
from euicc_sim.identity import EuiccIdentity
from euicc_sim.state import CardState, Notification, Profile, isdp_aid
from euicc_sim.store import STATE_FILE, CardStore, StoreCorrupt, blob_id
from rsp import crypto
from rsp import messages as m
from rsp import messages_v3 as v3
from rsp.errors import ApduError, DecodeError
from rsp.ids import eid_to_bytes, iccid_from_bcd, iccid_to_bcd
from rsp.tlv import read_header

# Result enums (RSPDefinitions, rsp.status).
OK, NOT_FOUND, WRONG_STATE, DISALLOWED_BY_POLICY = 0, 1, 2, 3
NOTHING_TO_DELETE = 1
NO_RESULT_AVAILABLE = 1  # RetrieveNotificationsList notificationsListResultError
INCORRECT_INPUT_VALUES = 1  # ProfileInfoListError

INSTALL, ENABLE, DISABLE, DELETE = (
    "notificationInstall",
    "notificationEnable",
    "notificationDisable",
    "notificationDelete",
)
EID_TAG = b"\x5a"

_log = logging.getLogger(__name__)


class Isdr:
    """One card's ISD-R. Not thread-safe: one APDU at a time, as on a real card."""

    def __init__(
        self,
        identity: EuiccIdentity,
        store: CardStore,
        *,
        clock: Callable[[], datetime] | None = None,
        rng: Callable[[int], bytes] | None = None,
    ):
        self.identity = identity
        self._store = store
        self._clock = clock or (lambda: datetime.now(UTC))
        self._rng = rng or os.urandom
        try:
            self._state = CardState.from_json(store.state)
        except DecodeError as exc:
            raise StoreCorrupt(f"{store.directory / STATE_FILE}: {exc}") from None
        self._session: es10b_auth.Session | None = None
        self._loader: BppLoader | None = None
        self._retained_otsk = None  # otSK.EUICC.ECKA kept for a retried download (5.7.5)
        self._listeners: list[Callable[[], None]] = []
        self._checks = policy.InstallChecks(identity.config, lambda: self._state)
        self._handlers = {
            0xBF3C: (m.EuiccConfiguredAddressesRequest, self._configured_addresses),
            0xBF3F: (m.SetDefaultDpAddressRequest, self._set_default_dp_address),
            0xBF20: (m.GetEuiccInfo1Request, lambda _: self.euicc_info1().dump()),
            0xBF22: (m.GetEuiccInfo2Request, lambda _: self.euicc_info2().dump()),
            0xBF2E: (m.GetEuiccChallengeRequest, self._get_challenge),
            0xBF38: (m.AuthenticateServerRequest, self._authenticate_server),
            0xBF21: (m.PrepareDownloadRequest, self._prepare_download),
            0xBF41: (m.CancelSessionRequest, self._cancel_session),
            0xBF28: (m.ListNotificationRequest, self._list_notifications),
            0xBF2B: (m.RetrieveNotificationsListRequest, self._retrieve_notifications),
            0xBF30: (m.NotificationSentRequest, self._remove_notification),
            0xBF43: (
                m.GetRatRequest,
                lambda _: m.GetRatResponse({"rat": self.identity.config.rat_value()}).dump(),
            ),
            0xBF2D: (m.ProfileInfoListRequest, self._profiles_info),
            0xBF31: (m.EnableProfileRequest, self._enable),
            0xBF32: (m.DisableProfileRequest, self._disable),
            0xBF33: (m.DeleteProfileRequest, self._delete),
            0xBF34: (m.EuiccMemoryResetRequest, self._memory_reset),
            0xBF3E: (m.GetEuiccDataRequest, self._get_eid),
            0xBF29: (m.SetNicknameRequest, self._set_nickname),
            0xBF44: (v3.LoadRpmPackageRequest, self._load_rpm_package),
        }

    # --- the APDU layer's entry points --------------------------------------------------------

    def handle(self, request: bytes) -> bytes:
        """One complete ES10 request (or one LoadBoundProfilePackage segment) in, its response out."""
        if starts_bpp(request) or continues_bpp(request):
            return self._load_segment(request)
        tag, _, _ = read_header(request)
        if tag not in self._handlers:
            raise DecodeError(f"no ES10 function has the request tag {tag:X}")
        spec, function = self._handlers[tag]
        return function(m.decode(spec, request))

    def reset(self) -> None:
        """Power-on or reset: the RSP session ends; an unfinished package is reported (5.7.6)."""
        if self._loader is not None:
            self._fail_download(BppLoadError(self._loader.command, INSTALL_INTERRUPTED, "the card was reset"))
        self._session = None

    # --- what the CLI and the profile applications read ---------------------------------------

    @property
    def state(self) -> CardState:
        return self._state

    def free_memory(self) -> int:
        return policy.free_memory(self.identity.config, self._state)

    def package(self, profile: Profile) -> bytes:
        """The unprotected profile package (SAIP DER) installed for ``profile``."""
        return self._store.read_blob(profile.package)

    def enabled_package(self) -> bytes | None:
        enabled = self._state.enabled
        return self.package(enabled) if enabled is not None else None

    def save_runtime(self, aid: bytes, **parts) -> None:
        """Persist live application state (SQN arrays, PIN counters) with the profile it belongs to."""
        profile = next(p for p in self._state.profiles if p.aid == aid)
        self._commit(self._state.with_profile(replace(profile, runtime={**profile.runtime, **parts})))

    def on_enabled_change(self, listener: Callable[[], None]) -> None:
        """``listener()`` runs after every commit that changes which profile is enabled."""
        self._listeners.append(listener)

    def factory_reset(self) -> None:
        """Every profile and pending notification gone, the default SM-DP+ address restored; the
        sequence and ISD-P counters keep counting (numbers are never reused)."""
        self._session, self._loader = None, None
        self._commit(
            replace(
                self._state,
                profiles=(),
                notifications=(),
                default_dp_address=self.identity.config.default_dp_address,
            )
        )

    # --- EUICCInfo1 / EUICCInfo2 (5.7.8, 5.7.9) -----------------------------------------------

    def euicc_info1(self) -> m.EUICCInfo1:
        return m.EUICCInfo1(
            {
                "svn": self.identity.config.version("svn"),
                "euiccCiPKIdListForVerification": self.identity.verification_pkids,
                "euiccCiPKIdListForSigning": self.identity.signing_pkids,
            }
        )

    def euicc_info2(self) -> m.EUICCInfo2:
        config = self.identity.config
        rsp_capabilities = set(config.rsp_capabilities)
        if self.free_memory() > 0:
            rsp_capabilities.add("additionalProfile")
        value = m.EUICCInfo2(
            {
                "profileVersion": config.version("profile_version"),
                "svn": config.version("svn"),
                "euiccFirmwareVer": config.version("firmware_version"),
                "extCardResource": self._ext_card_resource(),
                "uiccCapability": set(config.uicc_capabilities),
                "rspCapability": rsp_capabilities,
                "euiccCiPKIdListForVerification": self.identity.verification_pkids,
                "euiccCiPKIdListForSigning": self.identity.signing_pkids,
                "ppVersion": config.version("pp_version"),
                "sasAcreditationNumber": config.sas_accreditation,
            }
        )
        if config.euicc_category is not None:
            value["euiccCategory"] = config.euicc_category
        if config.forbidden_pprs:
            value["forbiddenProfilePolicyRules"] = set(config.forbidden_pprs)
        return value

    def _ext_card_resource(self) -> bytes:
        """ETSI TS 102 226 8.2.1.3.2: '81' installed applications, '82' free non-volatile memory,
        '83' free volatile memory."""
        installed = min(len(self._state.profiles), 255)
        return (
            bytes([0x81, 1, installed])
            + b"\x82\x04"
            + self.free_memory().to_bytes(4, "big")
            + b"\x83\x04"
            + self.identity.config.volatile_memory.to_bytes(4, "big")
        )

    # --- ES10a (5.7.3, 5.7.4) -----------------------------------------------------------------

    def _configured_addresses(self, _: m.EuiccConfiguredAddressesRequest) -> bytes:
        value = m.EuiccConfiguredAddressesResponse({"rootDsAddress": self.identity.config.root_ds_address})
        if self._state.default_dp_address:
            value["defaultDpAddress"] = self._state.default_dp_address
        return value.dump()

    def _set_default_dp_address(self, request: m.SetDefaultDpAddressRequest) -> bytes:
        address = request["defaultDpAddress"].native or None  # an empty address removes it
        self._commit(replace(self._state, default_dp_address=address))
        return m.SetDefaultDpAddressResponse({"setDefaultDpAddressResult": OK}).dump()

    # --- ES10b: session, authentication, download (5.7.5, 5.7.7, 5.7.13, 5.7.14) -------------

    def _get_challenge(self, _: m.GetEuiccChallengeRequest) -> bytes:
        self._loader = None  # a new session abandons an unfinished package without a trace
        response, self._session = es10b_auth.new_session(self._rng)
        return response

    def _authenticate_server(self, request: m.AuthenticateServerRequest) -> bytes:
        response, self._session = es10b_auth.authenticate_server(
            self.identity, self._session, request, self.euicc_info2(), self._clock()
        )
        return response

    def _prepare_download(self, request: m.PrepareDownloadRequest) -> bytes:
        response, session = es10b_auth.prepare_download(
            self.identity, self._session, request, self._clock(), self._retained_otsk, self._rng
        )
        self._session = session
        if session is not None and session.prepared:
            self._retained_otsk = session.euicc_otsk
        return response

    def _cancel_session(self, request: m.CancelSessionRequest) -> bytes:
        response, session = es10b_auth.cancel_session(self.identity, self._session, request)
        if session is None:
            self._session, self._loader = None, None
        return response

    def _load_segment(self, segment: bytes) -> bytes:
        """ES10b.LoadBoundProfilePackage (5.7.6): no data until the last segment, then the signed
        ProfileInstallationResult; at the first error, the result with the error."""
        try:
            if starts_bpp(segment):
                self._start_loading(segment)
                return b""
            if self._loader is None:
                raise ApduError(SW_CONDITIONS_NOT_SATISFIED, "no Bound Profile Package is being loaded")
            loaded = self._loader.feed(segment)
        except BppLoadError as error:
            return self._fail_download(error)
        return b"" if loaded is None else self._install(loaded)

    def _start_loading(self, segment: bytes) -> None:
        session = self._session
        if self._loader is not None:
            raise ApduError(SW_CONDITIONS_NOT_SATISFIED, "a Bound Profile Package is already being loaded")
        if session is None or not session.prepared:
            raise ApduError(SW_CONDITIONS_NOT_SATISFIED, "LoadBoundProfilePackage needs a prepared session")
        self._loader = BppLoader(segment, session, self.identity.eid, self._checks)

    def _install(self, loaded: LoadedProfile) -> bytes:
        state = self._state
        aid = isdp_aid(state.next_isdp)
        ref = blob_id(loaded.package)
        profile = Profile(
            iccid=loaded.iccid,
            aid=aid,
            enabled=False,
            metadata=loaded.metadata.dump(),
            package=ref,
            size=len(loaded.package),
            dp_proprietary=loaded.dp_proprietary,
        )
        result = m.FinalResult(
            name="successResult", value={"aid": aid, "simaResponse": euicc_response(PE_OK)}
        )
        pir, notification = self._installation_result(result, loaded.iccid)
        state = replace(state.with_profile(profile), next_isdp=state.next_isdp + 1).with_notification(
            notification
        )
        self._commit(state, {ref: loaded.package})  # profile, notification and counters at once
        self._session, self._loader, self._retained_otsk = None, None, None
        return pir

    def _fail_download(self, error: BppLoadError) -> bytes:
        _log.info("%s", error)
        value = {"bppCommandId": error.bpp_command_id, "errorReason": error.error_reason}
        if error.sima_response is not None:
            value["simaResponse"] = error.sima_response
        iccid = self._loader.iccid if self._loader is not None else None
        pir, notification = self._installation_result(m.FinalResult(name="errorResult", value=value), iccid)
        self._session, self._loader = None, None
        self._commit(self._state.with_notification(notification))
        return pir

    def _installation_result(self, result: m.FinalResult, iccid: str | None) -> tuple[bytes, Notification]:
        """The signed ProfileInstallationResult ('BF37'), also kept as a pending notification."""
        session = self._session
        seq = self._state.next_seq
        metadata = self._notification_metadata(seq, INSTALL, session.server_address, iccid)
        data = m.ProfileInstallationResultData(
            {"transactionId": session.transaction_id, "notificationMetadata": metadata, "finalResult": result}
        )
        if session.dp_pb_oid:
            data["smdpOid"] = session.dp_pb_oid
        signature = crypto.sign(self.identity.euicc.signing_key(), data.dump())
        pir = m.ProfileInstallationResult(
            {"profileInstallationResultData": data, "euiccSignPIR": signature}
        ).dump()
        return pir, Notification(seq, INSTALL, session.server_address, iccid, pir)

    def _load_rpm_package(self, request: v3.LoadRpmPackageRequest) -> bytes:
        """ES10b.LoadRpmPackage (SGP.22 v3): see euicc_sim.rpm. The RSP session ends with the package."""
        if "rpmSupport" not in self.identity.config.rsp_capabilities:
            raise DecodeError("this eUICC does not support remote profile management (no rpmSupport)")
        outcome = rpm.load_rpm_package(self.identity, self._session, request, self._state)
        if outcome.state is not None:
            self._session = None
            self._commit(outcome.state)
        return outcome.response

    # --- notifications (5.7.10, 5.7.11, 5.7.12) -----------------------------------------------

    def _notification_metadata(
        self, seq: int, operation: str, address: str, iccid: str | None
    ) -> m.NotificationMetadata:
        value = m.NotificationMetadata(
            {"seqNumber": seq, "profileManagementOperation": {operation}, "notificationAddress": address}
        )
        if iccid is not None:
            value["iccid"] = iccid_to_bcd(iccid)
        return value

    def _notify(self, state: CardState, profile: Profile, operation: str) -> CardState:
        """One signed notification per address the profile configured for ``operation`` (5.4.1)."""
        for address in profile.notification_addresses(operation):
            seq = state.next_seq
            metadata = self._notification_metadata(seq, operation, address, profile.iccid)
            pending = m.PendingNotification(
                name="otherSignedNotification",
                value={
                    "tbsOtherNotification": metadata,
                    "euiccNotificationSignature": crypto.sign(
                        self.identity.euicc.signing_key(), metadata.dump()
                    ),
                    "euiccCertificate": asn1_x509.Certificate.load(self.identity.euicc.cert_der),
                    "eumCertificate": asn1_x509.Certificate.load(
                        self.identity.eum.public_bytes(Encoding.DER)
                    ),
                },
            )
            state = state.with_notification(
                Notification(seq, operation, address, profile.iccid, pending.dump())
            )
        return state

    def _list_notifications(self, request: m.ListNotificationRequest) -> bytes:
        wanted = request["profileManagementOperation"].native
        found = [
            _pending_metadata(n) for n in self._state.notifications if not wanted or n.operation in wanted
        ]
        return m.ListNotificationResponse(name="notificationMetadataList", value=found).dump()

    def _retrieve_notifications(self, request: m.RetrieveNotificationsListRequest) -> bytes:
        criteria = request["searchCriteria"]
        notifications = list(self._state.notifications)
        if criteria.native is not None:
            if criteria.name == "seqNumber":
                notifications = [n for n in notifications if n.seq == criteria.native]
            else:
                notifications = [n for n in notifications if n.operation in criteria.native]
            if not notifications:
                return m.RetrieveNotificationsListResponse(
                    name="notificationsListResultError", value=NO_RESULT_AVAILABLE
                ).dump()
        pending = [v3.PendingNotification.load(n.pending) for n in notifications]
        return m.RetrieveNotificationsListResponse(name="notificationList", value=pending).dump()

    def _remove_notification(self, request: m.NotificationSentRequest) -> bytes:
        seq = request["seqNumber"].native
        if not any(n.seq == seq for n in self._state.notifications):
            return m.NotificationSentResponse({"deleteNotificationStatus": NOTHING_TO_DELETE}).dump()
        self._commit(self._state.without_notification(seq))
        return m.NotificationSentResponse({"deleteNotificationStatus": OK}).dump()

    # --- ES10c (5.7.15 - 5.7.21) --------------------------------------------------------------

    def _profiles_info(self, request: m.ProfileInfoListRequest) -> bytes:
        try:
            fields = profile_info.requested_fields(request["tagList"].native)
        except DecodeError:
            return m.ProfileInfoListResponse(name="profileInfoListError", value=INCORRECT_INPUT_VALUES).dump()
        criteria = request["searchCriteria"]
        selected = [
            p for p in self._state.profiles if criteria.native is None or profile_info.matches(p, criteria)
        ]
        infos = [profile_info.profile_info(p, fields) for p in selected]
        return m.ProfileInfoListResponse(name="profileInfoListOk", value=infos).dump()

    def _find(self, identifier) -> Profile | None:
        """A profile by ProfileIdentifier / DeleteProfileRequest choice (isdpAid or iccid)."""
        if identifier.name == "isdpAid":
            return self._state.find(aid=identifier.native)
        return self._by_iccid(identifier.native)

    def _by_iccid(self, bcd: bytes) -> Profile | None:
        try:
            return self._state.find(iccid=iccid_from_bcd(bcd))
        except DecodeError:  # not BCD digits: no profile has it
            return None

    def _enable(self, request: m.EnableProfileRequest) -> bytes:
        target = self._find(request["profileIdentifier"])
        current = self._state.enabled
        if target is None:
            result = NOT_FOUND
        elif target.enabled:
            result = WRONG_STATE
        elif current is not None and "ppr1" in current.pprs:  # enabling would disable it
            result = DISALLOWED_BY_POLICY
        else:
            state = self._state
            if current is not None:
                state = self._notify(state.with_profile(replace(current, enabled=False)), current, DISABLE)
            state = self._notify(state.with_profile(replace(target, enabled=True)), target, ENABLE)
            self._commit(state)
            result = OK
        return m.EnableProfileResponse({"enableResult": result}).dump()

    def _disable(self, request: m.DisableProfileRequest) -> bytes:
        target = self._find(request["profileIdentifier"])
        if target is None:
            result = NOT_FOUND
        elif not target.enabled:
            result = WRONG_STATE
        elif "ppr1" in target.pprs:
            result = DISALLOWED_BY_POLICY
        else:
            self._commit(
                self._notify(self._state.with_profile(replace(target, enabled=False)), target, DISABLE)
            )
            result = OK
        return m.DisableProfileResponse({"disableResult": result}).dump()

    def _delete(self, request: m.DeleteProfileRequest) -> bytes:
        target = self._find(request)
        if target is None:
            result = NOT_FOUND
        elif target.enabled:
            result = WRONG_STATE
        elif "ppr2" in target.pprs:
            result = DISALLOWED_BY_POLICY
        else:
            self._commit(self._notify(self._state.without_profile(target.aid), target, DELETE))
            result = OK
        return m.DeleteProfileResponse({"deleteResult": result}).dump()

    def _memory_reset(self, request: m.EuiccMemoryResetRequest) -> bytes:
        """5.7.19: profiles of the chosen classes go regardless of their PPRs; no notifications."""
        options = request["resetOptions"].native
        classes = {
            cls
            for option, cls in (
                ("deleteOperationalProfiles", "operational"),
                ("deleteFieldLoadedTestProfiles", "test"),
            )
            if option in options
        }
        doomed = [p for p in self._state.profiles if p.profile_class in classes]
        reset_address = "resetDefaultSmdpAddress" in options
        if not doomed and not reset_address:
            return m.EuiccMemoryResetResponse({"resetResult": NOTHING_TO_DELETE}).dump()
        state = replace(self._state, profiles=tuple(p for p in self._state.profiles if p not in doomed))
        if reset_address:
            state = replace(state, default_dp_address=self.identity.config.default_dp_address)
        self._commit(state)
        return m.EuiccMemoryResetResponse({"resetResult": OK}).dump()

    def _get_eid(self, request: m.GetEuiccDataRequest) -> bytes:
        if request["tagList"].native != EID_TAG:
            raise DecodeError(
                f"GetEuiccData supports tagList '5A' (EID) only, got {request['tagList'].native.hex()}"
            )
        return m.GetEuiccDataResponse({"eidValue": eid_to_bytes(self.identity.eid)}).dump()

    def _set_nickname(self, request: m.SetNicknameRequest) -> bytes:
        target = self._by_iccid(request["iccid"].native)
        if target is None:
            return m.SetNicknameResponse({"setNicknameResult": NOT_FOUND}).dump()
        self._commit(self._state.with_profile(replace(target, nickname=request["profileNickname"].native)))
        return m.SetNicknameResponse({"setNicknameResult": OK}).dump()

    # --- committing ---------------------------------------------------------------------------

    def _commit(self, state: CardState, blobs: dict[str, bytes] | None = None) -> None:
        before = self._state.enabled.aid if self._state.enabled else None
        self._store.commit(state.to_json(), blobs)
        self._state = state
        after = state.enabled.aid if state.enabled else None
        if before != after:
            for listener in self._listeners:
                listener()


def _pending_metadata(notification: Notification) -> m.NotificationMetadata:
    return v3.notification_metadata(v3.PendingNotification.load(notification.pending))

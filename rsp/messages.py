"""SGP.22 v2.5 RSPDefinitions (ES8+, ES9+, ES10a/b/c, ES11 messages) declared with asn1crypto.

The module is AUTOMATIC TAGS with EXTENSIBILITY IMPLIED, so:
- a SEQUENCE whose components carry no tag at all gets context tags [0], [1], ... (implicit, or
  explicit for CHOICE components); a SEQUENCE with any tagged component is left as written;
- CHOICE alternatives without tags get [0], [1], ...;
- decoders must accept unknown trailing components (extension additions of later versions).

Every value decoded with :func:`decode` keeps the exact received bytes: ``value.dump()`` of an
unmodified parsed value (or any of its components) returns what arrived, which is what signatures
are verified over. :func:`decode` parses eagerly and raises only :class:`rsp.errors.DecodeError`.
"""

from __future__ import annotations

import warnings

from asn1crypto import core, x509
from cryptography import x509 as cx509

from rsp.errors import DecodeError

APPLICATION = "application"
PRIVATE = "private"

# --- constrained basic types -----------------------------------------------------------------------


class _Sized:
    """Mixin for string types with an SGP.22 SIZE constraint, checked by decode()."""

    size: tuple[int, int] = (0, 1 << 30)

    def check_size(self) -> None:
        lo, hi = self.size
        length = len(self.contents or b"") if isinstance(self, core.OctetString) else len(self.native)
        if not lo <= length <= hi:
            raise DecodeError(f"{type(self).__name__} must be {lo}..{hi} long, got {length}")


class Octet1(_Sized, core.OctetString):
    size = (1, 1)


class Octet8(_Sized, core.OctetString):
    size = (8, 8)


class Octet16(_Sized, core.OctetString):
    size = (16, 16)


class OctetTo16(_Sized, core.OctetString):
    size = (1, 16)


class Octet32(_Sized, core.OctetString):
    size = (32, 32)


class VersionType(_Sized, core.OctetString):
    """'02 02 00' = v2.2.0: major/minor/revision as binary bytes."""

    size = (3, 3)


class TransactionId(_Sized, core.OctetString):
    size = (1, 16)


class Iccid(_Sized, core.OctetString):
    """[APPLICATION 26] OCTET STRING (SIZE(10)), tag '5A', coded as in EF.ICCID (nibble-swapped)."""

    class_ = 1
    tag = 26
    size = (10, 10)


class Aid(_Sized, core.OctetString):
    size = (5, 16)


class Utf8To32(_Sized, core.UTF8String):
    size = (0, 32)


class Utf8To64(_Sized, core.UTF8String):
    size = (0, 64)


class Icon(_Sized, core.OctetString):
    size = (0, 1024)


SubjectKeyIdentifier = core.OctetString


class SubjectKeyIdentifiers(core.SequenceOf):
    _child_spec = core.OctetString


class Seq(core.Sequence):
    """A SEQUENCE of RSPDefinitions: unknown trailing components (extensions) are tolerated.

    They are kept as ``core.Any`` children (so ``dump()`` reproduces them) and left out of ``native``.
    """

    def __init__(self, value=None, **kwargs):
        super().__init__(value, **kwargs)
        if self.contents is None and value is not None and not value:
            self.contents = b""  # empty value such as GetEuiccInfo1Request 'BF20 00'

    def _parse_children(self, recurse=False):
        super()._parse_children(recurse=False)
        for index in range(len(self._fields), len(self.children)):
            parts = self.children[index]
            if isinstance(parts, tuple):  # class, method, tag, header, contents, trailer
                self.children[index] = core._build(*parts, spec=core.Any)
        if recurse:
            for index in range(len(self._fields)):
                child = self._lazy_child(index)
                if isinstance(child, core.Sequence | core.SequenceOf):
                    child._parse_children(recurse=True)

    @property
    def native(self):
        if self.contents is None:
            return None
        if self._native is None:
            if self.children is None:
                self._parse_children()
            self._native = {name: self._lazy_child(i).native for i, (name, *_) in enumerate(self._fields)}
        return self._native


# --- enums and bit strings -------------------------------------------------------------------------


class ProfileState(core.Integer):
    _map = {0: "disabled", 1: "enabled"}


class ProfileClass(core.Integer):
    _map = {0: "test", 1: "provisioning", 2: "operational"}


class IconType(core.Integer):
    _map = {0: "jpg", 1: "png"}


class PprIds(core.BitString):
    _map = {0: "pprUpdateControl", 1: "ppr1", 2: "ppr2", 3: "ppr3"}


class NotificationEvent(core.BitString):
    _map = {0: "notificationInstall", 1: "notificationEnable", 2: "notificationDisable", 3: "notificationDelete"}


class RspCapability(core.BitString):
    _map = {0: "additionalProfile", 1: "crlSupport", 2: "rpmSupport", 3: "testProfileSupport"}


class UICCCapability(core.BitString):
    _map = {
        0: "contactlessSupport", 1: "usimSupport", 2: "isimSupport", 3: "csimSupport", 4: "akaMilenage",
        5: "akaCave", 6: "akaTuak128", 7: "akaTuak256", 8: "rfu1", 9: "rfu2", 10: "gbaAuthenUsim",
        11: "gbaAuthenISim", 12: "mbmsAuthenUsim", 13: "eapClient", 14: "javacard", 15: "multos",
        16: "multipleUsimSupport", 17: "multipleIsimSupport", 18: "multipleCsimSupport",
    }


class CancelSessionReason(core.Integer):
    _map = {0: "endUserRejection", 1: "postponed", 2: "timeout", 3: "pprNotAllowed", 4: "metadataMismatch",
            5: "loadBppExecutionError", 127: "undefinedReason"}


# --- EUICCInfo1 / EUICCInfo2 (5.7.8, 5.7.9) ---------------------------------------------------------


class GetEuiccInfo1Request(Seq):
    class_, tag = 2, 32
    _fields = []


class EUICCInfo1(Seq):
    class_, tag = 2, 32
    _fields = [
        ("svn", VersionType, {"implicit": 2}),
        ("euiccCiPKIdListForVerification", SubjectKeyIdentifiers, {"implicit": 9}),
        ("euiccCiPKIdListForSigning", SubjectKeyIdentifiers, {"implicit": 10}),
    ]


class GetEuiccInfo2Request(Seq):
    class_, tag = 2, 34
    _fields = []


class CertificationDataObject(Seq):
    _fields = [("platformLabel", core.UTF8String, {"implicit": 0}),
               ("discoveryBaseURL", core.UTF8String, {"implicit": 1})]


class EUICCInfo2(Seq):
    class_, tag = 2, 34
    _fields = [
        ("profileVersion", VersionType, {"implicit": 1}),
        ("svn", VersionType, {"implicit": 2}),
        ("euiccFirmwareVer", VersionType, {"implicit": 3}),
        ("extCardResource", core.OctetString, {"implicit": 4}),
        ("uiccCapability", UICCCapability, {"implicit": 5}),
        ("javacardVersion", VersionType, {"implicit": 6, "optional": True}),
        ("globalplatformVersion", VersionType, {"implicit": 7, "optional": True}),
        ("rspCapability", RspCapability, {"implicit": 8}),
        ("euiccCiPKIdListForVerification", SubjectKeyIdentifiers, {"implicit": 9}),
        ("euiccCiPKIdListForSigning", SubjectKeyIdentifiers, {"implicit": 10}),
        ("euiccCategory", core.Integer, {"implicit": 11, "optional": True}),
        ("forbiddenProfilePolicyRules", PprIds, {"implicit": 25, "optional": True}),
        ("ppVersion", VersionType),
        ("sasAcreditationNumber", Utf8To64),
        ("certificationDataObject", CertificationDataObject, {"implicit": 12, "optional": True}),
    ]


class DeviceCapabilities(Seq):
    _fields = [
        (name, VersionType, {"implicit": i, "optional": True})
        for i, name in enumerate([
            "gsmSupportedRelease", "utranSupportedRelease", "cdma2000onexSupportedRelease",
            "cdma2000hrpdSupportedRelease", "cdma2000ehrpdSupportedRelease", "eutranSupportedRelease",
            "contactlessSupportedRelease", "rspCrlSupportedVersion", "rspRpmSupportedVersion",
        ])
    ]


class DeviceInfo(Seq):
    _fields = [
        ("tac", core.OctetString, {"implicit": 0}),  # 4 bytes: Type Allocation Code of the IMEI
        ("deviceCapabilities", DeviceCapabilities, {"implicit": 1}),
        ("imei", core.OctetString, {"implicit": 2, "optional": True}),
    ]


# --- Profile metadata and profile info (5.4.1, 5.7.15) --------------------------------------------


class OperatorID(Seq):
    _fields = [
        ("mccMnc", core.OctetString, {"implicit": 0}),
        ("gid1", core.OctetString, {"implicit": 1, "optional": True}),
        ("gid2", core.OctetString, {"implicit": 2, "optional": True}),
    ]


class NotificationConfigurationInformation(Seq):
    _fields = [
        ("profileManagementOperation", NotificationEvent, {"implicit": 0}),
        ("notificationAddress", core.UTF8String, {"implicit": 1}),
    ]


class NotificationConfigurationInformations(core.SequenceOf):
    _child_spec = NotificationConfigurationInformation


class DpProprietaryData(Seq):
    _fields = [("dpOid", core.ObjectIdentifier, {"implicit": 0})]


class StoreMetadataRequest(Seq):
    """'BF25': the profile metadata (SGP.22 5.5.3 / 2.4.3)."""

    class_, tag = 2, 37
    _fields = [
        ("iccid", Iccid),
        ("serviceProviderName", Utf8To32, {"implicit": 17}),
        ("profileName", Utf8To64, {"implicit": 18}),
        ("iconType", IconType, {"implicit": 19, "optional": True}),
        ("icon", Icon, {"implicit": 20, "optional": True}),
        ("profileClass", ProfileClass, {"implicit": 21, "optional": True}),
        ("notificationConfigurationInfo", NotificationConfigurationInformations, {"implicit": 22, "optional": True}),
        ("profileOwner", OperatorID, {"implicit": 23, "optional": True}),
        ("profilePolicyRules", PprIds, {"implicit": 25, "optional": True}),
    ]


class ProfileInfo(Seq):
    """'E3': one entry of ES10c.GetProfilesInfo."""

    class_, tag = 3, 3
    _fields = [
        ("iccid", Iccid, {"optional": True}),
        ("isdpAid", OctetTo16, {"implicit": (APPLICATION, 15), "optional": True}),
        ("profileState", ProfileState, {"implicit": 112, "optional": True}),
        ("profileNickname", Utf8To64, {"implicit": 16, "optional": True}),
        ("serviceProviderName", Utf8To32, {"implicit": 17, "optional": True}),
        ("profileName", Utf8To64, {"implicit": 18, "optional": True}),
        ("iconType", IconType, {"implicit": 19, "optional": True}),
        ("icon", Icon, {"implicit": 20, "optional": True}),
        ("profileClass", ProfileClass, {"implicit": 21, "optional": True}),
        ("notificationConfigurationInfo", NotificationConfigurationInformations, {"implicit": 22, "optional": True}),
        ("profileOwner", OperatorID, {"implicit": 23, "optional": True}),
        ("dpProprietaryData", DpProprietaryData, {"implicit": 24, "optional": True}),
        ("profilePolicyRules", PprIds, {"implicit": 25, "optional": True}),
    ]


class ProfileInfos(core.SequenceOf):
    _child_spec = ProfileInfo


class ProfileSearchCriteria(core.Choice):
    _alternatives = [
        ("isdpAid", OctetTo16, {"implicit": (APPLICATION, 15)}),
        ("iccid", Iccid),
        ("profileClass", ProfileClass, {"implicit": 21}),
    ]


class ProfileInfoListRequest(Seq):
    class_, tag = 2, 45
    _fields = [
        ("searchCriteria", ProfileSearchCriteria, {"explicit": 0, "optional": True}),
        ("tagList", core.OctetString, {"implicit": (APPLICATION, 28), "optional": True}),
    ]


class ProfileInfoListResponse(core.Choice):
    explicit = (2, 45)
    _alternatives = [
        ("profileInfoListOk", ProfileInfos, {"implicit": 0}),
        ("profileInfoListError", core.Integer, {"implicit": 1}),
    ]


# --- AuthenticateServer (5.7.13) -------------------------------------------------------------------


class ServerSigned1(Seq):
    _fields = [
        ("transactionId", TransactionId, {"implicit": 0}),
        ("euiccChallenge", Octet16, {"implicit": 1}),
        ("serverAddress", core.UTF8String, {"implicit": 3}),
        ("serverChallenge", Octet16, {"implicit": 4}),
    ]


class CtxParamsForCommonAuthentication(Seq):
    _fields = [
        ("matchingId", core.UTF8String, {"implicit": 0, "optional": True}),
        ("deviceInfo", DeviceInfo, {"implicit": 1}),
    ]


class CtxParams1(core.Choice):
    _alternatives = [("ctxParamsForCommonAuthentication", CtxParamsForCommonAuthentication, {"implicit": 0})]


class AuthenticateServerRequest(Seq):
    """'BF38'."""

    class_, tag = 2, 56
    _fields = [
        ("serverSigned1", ServerSigned1),
        ("serverSignature1", core.OctetString, {"implicit": (APPLICATION, 55)}),
        ("euiccCiPKIdToBeUsed", core.OctetString),
        ("serverCertificate", x509.Certificate),
        ("ctxParams1", CtxParams1),
    ]


class EuiccSigned1(Seq):
    _fields = [
        ("transactionId", TransactionId, {"implicit": 0}),
        ("serverAddress", core.UTF8String, {"implicit": 3}),
        ("serverChallenge", Octet16, {"implicit": 4}),
        ("euiccInfo2", EUICCInfo2),
        ("ctxParams1", CtxParams1),
    ]


class AuthenticateResponseOk(Seq):
    _fields = [
        ("euiccSigned1", EuiccSigned1),
        ("euiccSignature1", core.OctetString, {"implicit": (APPLICATION, 55)}),
        ("euiccCertificate", x509.Certificate),
        ("eumCertificate", x509.Certificate),
    ]


class AuthenticateErrorCode(core.Integer):
    _map = {1: "invalidCertificate", 2: "invalidSignature", 3: "unsupportedCurve", 4: "noSessionContext",
            5: "invalidOid", 6: "euiccChallengeMismatch", 7: "ciPKUnknown", 127: "undefinedError"}


class AuthenticateResponseError(Seq):
    _fields = [
        ("transactionId", TransactionId, {"implicit": 0}),
        ("authenticateErrorCode", AuthenticateErrorCode),
    ]


class AuthenticateServerResponse(core.Choice):
    explicit = (2, 56)
    _alternatives = [
        ("authenticateResponseOk", AuthenticateResponseOk, {"implicit": 0}),
        ("authenticateResponseError", AuthenticateResponseError, {"implicit": 1}),
    ]


# --- PrepareDownload (5.7.5) -----------------------------------------------------------------------


class SmdpSigned2(Seq):
    _fields = [
        ("transactionId", TransactionId, {"implicit": 0}),
        ("ccRequiredFlag", core.Boolean),
        ("bppEuiccOtpk", core.OctetString, {"implicit": (APPLICATION, 73), "optional": True}),
    ]


class PrepareDownloadRequest(Seq):
    """'BF21'."""

    class_, tag = 2, 33
    _fields = [
        ("smdpSigned2", SmdpSigned2),
        ("smdpSignature2", core.OctetString, {"implicit": (APPLICATION, 55)}),
        ("hashCc", Octet32, {"optional": True}),
        ("smdpCertificate", x509.Certificate),
    ]


class EUICCSigned2(Seq):
    _fields = [
        ("transactionId", TransactionId, {"implicit": 0}),
        ("euiccOtpk", core.OctetString, {"implicit": (APPLICATION, 73)}),
        ("hashCc", Octet32, {"optional": True}),
    ]


class PrepareDownloadResponseOk(Seq):
    _fields = [
        ("euiccSigned2", EUICCSigned2),
        ("euiccSignature2", core.OctetString, {"implicit": (APPLICATION, 55)}),
    ]


class DownloadErrorCode(core.Integer):
    _map = {1: "invalidCertificate", 2: "invalidSignature", 3: "unsupportedCurve", 4: "noSessionContext",
            5: "invalidTransactionId", 127: "undefinedError"}


class PrepareDownloadResponseError(Seq):
    _fields = [
        ("transactionId", TransactionId, {"implicit": 0}),
        ("downloadErrorCode", DownloadErrorCode),
    ]


class PrepareDownloadResponse(core.Choice):
    explicit = (2, 33)
    _alternatives = [
        ("downloadResponseOk", PrepareDownloadResponseOk, {"implicit": 0}),
        ("downloadResponseError", PrepareDownloadResponseError, {"implicit": 1}),
    ]


# --- GetEUICCChallenge (5.7.7), CancelSession (5.7.14) ---------------------------------------------


class GetEuiccChallengeRequest(Seq):
    class_, tag = 2, 46
    _fields = []


class GetEuiccChallengeResponse(Seq):
    class_, tag = 2, 46
    _fields = [("euiccChallenge", Octet16, {"implicit": 0})]


class CancelSessionRequest(Seq):
    class_, tag = 2, 65
    _fields = [
        ("transactionId", TransactionId, {"implicit": 0}),
        ("reason", CancelSessionReason, {"implicit": 1}),
    ]


class EuiccCancelSessionSigned(Seq):
    _fields = [
        ("transactionId", TransactionId, {"implicit": 0}),
        ("smdpOid", core.ObjectIdentifier, {"implicit": 1}),
        ("reason", CancelSessionReason, {"implicit": 2}),
    ]


class CancelSessionResponseOk(Seq):
    _fields = [
        ("euiccCancelSessionSigned", EuiccCancelSessionSigned),
        ("euiccCancelSessionSignature", core.OctetString, {"implicit": (APPLICATION, 55)}),
    ]


class CancelSessionResponse(core.Choice):
    explicit = (2, 65)
    _alternatives = [
        ("cancelSessionResponseOk", CancelSessionResponseOk, {"implicit": 0}),
        ("cancelSessionResponseError", core.Integer, {"implicit": 1}),
    ]


# --- Bound Profile Package and ES8+ (5.5) ----------------------------------------------------------


class ControlRefTemplate(Seq):
    _fields = [
        ("keyType", Octet1, {"implicit": 0}),
        ("keyLen", Octet1, {"implicit": 1}),
        ("hostId", OctetTo16, {"implicit": 4}),
    ]


class InitialiseSecureChannelRequest(Seq):
    """'BF23'."""

    class_, tag = 2, 35
    _fields = [
        ("remoteOpId", core.Integer, {"implicit": 2}),  # installBoundProfilePackage(1)
        ("transactionId", TransactionId, {"implicit": 0}),
        ("controlRefTemplate", ControlRefTemplate, {"implicit": 6}),
        ("smdpOtpk", core.OctetString, {"implicit": (APPLICATION, 73)}),
        ("smdpSign", core.OctetString, {"implicit": (APPLICATION, 55)}),
    ]


class ConfigureISDPRequest(Seq):
    class_, tag = 2, 36
    _fields = [("dpProprietaryData", DpProprietaryData, {"implicit": 24, "optional": True})]


class ReplaceSessionKeysRequest(Seq):
    class_, tag = 2, 38
    _fields = [
        ("initialMacChainingValue", core.OctetString, {"implicit": 0}),
        ("ppkEnc", core.OctetString, {"implicit": 1}),
        ("ppkCmac", core.OctetString, {"implicit": 2}),
    ]


def _sequence_of_tagged(tag_number: int) -> type[core.SequenceOf]:
    class Element(core.OctetString):
        class_, tag = 2, tag_number

    return type(f"SequenceOf{0x80 | tag_number:X}", (core.SequenceOf,), {"_child_spec": Element})


SequenceOf87 = _sequence_of_tagged(7)
SequenceOf88 = _sequence_of_tagged(8)
SequenceOf86 = _sequence_of_tagged(6)


class BoundProfilePackage(Seq):
    """'BF36'. The 86/87/88 elements hold BSP-protected data (see rsp.bsp / rsp.bpp)."""

    class_, tag = 2, 54
    _fields = [
        ("initialiseSecureChannelRequest", InitialiseSecureChannelRequest),
        ("firstSequenceOf87", SequenceOf87, {"implicit": 0}),
        ("sequenceOf88", SequenceOf88, {"implicit": 1}),
        ("secondSequenceOf87", SequenceOf87, {"implicit": 2, "optional": True}),
        ("sequenceOf86", SequenceOf86, {"implicit": 3}),
    ]


# --- Notifications and ProfileInstallationResult (5.7.6, 5.7.10) -----------------------------------


class NotificationMetadata(Seq):
    """'BF2F'."""

    class_, tag = 2, 47
    _fields = [
        ("seqNumber", core.Integer, {"implicit": 0}),
        ("profileManagementOperation", NotificationEvent, {"implicit": 1}),
        ("notificationAddress", core.UTF8String),
        ("iccid", Iccid, {"optional": True}),
    ]


class NotificationMetadataList(core.SequenceOf):
    _child_spec = NotificationMetadata


class SuccessResult(Seq):
    _fields = [
        ("aid", Aid, {"implicit": (APPLICATION, 15)}),
        ("simaResponse", core.OctetString),
    ]


class BppCommandId(core.Integer):
    _map = {0: "initialiseSecureChannel", 1: "configureISDP", 2: "storeMetadata", 3: "storeMetadata2",
            4: "replaceSessionKeys", 5: "loadProfileElements"}


class ErrorReason(core.Integer):
    _map = {
        1: "incorrectInputValues", 2: "invalidSignature", 3: "invalidTransactionId", 4: "unsupportedCrtValues",
        5: "unsupportedRemoteOperationType", 6: "unsupportedProfileClass", 7: "scp03tStructureError",
        8: "scp03tSecurityError", 9: "installFailedDueToIccidAlreadyExistsOnEuicc",
        10: "installFailedDueToInsufficientMemoryForProfile", 11: "installFailedDueToInterruption",
        12: "installFailedDueToPEProcessingError", 13: "installFailedDueToIccidMismatch",
        14: "testProfileInstallFailedDueToInvalidNaaKey", 15: "pprNotAllowed",
        127: "installFailedDueToUnknownError",
    }


class ErrorResult(Seq):
    _fields = [
        ("bppCommandId", BppCommandId, {"implicit": 0}),
        ("errorReason", ErrorReason, {"implicit": 1}),
        ("simaResponse", core.OctetString, {"implicit": 2, "optional": True}),
    ]


class FinalResult(core.Choice):
    _alternatives = [
        ("successResult", SuccessResult, {"implicit": 0}),
        ("errorResult", ErrorResult, {"implicit": 1}),
    ]


class ProfileInstallationResultData(Seq):
    """'BF27': what euiccSignPIR signs."""

    class_, tag = 2, 39
    _fields = [
        ("transactionId", TransactionId, {"implicit": 0}),
        ("notificationMetadata", NotificationMetadata),
        ("smdpOid", core.ObjectIdentifier, {"optional": True}),
        ("finalResult", FinalResult, {"explicit": 2}),
    ]


class ProfileInstallationResult(Seq):
    """'BF37'."""

    class_, tag = 2, 55
    _fields = [
        ("profileInstallationResultData", ProfileInstallationResultData),
        ("euiccSignPIR", core.OctetString, {"implicit": (APPLICATION, 55)}),
    ]


class OtherSignedNotification(Seq):
    _fields = [
        ("tbsOtherNotification", NotificationMetadata),
        ("euiccNotificationSignature", core.OctetString, {"implicit": (APPLICATION, 55)}),
        ("euiccCertificate", x509.Certificate),
        ("eumCertificate", x509.Certificate),
    ]


class PendingNotification(core.Choice):
    _alternatives = [
        ("profileInstallationResult", ProfileInstallationResult),
        ("otherSignedNotification", OtherSignedNotification),
    ]


class PendingNotifications(core.SequenceOf):
    _child_spec = PendingNotification


class ListNotificationRequest(Seq):
    class_, tag = 2, 40
    _fields = [("profileManagementOperation", NotificationEvent, {"implicit": 1, "optional": True})]


class ListNotificationResponse(core.Choice):
    explicit = (2, 40)
    _alternatives = [
        ("notificationMetadataList", NotificationMetadataList, {"implicit": 0}),
        ("listNotificationsResultError", core.Integer, {"implicit": 1}),
    ]


class NotificationSearchCriteria(core.Choice):
    _alternatives = [
        ("seqNumber", core.Integer, {"implicit": 0}),
        ("profileManagementOperation", NotificationEvent, {"implicit": 1}),
    ]


class RetrieveNotificationsListRequest(Seq):
    class_, tag = 2, 43
    _fields = [("searchCriteria", NotificationSearchCriteria, {"explicit": 0, "optional": True})]


class RetrieveNotificationsListResponse(core.Choice):
    explicit = (2, 43)
    _alternatives = [
        ("notificationList", PendingNotifications, {"implicit": 0}),
        ("notificationsListResultError", core.Integer, {"implicit": 1}),
    ]


class NotificationSentRequest(Seq):
    class_, tag = 2, 48
    _fields = [("seqNumber", core.Integer, {"implicit": 0})]


class NotificationSentResponse(Seq):
    class_, tag = 2, 48
    _fields = [("deleteNotificationStatus", core.Integer, {"implicit": 0})]


# --- Profile management (5.7.16 - 5.7.21) ----------------------------------------------------------


class ProfileIdentifier(core.Choice):
    _alternatives = [
        ("isdpAid", OctetTo16, {"implicit": (APPLICATION, 15)}),
        ("iccid", Iccid),
    ]


class EnableProfileRequest(Seq):
    class_, tag = 2, 49
    _fields = [
        ("profileIdentifier", ProfileIdentifier, {"explicit": 0}),
        ("refreshFlag", core.Boolean, {"implicit": 1}),
    ]


class EnableProfileResponse(Seq):
    class_, tag = 2, 49
    _fields = [("enableResult", core.Integer, {"implicit": 0})]


class DisableProfileRequest(Seq):
    class_, tag = 2, 50
    _fields = [
        ("profileIdentifier", ProfileIdentifier, {"explicit": 0}),
        ("refreshFlag", core.Boolean, {"implicit": 1}),
    ]


class DisableProfileResponse(Seq):
    class_, tag = 2, 50
    _fields = [("disableResult", core.Integer, {"implicit": 0})]


class DeleteProfileRequest(core.Choice):
    explicit = (2, 51)
    _alternatives = [
        ("isdpAid", OctetTo16, {"implicit": (APPLICATION, 15)}),
        ("iccid", Iccid),
    ]


class DeleteProfileResponse(Seq):
    class_, tag = 2, 51
    _fields = [("deleteResult", core.Integer, {"implicit": 0})]


class ResetOptions(core.BitString):
    _map = {0: "deleteOperationalProfiles", 1: "deleteFieldLoadedTestProfiles", 2: "resetDefaultSmdpAddress"}


class EuiccMemoryResetRequest(Seq):
    class_, tag = 2, 52
    _fields = [("resetOptions", ResetOptions, {"implicit": 2})]


class EuiccMemoryResetResponse(Seq):
    class_, tag = 2, 52
    _fields = [("resetResult", core.Integer, {"implicit": 0})]


class GetEuiccDataRequest(Seq):
    class_, tag = 2, 62
    _fields = [("tagList", Octet1, {"implicit": (APPLICATION, 28)})]


class GetEuiccDataResponse(Seq):
    class_, tag = 2, 62
    _fields = [("eidValue", Octet16, {"implicit": (APPLICATION, 26)})]


class SetNicknameRequest(Seq):
    class_, tag = 2, 41
    _fields = [
        ("iccid", Iccid),
        ("profileNickname", Utf8To64, {"implicit": 16}),
    ]


class SetNicknameResponse(Seq):
    class_, tag = 2, 41
    _fields = [("setNicknameResult", core.Integer, {"implicit": 0})]


class PprFlags(core.BitString):
    _map = {0: "consentRequired"}


class OperatorIDs(core.SequenceOf):
    _child_spec = OperatorID


class ProfilePolicyAuthorisationRule(Seq):
    _fields = [
        ("pprIds", PprIds, {"implicit": 0}),
        ("allowedOperators", OperatorIDs, {"implicit": 1}),
        ("pprFlags", PprFlags, {"implicit": 2}),
    ]


class RulesAuthorisationTable(core.SequenceOf):
    _child_spec = ProfilePolicyAuthorisationRule


class GetRatRequest(Seq):
    class_, tag = 2, 67
    _fields = []


class GetRatResponse(Seq):
    class_, tag = 2, 67
    _fields = [("rat", RulesAuthorisationTable, {"implicit": 0})]


class EuiccConfiguredAddressesRequest(Seq):
    class_, tag = 2, 60
    _fields = []


class EuiccConfiguredAddressesResponse(Seq):
    class_, tag = 2, 60
    _fields = [
        ("defaultDpAddress", core.UTF8String, {"implicit": 0, "optional": True}),
        ("rootDsAddress", core.UTF8String, {"implicit": 1}),
    ]


class SetDefaultDpAddressRequest(Seq):
    class_, tag = 2, 63
    _fields = [("defaultDpAddress", core.UTF8String, {"implicit": 0})]


class SetDefaultDpAddressResponse(Seq):
    class_, tag = 2, 63
    _fields = [("setDefaultDpAddressResult", core.Integer, {"implicit": 0})]


# --- ES9+ / ES11 ASN.1 binding types (5.6, 5.8) ----------------------------------------------------


class InitiateAuthenticationRequest(Seq):
    class_, tag = 2, 57
    _fields = [
        ("euiccChallenge", Octet16, {"implicit": 1}),
        ("smdpAddress", core.UTF8String, {"implicit": 3}),
        ("euiccInfo1", EUICCInfo1),
    ]


class InitiateAuthenticationOkEs9(Seq):
    _fields = [
        ("transactionId", TransactionId, {"implicit": 0}),
        ("serverSigned1", ServerSigned1),
        ("serverSignature1", core.OctetString, {"implicit": (APPLICATION, 55)}),
        ("euiccCiPKIdToBeUsed", core.OctetString),
        ("serverCertificate", x509.Certificate),
    ]


class InitiateAuthenticationResponse(core.Choice):
    explicit = (2, 57)
    _alternatives = [
        ("initiateAuthenticationOk", InitiateAuthenticationOkEs9, {"implicit": 0}),
        ("initiateAuthenticationError", core.Integer, {"implicit": 1}),
    ]


class AuthenticateClientRequest(Seq):
    class_, tag = 2, 59
    _fields = [
        ("transactionId", TransactionId, {"implicit": 0}),
        ("authenticateServerResponse", AuthenticateServerResponse),
    ]


class AuthenticateClientOk(Seq):
    _fields = [
        ("transactionId", TransactionId, {"implicit": 0}),
        ("profileMetaData", StoreMetadataRequest),
        ("prepareDownloadRequest", PrepareDownloadRequest),
    ]


class AuthenticateClientResponseEs9(core.Choice):
    explicit = (2, 59)
    _alternatives = [
        ("authenticateClientOk", AuthenticateClientOk, {"implicit": 0}),
        ("authenticateClientError", core.Integer, {"implicit": 1}),
    ]


class GetBoundProfilePackageRequest(Seq):
    class_, tag = 2, 58
    _fields = [
        ("transactionId", TransactionId, {"implicit": 0}),
        ("prepareDownloadResponse", PrepareDownloadResponse),
    ]


class GetBoundProfilePackageOk(Seq):
    _fields = [
        ("transactionId", TransactionId, {"implicit": 0}),
        ("boundProfilePackage", BoundProfilePackage),
    ]


class GetBoundProfilePackageResponse(core.Choice):
    explicit = (2, 58)
    _alternatives = [
        ("getBoundProfilePackageOk", GetBoundProfilePackageOk, {"implicit": 0}),
        ("getBoundProfilePackageError", core.Integer, {"implicit": 1}),
    ]


class HandleNotification(Seq):
    class_, tag = 2, 61
    _fields = [("pendingNotification", PendingNotification, {"explicit": 0})]


class CancelSessionRequestEs9(Seq):
    class_, tag = 2, 65
    _fields = [
        ("transactionId", TransactionId, {"implicit": 0}),
        ("cancelSessionResponse", CancelSessionResponse, {"explicit": 1}),
    ]


class EventEntries(Seq):
    _fields = [
        ("eventId", core.UTF8String, {"implicit": 0}),
        ("rspServerAddress", core.UTF8String, {"implicit": 1}),
    ]


class EventEntriesList(core.SequenceOf):
    _child_spec = EventEntries


class AuthenticateClientOkEs11(Seq):
    _fields = [
        ("transactionId", TransactionId, {"implicit": 0}),
        ("eventEntries", EventEntriesList, {"implicit": 1}),
    ]


class AuthenticateClientResponseEs11(core.Choice):
    explicit = (2, 64)
    _alternatives = [
        ("authenticateClientOk", AuthenticateClientOkEs11, {"implicit": 0}),
        ("authenticateClientError", core.Integer, {"implicit": 1}),
    ]


# --- decoding --------------------------------------------------------------------------------------


def decode(spec: type[core.Asn1Value], data: bytes):
    """Parse ``data`` as exactly one ``spec`` value, eagerly, checking SIZE constraints.

    Raises only DecodeError (with the type name and the problem) for malformed input.
    """
    if not isinstance(data, bytes | bytearray):
        raise DecodeError(f"{spec.__name__}: expected bytes, got {type(data).__name__}")
    try:
        value = spec.load(bytes(data), strict=True)
        _validate(value)
    except DecodeError as exc:
        raise DecodeError(f"malformed {spec.__name__}: {exc}") from None
    except Exception as exc:  # asn1crypto raises ValueError, TypeError, KeyError, OverflowError...
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DecodeError(f"malformed {spec.__name__}: {reason}") from None
    return value


def _validate(value: core.Asn1Value) -> None:
    """Force a full parse (asn1crypto is lazy) and apply SIZE constraints."""
    if isinstance(value, core.Choice):
        _validate(value.chosen)
    elif isinstance(value, x509.Certificate):
        _check_certificate(value.dump())
    elif isinstance(value, core.Sequence):
        value._parse_children(recurse=False)  # asn1crypto parses lazily; force it
        for index in range(len(value._fields)):
            child = value._lazy_child(index)
            if not isinstance(child, core.Void):
                _validate(child)
    elif isinstance(value, core.SequenceOf):
        for child in value:
            _validate(child)
    else:
        value.native  # noqa: B018 - parses the primitive
        if isinstance(value, _Sized):
            value.check_size()


def _check_certificate(der: bytes) -> None:
    """A well-formed X.509 certificate. cryptography's parser: strict and ~100x faster than a full
    asn1crypto parse (an RSP message carries up to two certificates; a download, about ten)."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # e.g. a non-positive serial number: malformed, not a warning
        try:
            cx509.load_der_x509_certificate(der)
        except (ValueError, Warning) as exc:
            raise DecodeError(f"malformed certificate: {exc}") from None


def encode(value: core.Asn1Value) -> bytes:
    return value.dump()

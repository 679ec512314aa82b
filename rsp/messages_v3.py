"""The SGP.22 v3 RSPDefinitions kinsim uses on top of the v2.5 message set: Remote Profile Management
(RPM, SGP.22 v3 sections 3.7, 5.6.3, 5.7.x "LoadRpmPackage") and what it touches.

Everything here extends ``rsp.messages`` without changing a v2 encoding: v2 values still decode with
these types, and where a v3 type widens a v2 one (a new CHOICE alternative, new NotificationEvent bits,
new optional components) it subclasses the v2 type, so a v3 value can stand wherever the v2 one is
expected. Tags follow the v3.1 module (AUTOMATIC TAGS): a SEQUENCE whose components carry no tag at
all gets [0], [1], ... (LoadRpmPackageResultSigned, LoadRpmPackageResult's alternatives).

Names are the v3 ASN.1 names, with one exception: NotificationEvent bits 1..3 keep their v2 names
(notificationEnable/Disable/Delete; v3 calls them notificationLocal...), so v2 code reads them as before.
"""

from __future__ import annotations

from asn1crypto import core

from rsp import messages as m

APPLICATION = m.APPLICATION

# --- NotificationEvent and NotificationMetadata -----------------------------------------------------


class NotificationEvent(m.NotificationEvent):
    _map = {**m.NotificationEvent._map, 4: "notificationRpmEnable", 5: "notificationRpmDisable",
            6: "notificationRpmDelete", 7: "loadRpmPackageResult"}


class NotificationMetadata(m.NotificationMetadata):
    """'BF2F' with the v3 NotificationEvent bits."""

    _fields = [
        ("seqNumber", core.Integer, {"implicit": 0}),
        ("profileManagementOperation", NotificationEvent, {"implicit": 1}),
        ("notificationAddress", core.UTF8String),
        ("iccid", m.Iccid, {"optional": True}),
    ]


# --- RPM configuration in the profile metadata (v3 5.4.1) ------------------------------------------


class RpmType(core.BitString):
    _map = {0: "enable", 1: "disable", 2: "delete", 3: "listProfileInfo", 4: "contactPcmp"}


class ManagingDp(m.Seq):
    _fields = [
        ("managingDpOid", core.ObjectIdentifier, {"implicit": 0}),
        ("rpmType", RpmType, {"implicit": 1, "optional": True}),
        ("tagList", core.OctetString, {"implicit": (APPLICATION, 28), "optional": True}),
    ]


class ManagingDpList(core.SequenceOf):
    _child_spec = ManagingDp


class RpmConfiguration(m.Seq):
    _fields = [
        ("managingDpList", ManagingDpList, {"implicit": 0}),
        ("pollingAddress", core.UTF8String, {"implicit": 1, "optional": True}),
        ("allowedCiPKId", core.OctetString, {"implicit": 2, "optional": True}),
        ("profileOwnerOid", core.ObjectIdentifier, {"implicit": 3}),
    ]


class VendorSpecificEntry(m.Seq):
    _fields = [("vendorOid", core.ObjectIdentifier, {"implicit": 0}),
               ("vendorSpecificData", core.OctetString, {"implicit": 1})]


class VendorSpecificExtension(core.SequenceOf):
    _child_spec = VendorSpecificEntry


class StoreMetadataRequest(m.StoreMetadataRequest):
    """'BF25' with the v3 components up to rpmConfiguration ('BA'); later ones stay extensions."""

    _fields = [
        *m.StoreMetadataRequest._fields,
        ("serviceSpecificDataStoredInEuicc", VendorSpecificExtension, {"implicit": 34, "optional": True}),
        ("serviceSpecificDataNotStoredInEuicc", VendorSpecificExtension, {"implicit": 35, "optional": True}),
        ("rpmConfiguration", RpmConfiguration, {"implicit": 26, "optional": True}),
    ]


# --- ctxParams1: the LPA announces RPM (v3 5.7.13) ------------------------------------------------


class OperationType(core.BitString):
    _map = {0: "profileDownload", 1: "rpm"}


class CtxParamsForCommonAuthentication(m.CtxParamsForCommonAuthentication):
    _fields = [
        *m.CtxParamsForCommonAuthentication._fields,
        ("operationType", OperationType, {"implicit": 2, "optional": True}),  # DEFAULT {profileDownload}
        ("iccid", m.Iccid, {"optional": True}),
    ]


class CtxParams1(m.CtxParams1):
    _alternatives = [("ctxParamsForCommonAuthentication", CtxParamsForCommonAuthentication, {"implicit": 0})]


def operation_types(ctx_params1: m.CtxParams1) -> set[str]:
    """The operationType of a received ctxParams1 (absent: {"profileDownload"}, its DEFAULT)."""
    params = m.decode(CtxParams1, ctx_params1.dump())
    return set(params.chosen["operationType"].native or {"profileDownload"})


# --- the RPM package (v3 "RpmPackage", "SmdpSigned3") -------------------------------------------


class IccidOnly(m.Seq):
    _fields = [("iccid", m.Iccid)]


class ProfileOwnerSearch(core.Choice):
    _alternatives = [("iccid", m.Iccid), ("profileOwnerOid", core.ObjectIdentifier, {"implicit": 0})]


class ListProfileInfo(m.Seq):
    _fields = [
        ("searchCriteria", ProfileOwnerSearch, {"explicit": 0, "optional": True}),
        ("tagList", core.OctetString, {"implicit": (APPLICATION, 28), "optional": True}),
    ]


class UpdateMetadata(m.Seq):
    _fields = [("iccid", m.Iccid), ("updateMetadataRequest", core.Any)]


class ContactPcmp(m.Seq):
    _fields = [("iccid", m.Iccid), ("dpiRpm", core.UTF8String, {"optional": True})]


class RpmCommandDetails(core.Choice):
    _alternatives = [
        ("enable", IccidOnly, {"implicit": 1}),
        ("disable", IccidOnly, {"implicit": 2}),
        ("delete", IccidOnly, {"implicit": 3}),
        ("listProfileInfo", ListProfileInfo, {"implicit": 4}),
        ("updateMetadata", UpdateMetadata, {"implicit": 5}),
        ("contactPcmp", ContactPcmp, {"implicit": 6}),
    ]


class RpmCommand(m.Seq):
    _fields = [
        ("continueOnFailure", core.Null, {"implicit": 0, "optional": True}),
        ("rpmCommandDetails", RpmCommandDetails),
    ]


class RpmPackage(core.SequenceOf):
    _child_spec = RpmCommand


class SmdpSigned3(m.Seq):
    _fields = [
        ("transactionId", m.TransactionId, {"implicit": 0}),
        ("rpmPackage", RpmPackage, {"implicit": 1}),
        ("rpmPending", core.Null, {"implicit": 2, "optional": True}),
    ]


class AuthenticateClientOkRpm(m.Seq):
    _fields = [
        ("transactionId", m.TransactionId, {"implicit": 0}),
        ("smdpSigned3", SmdpSigned3),
        ("smdpSignature3", core.OctetString, {"implicit": (APPLICATION, 55)}),
    ]


class AuthenticateClientResponseEs9(m.AuthenticateClientResponseEs9):
    """'BF3B' with the v3 RPM alternative [2] (device change [3], [4] are not supported)."""

    _alternatives = [*m.AuthenticateClientResponseEs9._alternatives,
                     ("authenticateClientOkRpm", AuthenticateClientOkRpm, {"implicit": 2})]


# --- ES10b.LoadRpmPackage ('BF44') ----------------------------------------------------------------


class LoadRpmPackageRequest(m.Seq):
    class_, tag = 2, 68
    _fields = [
        ("smdpSigned3", SmdpSigned3),
        ("smdpSignature3", core.OctetString, {"implicit": (APPLICATION, 55)}),
        ("targetEsimPort", core.Integer, {"optional": True}),
    ]


class UpdateMetadataResponse(core.Integer):
    _map = {0: "ok", 6: "enterpriseConfigurationNotAllowed", 7: "commandError", 12: "pprUpdateInvalidSetting",
            14: "invalidRpmConfiguration", 15: "deleteNotAllowed", 127: "undefinedError"}


class RpmProcessingTerminated(core.Integer):
    _map = {1: "resultSizeOverflow", 2: "unknownOrDamagedCommand", 3: "interruption",
            4: "commandsWithRefreshExceeded", 5: "commandAfterContactPcmp", 6: "commandPackageTooLarge"}


class RpmCommandResultData(core.Choice):
    _alternatives = [
        ("enableResult", m.EnableProfileResponse),
        ("disableResult", m.DisableProfileResponse),
        ("deleteResult", m.DeleteProfileResponse),
        ("listProfileInfoResult", core.Any, {"explicit": 45}),  # ProfileInfoListResponse 'BF2D', kept as is
        ("updateMetadataResult", UpdateMetadataResponse, {"implicit": 42}),
        ("contactPcmpResult", core.Any, {"explicit": 0}),
        ("rpmProcessingTerminated", RpmProcessingTerminated),
    ]


class RpmCommandResult(m.Seq):
    _fields = [
        ("iccid", m.Iccid, {"optional": True}),
        ("rpmCommandResultData", RpmCommandResultData),
    ]


class RpmPackageExecutionResult(core.SequenceOf):
    _child_spec = RpmCommandResult


class LoadRpmPackageErrorCodeSigned(core.Integer):
    _map = {2: "invalidSignature", 5: "invalidTransactionId", 127: "undefinedError"}


class LoadRpmPackageErrorCodeNotSigned(core.Integer):
    _map = {4: "noSession", 127: "undefinedError"}


class RpmFinalResult(core.Choice):
    _alternatives = [
        ("rpmPackageExecutionResult", RpmPackageExecutionResult, {"implicit": 0}),
        ("loadRpmPackageErrorCodeSigned", LoadRpmPackageErrorCodeSigned, {"implicit": 1}),
    ]


class LoadRpmPackageResultDataSigned(m.Seq):
    _fields = [
        ("transactionId", m.TransactionId, {"implicit": 0}),
        ("notificationMetadata", NotificationMetadata),
        ("smdpOid", core.ObjectIdentifier),
        ("finalResult", RpmFinalResult, {"explicit": 2}),
    ]


class LoadRpmPackageResultSigned(m.Seq):
    """euiccSignRPR is computed over loadRpmPackageResultDataSigned as encoded here (tag 'A0')."""

    _fields = [
        ("loadRpmPackageResultDataSigned", LoadRpmPackageResultDataSigned, {"implicit": 0}),
        ("euiccSignRPR", core.OctetString, {"implicit": 1}),
    ]


class LoadRpmPackageResultNotSigned(m.Seq):
    _fields = [
        ("transactionId", m.TransactionId, {"implicit": 0}),
        ("loadRpmPackageErrorCodeNotSigned", LoadRpmPackageErrorCodeNotSigned),
    ]


class LoadRpmPackageResult(core.Choice):
    explicit = (2, 68)
    _alternatives = [
        ("loadRpmPackageResultSigned", LoadRpmPackageResultSigned, {"implicit": 0}),
        ("loadRpmPackageResultNotSigned", LoadRpmPackageResultNotSigned, {"implicit": 1}),
    ]


# --- notifications carrying the RPM result --------------------------------------------------------


class PendingNotification(m.PendingNotification):
    _alternatives = [*m.PendingNotification._alternatives,
                     ("loadRpmPackageResultSigned", LoadRpmPackageResultSigned, {"implicit": 1})]


class PendingNotifications(core.SequenceOf):
    _child_spec = PendingNotification


class RetrieveNotificationsListResponse(m.RetrieveNotificationsListResponse):
    _alternatives = [("notificationList", PendingNotifications, {"implicit": 0}),
                     ("notificationsListResultError", core.Integer, {"implicit": 1})]


class NotificationMetadataList(core.SequenceOf):
    _child_spec = NotificationMetadata


class ListNotificationResponse(m.ListNotificationResponse):
    _alternatives = [("notificationMetadataList", NotificationMetadataList, {"implicit": 0}),
                     ("listNotificationsResultError", core.Integer, {"implicit": 1})]


def notification_metadata(pending: m.PendingNotification) -> m.NotificationMetadata:
    """The NotificationMetadata inside any PendingNotification alternative."""
    chosen = pending.chosen
    if pending.name == "profileInstallationResult":
        return chosen["profileInstallationResultData"]["notificationMetadata"]
    if pending.name == "loadRpmPackageResultSigned":
        return chosen["loadRpmPackageResultDataSigned"]["notificationMetadata"]
    return chosen["tbsOtherNotification"]


# CancelSessionReason values v3 adds for RPM (v3 5.7.14).
CANCEL_RPM_DISABLED = 27
CANCEL_INVALID_RPM_PACKAGE = 28
CANCEL_LOAD_RPM_PACKAGE_ERROR = 29

"""lpa.download: the SGP.22 3.1.3 procedure, its cancellations (5.7.14) and its error reports."""

from __future__ import annotations

import pytest

from lpa.download import (
    DeviceInfo,
    DownloadPostponed,
    DownloadProtocolError,
    PprNotAllowed,
    UserRejected,
    cancel_reason,
    download_profile,
    plmn_digits,
    ppr_decision,
)
from lpa.es9_client import Es9ConnectionError
from lpa.es10 import Es10Client
from lpa.transport import SimCardTransport
from rsp import bpp as rsp_bpp
from rsp import messages as m
from rsp import status
from rsp.activation import hash_confirmation_code
from rsp.errors import ApduError, BppError, Es10Error, StatusCodeError
from tests.lpa_fixtures import (
    DP_ADDRESS,
    ICCID,
    ICCID_BCD,
    SMDP_OID,
    TID,
    FakeCard,
    FakeEuicc,
    FakeSmdp,
    RecordingPeer,
    bound_package,
    pending_other,
)

PACKAGE = bound_package()
SEGMENTS = len(rsp_bpp.segments(PACKAGE))
OWNER = {"mccMnc": bytes.fromhex("00F110")}  # MCC 001, MNC 01


def setup(**euicc_options):
    euicc = FakeEuicc(segments=SEGMENTS, **euicc_options)
    es10 = Es10Client(SimCardTransport(FakeCard(euicc))).open()
    return es10, euicc


async def run(es10, smdp, **options):
    options.setdefault("smdp_address", DP_ADDRESS)
    return await download_profile(es10, smdp, **options)


@pytest.mark.asyncio
async def test_successful_download_installs_and_delivers_the_result():
    es10, euicc = setup()
    smdp = FakeSmdp(package=PACKAGE)
    seen = []
    progress = []
    result = await run(es10, smdp, matching_id="KIN-0001", device=DeviceInfo(tac=bytes.fromhex("35123456")),
                       confirm=lambda metadata: seen.append(metadata) or True,
                       progress=lambda done, total: progress.append(done))
    assert result.iccid == ICCID and result.isdp_aid == "A0000005591010FFFFFFFF8900001000"
    assert seen[0].service_provider_name == "Kin Mobile" and seen[0].iccid == ICCID
    assert smdp.names() == ["initiate_authentication", "authenticate_client", "get_bound_profile_package",
                            "handle_notification"]
    assert len(progress) == SEGMENTS and progress[-1] == sum(len(s) for s in rsp_bpp.segments(PACKAGE))
    # the installation result went to the SM-DP+ and only then left the card
    delivered = smdp.calls[-1][1]["notification"]
    assert m.decode(m.PendingNotification, delivered).name == "profileInstallationResult"
    assert euicc.pending == {} and result.notifications[0].removed
    assert euicc.requests_of(0xBF41) == []
    ctx = m.decode(m.AuthenticateServerRequest, euicc.requests_of(0xBF38)[0])["ctxParams1"].chosen
    assert ctx["matchingId"].native == "KIN-0001"
    assert ctx["deviceInfo"]["tac"].native == bytes.fromhex("35123456")
    assert ctx["deviceInfo"]["deviceCapabilities"]["eutranSupportedRelease"].native == b"\x0f\x00\x00"
    assert euicc.requests_of(0xBF36)[0] == rsp_bpp.segments(PACKAGE)[0]


@pytest.mark.asyncio
async def test_refusal_cancels_on_card_and_server_with_end_user_rejection():
    es10, euicc = setup()
    smdp = FakeSmdp(package=PACKAGE)
    with pytest.raises(UserRejected):
        await run(es10, smdp, confirm=lambda metadata: False)
    assert euicc.cancel_reasons() == [0]
    assert smdp.names()[-1] == "cancel_session"
    relayed = smdp.calls[-1][1]["response"]
    assert relayed.dump() == euicc._cancel_session(euicc.requests_of(0xBF41)[0])  # the card's signed answer
    assert euicc.requests_of(0xBF21) == []  # nothing prepared


@pytest.mark.asyncio
async def test_postponing_cancels_with_postponed():
    es10, euicc = setup()

    async def later(metadata):
        raise DownloadPostponed("not now")

    with pytest.raises(DownloadPostponed):
        await run(es10, FakeSmdp(package=PACKAGE), confirm=later)
    assert euicc.cancel_reasons() == [1]


@pytest.mark.asyncio
async def test_confirmation_code_is_hashed_with_the_transaction_id():
    es10, euicc = setup()
    result = await run(es10, FakeSmdp(package=PACKAGE, cc_required=True), confirmation_code=lambda: "7391")
    assert result.iccid == ICCID
    request = m.decode(m.PrepareDownloadRequest, euicc.requests_of(0xBF21)[0])
    assert request["hashCc"].native == hash_confirmation_code("7391", TID)


@pytest.mark.asyncio
async def test_missing_confirmation_code_postpones():
    es10, euicc = setup()
    with pytest.raises(DownloadPostponed, match="confirmation code"):
        await run(es10, FakeSmdp(package=PACKAGE, cc_required=True))
    assert euicc.cancel_reasons() == [1] and euicc.requests_of(0xBF21) == []


@pytest.mark.asyncio
async def test_server_timeout_cancels_with_timeout():
    es10, euicc = setup()
    smdp = FakeSmdp(package=PACKAGE, fail={"get_bound_profile_package": Es9ConnectionError(DP_ADDRESS, "timeout",
                                                                                            "too slow")})
    with pytest.raises(Es9ConnectionError):
        await run(es10, smdp)
    assert euicc.cancel_reasons() == [2]
    assert smdp.names()[-1] == "cancel_session"


@pytest.mark.asyncio
async def test_server_refusal_cancels_the_card_session_only():
    es10, euicc = setup()
    refusal = StatusCodeError(status.MATCHING_ID_REFUSED, "no order")
    smdp = FakeSmdp(package=PACKAGE, fail={"authenticate_client": refusal})
    with pytest.raises(StatusCodeError):
        await run(es10, smdp)
    assert euicc.cancel_reasons() == [127]
    assert "cancel_session" not in smdp.names()  # the SM-DP+ ended its session when it refused


@pytest.mark.asyncio
async def test_install_failure_reports_command_and_reason_after_delivering_the_result():
    es10, euicc = setup(install_error=(2, 9))
    smdp = FakeSmdp(package=PACKAGE)
    with pytest.raises(BppError) as info:
        await run(es10, smdp)
    assert (info.value.bpp_command_id, info.value.error_reason) == (2, 9)
    assert "storeMetadata" in str(info.value) and "already installed" in str(info.value)
    assert smdp.names()[-1] == "handle_notification"  # the SM-DP+ learns why, so it can reset the order
    assert euicc.pending == {} and euicc.requests_of(0xBF41) == []
    assert len(euicc.requests_of(0xBF36)) == 1 and len(euicc.requests) < 20  # stopped at the first segment


@pytest.mark.asyncio
async def test_authenticate_server_error_is_relayed_not_cancelled():
    es10, euicc = setup(authenticate_error=7)
    smdp = FakeSmdp(package=PACKAGE, fail={"authenticate_client": StatusCodeError(status.CI_PK_UNKNOWN, "x")})
    with pytest.raises(Es10Error) as info:
        await run(es10, smdp)
    assert (info.value.function, info.value.name) == ("AuthenticateServer", "ciPKUnknown")
    assert smdp.calls[-1][0] == "authenticate_client"
    assert smdp.calls[-1][1]["response"].name == "authenticateResponseError"
    assert euicc.requests_of(0xBF41) == []


@pytest.mark.asyncio
async def test_prepare_download_error_is_relayed_and_the_session_cancelled():
    es10, euicc = setup(prepare_error=2)
    smdp = FakeSmdp(package=PACKAGE)
    with pytest.raises(Es10Error, match="invalidSignature"):
        await run(es10, smdp)
    relayed = next(v for n, v in smdp.calls if n == "get_bound_profile_package")["response"]
    assert relayed.name == "downloadResponseError"
    assert euicc.cancel_reasons() == [127]


@pytest.mark.asyncio
async def test_server_address_mismatch_stops_before_the_card_authenticates():
    es10, euicc = setup()
    with pytest.raises(DownloadProtocolError, match="serverAddress"):
        await run(es10, FakeSmdp(package=PACKAGE, address="evil.kinsim.test"))
    assert euicc.requests_of(0xBF38) == []


@pytest.mark.asyncio
async def test_smdp_oid_from_the_activation_code_is_checked():
    es10, euicc = setup()
    with pytest.raises(DownloadProtocolError, match="OID"):
        await run(es10, FakeSmdp(package=PACKAGE), smdp_oid="2.999.77")
    es10, euicc = setup()
    assert (await run(es10, FakeSmdp(package=PACKAGE), smdp_oid=SMDP_OID)).iccid == ICCID


@pytest.mark.asyncio
async def test_default_smdp_use_case_sends_an_empty_matching_id():
    es10, euicc = setup()
    await run(es10, FakeSmdp(package=PACKAGE), matching_id="")
    ctx = m.decode(m.AuthenticateServerRequest, euicc.requests_of(0xBF38)[0])["ctxParams1"].chosen
    assert ctx["matchingId"].native == ""


@pytest.mark.asyncio
async def test_undeliverable_result_stays_on_the_card():
    es10, euicc = setup()
    smdp = FakeSmdp(package=PACKAGE, fail={"handle_notification": Es9ConnectionError(DP_ADDRESS, "refused", "down")})
    result = await run(es10, smdp)
    assert result.iccid == ICCID
    assert not result.notifications[0].delivered and "down" in result.notifications[0].error
    assert len(euicc.pending) == 1 and euicc.requests_of(0xBF30) == []


@pytest.mark.asyncio
async def test_older_notifications_go_to_their_own_address():
    es10, euicc = setup()
    euicc.add_notification(pending_other(1, address="other.kinsim.test"))
    other = RecordingPeer()
    result = await run(es10, FakeSmdp(package=PACKAGE), peers=lambda address: other)
    assert len(other.received) == 1 and euicc.pending == {}
    assert [d.notification.seq_number for d in result.notifications] == [1, 2]


# --- profile policy rules ---------------------------------------------------------------------------


def ppr_metadata():
    return {"iccid": ICCID_BCD, "serviceProviderName": "Kin Mobile", "profileName": "Locked",
            "profileOwner": OWNER, "profilePolicyRules": {"ppr1"}}


@pytest.mark.asyncio
async def test_ppr_not_allowed_by_the_rat_cancels_with_ppr_not_allowed():
    es10, euicc = setup(rat=[])
    with pytest.raises(PprNotAllowed):
        await run(es10, FakeSmdp(package=PACKAGE, metadata=ppr_metadata()))
    assert euicc.cancel_reasons() == [3]


@pytest.mark.asyncio
async def test_ppr_allowed_with_consent_is_shown_to_the_user():
    rule = {"pprIds": {"ppr1"}, "allowedOperators": [{"mccMnc": bytes.fromhex("E0FEEE")}],
            "pprFlags": {"consentRequired"}}
    es10, euicc = setup(rat=[rule])
    seen = []
    await run(es10, FakeSmdp(package=PACKAGE, metadata=ppr_metadata()), confirm=lambda md: seen.append(md) or True)
    assert seen[0].ppr_consent_required and seen[0].profile_policy_rules == ("ppr1",)
    assert seen[0].profile_owner == {"mcc": "001", "mnc": "01"}


def test_ppr_decision_rules():
    owner = {"mccMnc": bytes.fromhex("00F110"), "gid1": b"\x01"}
    wildcard = {"pprIds": {"ppr1", "ppr2"}, "allowedOperators": [{"mccMnc": bytes.fromhex("EEEEEE")}],
                "pprFlags": set()}
    other_operator = {"pprIds": {"ppr1"}, "allowedOperators": [{"mccMnc": bytes.fromhex("21F354")}],
                      "pprFlags": {"consentRequired"}}
    gid_bound = {"pprIds": {"ppr2"}, "allowedOperators": [{"mccMnc": bytes.fromhex("00F110"), "gid1": b"\x02"}],
                 "pprFlags": set()}
    assert ppr_decision({"pprUpdateControl"}, None, []) == (True, False)
    assert ppr_decision({"ppr1"}, owner, [other_operator]) == (False, False)
    assert ppr_decision({"ppr1", "ppr2"}, owner, [other_operator, wildcard]) == (True, False)
    assert ppr_decision({"ppr2"}, owner, [gid_bound]) == (False, False)
    assert ppr_decision({"ppr1"}, None, [wildcard]) == (False, False)


def test_plmn_digits():
    assert plmn_digits(bytes.fromhex("00F110")) == ("001", "01")
    assert plmn_digits(bytes.fromhex("130014")) == ("310", "410")


def test_cancel_reasons_follow_5_7_14():
    assert cancel_reason(UserRejected("no")) == 0
    assert cancel_reason(DownloadPostponed("later")) == 1
    assert cancel_reason(KeyboardInterrupt()) == 1
    assert cancel_reason(TimeoutError()) == 2
    assert cancel_reason(Es9ConnectionError("a.b", "timeout", "slow")) == 2
    assert cancel_reason(PprNotAllowed("ppr")) == 3
    assert cancel_reason(Es9ConnectionError("a.b", "refused", "down")) == 127


@pytest.mark.asyncio
async def test_lost_authenticate_server_answer_still_cancels_on_the_card():
    es10, euicc = setup()

    real = es10.store_data

    def store_data(request, function="ES10"):
        if function == "AuthenticateServer":
            real(request, function)  # the card processed it ...
            raise ApduError(0x6F00, "the answer was lost")  # ... but the LPA never saw the answer
        return real(request, function)

    es10.store_data = store_data
    with pytest.raises(ApduError):
        await run(es10, FakeSmdp(package=PACKAGE))
    assert euicc.cancel_reasons() == [127]

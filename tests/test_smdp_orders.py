"""ES2+ at the SM-DP+ (SGP.22 5.3): inventory, DownloadOrder, ConfirmOrder, ReleaseProfile,
CancelOrder, the profile states, and the ES2+ JSON binding."""

from __future__ import annotations

import re
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rsp import status
from rsp.errors import DecodeError, StatusCode, StatusCodeError
from rsp.es9_json import MissingField
from smdp import es2_json
from smdp.orders import (
    CONDITIONAL_ELEMENT_MISSING,
    EID_INVALID,
    PROFILE_TYPE_MISMATCH,
    OrderHooks,
    import_profile,
)
from smdp.store import ProfileState, StoreError
from tests.smdp_fixtures import EID, OTHER_EID, PROFILE_TYPE, make_smdp, packages, snapshot

MNO, OTHER_MNO = "mno1", "mno2"


@pytest.fixture
def smdp(tmp_path):
    smdp = make_smdp(tmp_path / "state")
    yield smdp
    smdp.store.close()


@pytest.fixture
def orders(smdp):
    return smdp.orders


def refused(smdp, code: StatusCode, call, *args, **kwargs) -> StatusCodeError:
    before = snapshot(smdp.store)
    with pytest.raises(StatusCodeError) as info:
        call(*args, **kwargs)
    assert info.value.code == code, info.value
    assert snapshot(smdp.store) == before
    return info.value


# --- inventory -----------------------------------------------------------------------------------


def test_import_reads_the_iccid_from_the_package(smdp):
    assert smdp.iccids == [p.iccid for p in packages(3)]
    assert all(smdp.store.profile(i).state is ProfileState.AVAILABLE for i in smdp.iccids)
    assert smdp.store.upp(smdp.iccids[0]) == packages(1)[0].der


def test_import_refuses_duplicates_and_garbage(smdp):
    now = datetime.now(UTC)
    with pytest.raises(StoreError, match="already in the inventory"):
        import_profile(smdp.store, packages(1)[0].der, now)
    with pytest.raises(DecodeError):
        import_profile(smdp.store, b"\x30\x03\x01\x01\x00", now)
    assert len(smdp.store.profiles()) == 3


# --- DownloadOrder -------------------------------------------------------------------------------


def test_download_order_allocates_or_links(smdp, orders):
    first = orders.download_order(MNO, profile_type=PROFILE_TYPE)
    second = orders.download_order(MNO, profile_type=PROFILE_TYPE, eid=EID)
    third = orders.download_order(MNO, iccid=smdp.iccids[2])
    assert [first, second, third] == smdp.iccids
    states = [smdp.store.profile(i) for i in smdp.iccids]
    assert [p.state for p in states] == [ProfileState.ALLOCATED, ProfileState.LINKED, ProfileState.ALLOCATED]
    assert states[1].eid == EID and all(p.requester == MNO for p in states)


@pytest.mark.parametrize(("kwargs", "code"), [
    ({"iccid": "8944000000000000092"}, status.ICCID_UNKNOWN),
    ({"profile_type": "no-such-type"}, status.PROFILE_TYPE_UNKNOWN),
    ({}, CONDITIONAL_ELEMENT_MISSING),
    ({"profile_type": PROFILE_TYPE, "eid": "1234"}, EID_INVALID),
    ({"iccid": "first", "profile_type": "other-type"}, PROFILE_TYPE_MISMATCH),
])
def test_download_order_refusals(smdp, orders, kwargs, code):
    kwargs = {k: smdp.iccids[0] if v == "first" else v for k, v in kwargs.items()}
    refused(smdp, code, orders.download_order, MNO, **kwargs)


def test_download_order_of_a_taken_profile(smdp, orders):
    orders.download_order(MNO, iccid=smdp.iccids[0])
    refused(smdp, status.ICCID_ALREADY_IN_USE, orders.download_order, MNO, iccid=smdp.iccids[0])
    for _ in smdp.iccids[1:]:
        orders.download_order(MNO, profile_type=PROFILE_TYPE)
    refused(smdp, status.PROFILE_TYPE_UNAVAILABLE, orders.download_order, MNO, profile_type=PROFILE_TYPE)


# --- ConfirmOrder, ReleaseProfile ----------------------------------------------------------------


def test_confirm_order_generates_a_matching_id(smdp, orders):
    iccid = orders.download_order(MNO, profile_type=PROFILE_TYPE)
    result = orders.confirm_order(MNO, iccid=iccid, release_flag=False)
    assert re.fullmatch(r"[A-Z2-7]{5}(-[A-Z2-7]{5}){3}", result["matchingId"])
    assert result == {"eid": None, "matchingId": result["matchingId"], "smdpAddress": "localhost"}
    profile = smdp.store.profile(iccid)
    assert (profile.state, profile.matching_id) == (ProfileState.CONFIRMED, result["matchingId"])
    orders.release_profile(MNO, iccid=iccid)
    assert smdp.store.profile(iccid).state is ProfileState.RELEASED


def test_confirm_order_with_eid_matching_id_and_code(smdp, orders):
    iccid = orders.download_order(MNO, profile_type=PROFILE_TYPE)
    result = orders.confirm_order(MNO, iccid=iccid, eid=EID, matching_id="KIN-0001", confirmation_code="9876",
                                  release_flag=True)
    assert result["eid"] == EID and result["matchingId"] == "KIN-0001"
    profile = smdp.store.profile(iccid)
    assert profile.state is ProfileState.RELEASED and profile.cc_required and profile.eid == EID
    assert b"9876" not in profile.cc_hash  # only a digest is kept


def test_confirm_order_refusals(smdp, orders):
    taken = orders.download_order(MNO, profile_type=PROFILE_TYPE)
    orders.confirm_order(MNO, iccid=taken, matching_id="TAKEN", release_flag=True)
    linked = orders.download_order(MNO, profile_type=PROFILE_TYPE, eid=EID)
    cases = [
        (status.MATCHING_ID_CONFLICT, {"iccid": linked, "matching_id": "TAKEN"}),
        (status.MATCHING_ID_INVALID, {"iccid": linked, "matching_id": "lower-case"}),
        (status.EID_MISMATCH, {"iccid": linked, "eid": OTHER_EID}),
        (status.ICCID_INVALID_TRANSITION, {"iccid": taken}),
        (status.ICCID_UNKNOWN, {"iccid": "8944000000000000092"}),
        (status.INVALID_REQUEST, {"iccid": linked, "confirmation_code": ""}),
    ]
    for code, kwargs in cases:
        refused(smdp, code, orders.confirm_order, MNO, release_flag=True, **kwargs)
    refused(smdp, status.ICCID_NOT_ALLOWED, orders.confirm_order, OTHER_MNO, iccid=linked, release_flag=True)


def test_an_order_without_matching_id_needs_an_eid(smdp, orders):
    iccid = orders.download_order(MNO, profile_type=PROFILE_TYPE)
    refused(smdp, status.EID_MISSING, orders.confirm_order, MNO, iccid=iccid, matching_id="", release_flag=True)
    refused(smdp, status.EID_MISSING, orders.confirm_order, MNO, iccid=iccid, smds_address="smds.example",
            release_flag=True)


def test_sm_ds_registration_is_an_extension_point(smdp, orders):
    seen = []

    class Hooks(OrderHooks):
        def order_confirmed(self, profile):
            seen.append((profile.iccid, profile.eid, profile.smds_address))

    orders.hooks = Hooks()
    iccid = orders.download_order(MNO, profile_type=PROFILE_TYPE, eid=EID)
    orders.confirm_order(MNO, iccid=iccid, smds_address="smds.example", release_flag=True)
    assert seen == [(iccid, EID, "smds.example")]


def test_release_needs_a_confirmed_order(smdp, orders):
    iccid = orders.download_order(MNO, profile_type=PROFILE_TYPE)
    refused(smdp, status.ICCID_INVALID_TRANSITION, orders.release_profile, MNO, iccid=iccid)
    orders.confirm_order(MNO, iccid=iccid, release_flag=False)
    refused(smdp, status.ICCID_NOT_ALLOWED, orders.release_profile, OTHER_MNO, iccid=iccid)


# --- CancelOrder ---------------------------------------------------------------------------------


@pytest.mark.parametrize("final", ["Available", "Unavailable"])
def test_cancel_order_frees_the_profile(smdp, orders, final):
    iccid = orders.download_order(MNO, profile_type=PROFILE_TYPE, eid=EID)
    orders.confirm_order(MNO, iccid=iccid, matching_id="CANCEL-ME", confirmation_code="1", release_flag=True)
    orders.cancel_order(MNO, iccid=iccid, eid=EID, matching_id="CANCEL-ME", final_status=final)
    profile = smdp.store.profile(iccid)
    assert profile.state is ProfileState(final)
    assert (profile.eid, profile.matching_id, profile.cc_hash, profile.requester) == (None, None, None, None)
    assert not smdp.store.matching_id_taken("CANCEL-ME")


def test_cancel_order_refusals(smdp, orders):
    iccid = orders.download_order(MNO, profile_type=PROFILE_TYPE, eid=EID)
    orders.confirm_order(MNO, iccid=iccid, matching_id="KEEP", release_flag=True)
    cases = [
        (status.INVALID_REQUEST, {"final_status": "Gone"}),
        (status.EID_MISMATCH, {"eid": OTHER_EID}),
        (status.MATCHING_ID_MISMATCH, {"matching_id": "OTHER"}),
    ]
    for code, kwargs in cases:
        refused(smdp, code, orders.cancel_order, MNO, iccid=iccid, **kwargs)
    refused(smdp, status.ICCID_NOT_ALLOWED, orders.cancel_order, OTHER_MNO, iccid=iccid)
    refused(smdp, status.ICCID_INVALID_TRANSITION, orders.cancel_order, MNO, iccid=smdp.iccids[1])


# --- the ES2+ JSON binding -----------------------------------------------------------------------


def _body(**members):
    return {"header": {"functionRequesterIdentifier": MNO, "functionCallIdentifier": "call-1"}, **members}


def test_es2_request_round_trip():
    header = es2_json.RequestHeader(MNO, "call-7")
    args = {"iccid": "8944000000000000001", "eid": EID, "matching_id": "ABC", "release_flag": True}
    body = es2_json.encode_request(es2_json.CONFIRM_ORDER, header, args)
    assert body["releaseFlag"] is True and body["matchingId"] == "ABC" and "confirmationCode" not in body
    assert es2_json.decode_request(es2_json.CONFIRM_ORDER, body) == (header, args)


@pytest.mark.parametrize(("body", "error"), [
    ({"iccid": "1"}, MissingField),
    ({"header": {"functionCallIdentifier": "x"}, "iccid": "1"}, MissingField),
    (_body(), MissingField),
    (_body(iccid=8944), DecodeError),
    (_body(iccid="1", releaseFlag="true"), DecodeError),
    ([], DecodeError),
])
def test_es2_request_decoding_errors(body, error):
    function = es2_json.CONFIRM_ORDER if "releaseFlag" in str(body) else es2_json.RELEASE_PROFILE
    with pytest.raises(error):
        es2_json.decode_request(function, body)


JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=8),
                    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
                    max_leaves=12)


@given(members=st.dictionaries(st.sampled_from(["header", "iccid", "eid", "matchingId", "releaseFlag",
                                                "confirmationCode", "smdsAddress"]), JSON))
def test_es2_decoding_accepts_or_raises_decode_error_only(members):
    try:
        header, args = es2_json.decode_request(es2_json.CONFIRM_ORDER, members)
    except DecodeError:
        return
    assert isinstance(header.function_requester_identifier, str) and isinstance(args["release_flag"], bool)


def test_es2_numbers_are_not_booleans():
    body = _body(iccid="1", profileType="t", timestamp="x", notificationPointId=True,
                 notificationPointStatus={"status": "Executed-Success"})
    with pytest.raises(DecodeError, match="notificationPointId"):
        es2_json.decode_request(es2_json.HANDLE_DOWNLOAD_PROGRESS_INFO, body)


def test_es2_response_and_failure():
    ok = es2_json.encode_response(es2_json.CONFIRM_ORDER, {"matchingId": "M", "eid": None, "smdpAddress": "a.b"})
    assert ok == {"header": {"functionExecutionStatus": {"status": "Executed-Success"}}, "matchingId": "M",
                  "smdpAddress": "a.b"}
    assert es2_json.decode_response(es2_json.CONFIRM_ORDER, ok) == {"matchingId": "M", "smdpAddress": "a.b"}
    failed = {"header": {"functionExecutionStatus": {"status": "Failed", "statusCodeData": {
        "subjectCode": "8.2.1", "reasonCode": "3.9", "message": "unknown"}}}}
    with pytest.raises(StatusCodeError) as info:
        es2_json.decode_response(es2_json.DOWNLOAD_ORDER, failed)
    assert info.value.code == status.ICCID_UNKNOWN


def test_progress_info_body():
    moment = datetime(2025, 3, 4, 5, 6, 7, tzinfo=UTC)
    body = es2_json.progress_info(requester_id="2.999.10", call_id="c1", iccid="8944000000000000001",
                                  profile_type="t", eid=None, timestamp=moment, point=2,
                                  error=StatusCodeError(status.CC_REFUSED, "wrong code"), result_data=b"\xbf\x37")
    header, args = es2_json.decode_request(es2_json.HANDLE_DOWNLOAD_PROGRESS_INFO, body)
    assert header.function_requester_identifier == "2.999.10"
    assert args["timestamp"] == "2025-03-04T05:06:07Z" and "eid" not in args and args["result_data"] == "vzc="
    assert args["status"] == {"status": "Failed", "statusCodeData": {"subjectCode": "8.2.7", "reasonCode": "3.8",
                                                                     "message": "wrong code"}}

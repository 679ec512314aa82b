"""mno.plans and mno.service: invitations, EID binding, attempt bookkeeping, revocation, device change,
access rules and the audit trail, on the in-memory store with a stand-in SM-DP+."""

from __future__ import annotations

import dataclasses
import json
import re
from datetime import timedelta

import pytest

from mno import plans
from mno.authenticator import AuthenticationRefused, ChallengeOutcome
from mno.es2_client import Es2Unavailable
from mno.plans import (
    OPERATOR,
    SMDP,
    InvitationState,
    MemberState,
    Principal,
    ProfileState,
    ProgressEvent,
)
from mno.service import CallableSink, DirectorySink, ServiceConfig, TemplateError, metadata_for
from rsp import status
from rsp.activation import ActivationCodeError, parse_activation_code
from rsp.errors import StatusCodeError
from rsp.ids import validate_iccid
from rsp.saip import ProfilePackage
from tests.mno_fixtures import EID_A, EID_B, SMDP_ADDRESS, SoftUsim, make_rig, new_plan

pytestmark = pytest.mark.asyncio
MATCHING_ID = re.compile(r"[A-Z2-7]{5}(-[A-Z2-7]{5}){3}")


def installed(iccid: str, eid: str | None = EID_A) -> ProgressEvent:
    return ProgressEvent(iccid, plans.POINT_BPP_INSTALLATION, True, eid=eid, operation="install", install_ok=True)


async def invite(rig, owner, name="Ben Member", **kwargs):
    return await rig.service.invite(owner, owner.plan_id, name, **kwargs)


async def joined(rig, owner, name="Ben Member", eid=EID_A):
    """An invited member whose profile is installed: (invite, member principal)."""
    inv = await invite(rig, owner, name)
    await rig.service.handle_progress("smdp", installed(inv.order.profile.iccid, eid))
    return inv, rig.book.authenticate(inv.order.member_token)


def state_of(rig, owner, invitation_id) -> InvitationState:
    return rig.book.get_invitation(owner, owner.plan_id, invitation_id).state


# --- invitations ---------------------------------------------------------------------------------------


async def test_invitation_places_a_unique_linked_profile_with_es2():
    rig = make_rig()
    plan, owner, _ = new_plan(rig.book)
    inv = await invite(rig, owner)
    order, invitation = inv.order, inv.invitation
    numbering = plan.numbering
    assert validate_iccid(order.profile.iccid) and order.profile.iccid.startswith(numbering.iccid_prefix)
    assert order.profile.imsi.startswith(numbering.mcc + numbering.mnc) and len(order.profile.imsi) == 15
    assert rig.smdp.names() == ["downloadOrder", "confirmOrder"]
    confirm = rig.smdp.calls[1][1]
    assert confirm["matching_id"] == invitation.matching_id and MATCHING_ID.fullmatch(invitation.matching_id)
    assert confirm["confirmation_code"] == order.confirmation_code and re.fullmatch(r"\d{8}", order.confirmation_code)
    assert confirm["release_flag"] is True and confirm["eid"] is None and confirm["smds_address"] is None
    code = parse_activation_code(inv.activation_code)
    assert (code.smdp_address, code.matching_id, code.cc_required) == (SMDP_ADDRESS, invitation.matching_id, True)
    assert invitation.state is InvitationState.PENDING
    member = rig.book.get_member(owner, plan.plan_id, order.member.member_id)[0]
    assert member.state is MemberState.INVITED


async def test_invited_profile_passes_aka_with_the_provisioned_keys():
    rig = make_rig()
    _, owner, _ = new_plan(rig.book)
    inv = await invite(rig, owner)
    package, _ = rig.smdp.uploads[inv.order.profile.iccid]
    card = SoftUsim.from_package(package)
    assert rig.authenticator.challenge(inv.order.profile.imsi, card) is ChallengeOutcome.AUTHENTICATED
    subscriber = rig.authenticator.subscriber(inv.order.profile.imsi)
    assert subscriber.algorithm == "milenage" and subscriber.iccid == inv.order.profile.iccid


async def test_each_invitation_gets_fresh_numbers_keys_and_matching_id():
    rig = make_rig()
    _, owner, _ = new_plan(rig.book)
    invites = [await invite(rig, owner, f"M{i}") for i in range(4)]
    for attribute in ("iccid", "imsi"):
        assert len({getattr(i.order.profile, attribute) for i in invites}) == 4
    assert len({i.invitation.matching_id for i in invites}) == 4
    assert len({i.order.ki for i in invites}) == 4 and len({i.order.opc for i in invites}) == 4


async def test_profile_metadata_and_package_carry_no_personal_data():
    rig = make_rig()
    plan, owner, _ = new_plan(rig.book)
    inv = await invite(rig, owner, "Zelda Zimmermann", eid=EID_B)
    package, metadata = rig.smdp.uploads[inv.order.profile.iccid]
    assert metadata == metadata_for(plan, rig.book.config.service_provider_name)
    text = f"{metadata.service_provider_name} {metadata.profile_name} {metadata.profile_type}"
    assert plan.plan_id.rsplit("-", 1)[-1][:6].upper() in metadata.profile_name  # it names the plan
    for personal in ("Zelda", "Zimmermann", "Olivia", "Owner", EID_B):
        assert personal not in text
        assert personal.encode() not in package


async def test_eid_bound_invitation_orders_for_that_eid_and_registers_with_the_smds():
    rig = make_rig(smds_address="smds.kinsim.test")
    _, owner, _ = new_plan(rig.book)
    inv = await invite(rig, owner, eid=EID_A)
    assert rig.smdp.calls[0] == ("downloadOrder", {"iccid": inv.order.profile.iccid, "eid": EID_A})
    confirm = rig.smdp.calls[1][1]
    assert confirm["eid"] == EID_A and confirm["smds_address"] == "smds.kinsim.test"
    view = plans.invitation_view(inv.invitation, rig.clock())
    assert view["eid_bound"] is True and EID_A not in str(view)


async def test_invalid_eid_is_refused_without_any_change():
    rig = make_rig()
    _, owner, _ = new_plan(rig.book)
    before = rig.book.audit_log(owner, owner.plan_id)
    with pytest.raises(plans.InvalidRequest):
        await invite(rig, owner, eid=EID_A[:-1] + "0")
    assert rig.book.audit_log(owner, owner.plan_id) == before
    assert rig.smdp.calls == [] and len(rig.book.list_members(owner, owner.plan_id)) == 1


@pytest.mark.parametrize("name", ["", " ", "x" * 65, "Eve\x1b[2J", "Eve\x7f", "Eve\x9b2J", "Eve\u202eevil.exe",
                                  "Eve\u2066x", "Eve\u2028Bob"])
async def test_display_names_that_could_rewrite_a_terminal_or_reorder_text_are_refused(name):
    rig = make_rig()
    _, owner, _ = new_plan(rig.book)
    with pytest.raises(plans.InvalidRequest):
        await invite(rig, owner, name)
    assert rig.smdp.calls == [] and len(rig.book.list_members(owner, owner.plan_id)) == 1
    assert (await invite(rig, owner, "Zoë 👩\u200d👧 <b>&amp;")).order.member.display_name == "Zoë 👩\u200d👧 <b>&amp;"


async def test_invitation_expires_then_the_order_is_cancelled_and_the_imsi_barred():
    rig = make_rig()
    _, owner, _ = new_plan(rig.book)
    inv = await invite(rig, owner, ttl=timedelta(hours=2))
    rig.clock.advance(hours=1, minutes=59)
    assert await rig.service.expire_invitations() == []
    rig.clock.advance(minutes=1)
    assert rig.book.get_invitation(owner, owner.plan_id, inv.invitation.invitation_id).effective_state(
        rig.clock()) is InvitationState.EXPIRED  # reads as expired before the sweep ran
    expired = await rig.service.expire_invitations()
    assert [c.invitation.invitation_id for c in expired] == [inv.invitation.invitation_id]
    assert state_of(rig, owner, inv.invitation.invitation_id) is InvitationState.EXPIRED
    assert rig.smdp.calls[-1] == ("cancelOrder", {"iccid": inv.order.profile.iccid, "final_status": "Unavailable"})
    with pytest.raises(AuthenticationRefused):
        rig.authenticator.generate_vector(inv.order.profile.imsi)
    assert plans.invitation_view(expired[0].invitation, rig.clock())["activation_code"] is None


async def test_invitation_is_single_use():
    rig = make_rig()
    _, owner, _ = new_plan(rig.book)
    inv, member = await joined(rig, owner)
    assert state_of(rig, owner, inv.invitation.invitation_id) is InvitationState.USED
    assert rig.book.get_member(member, owner.plan_id, member.member_id)[0].state is MemberState.ACTIVE
    with pytest.raises(plans.Conflict):
        await rig.service.cancel_invitation(owner, owner.plan_id, inv.invitation.invitation_id)
    # a repeated installation report changes nothing
    before = rig.book.get_member(member, owner.plan_id, member.member_id)
    await rig.service.handle_progress("smdp", installed(inv.order.profile.iccid))
    assert rig.book.get_member(member, owner.plan_id, member.member_id) == before


@pytest.mark.parametrize("max_attempts", [1, 3])
async def test_wrong_confirmation_codes_count_against_the_attempt_limit(max_attempts):
    rig = make_rig()
    _, owner, _ = new_plan(rig.book, max_cc_attempts=max_attempts)
    inv = await invite(rig, owner)
    wrong = ProgressEvent(inv.order.profile.iccid, plans.POINT_CONFIRMATION, False, EID_A, "8.2.7/3.8")
    for attempt in range(1, max_attempts):
        await rig.service.handle_progress("smdp", wrong)
        current = rig.book.get_invitation(owner, owner.plan_id, inv.invitation.invitation_id)
        assert (current.state, current.cc_failures) == (InvitationState.PENDING, attempt)
    await rig.service.handle_progress("smdp", wrong)
    current = rig.book.get_invitation(owner, owner.plan_id, inv.invitation.invitation_id)
    assert (current.state, current.cc_failures) == (InvitationState.EXHAUSTED, max_attempts)
    assert rig.smdp.calls[-1][0] == "cancelOrder"


@pytest.mark.parametrize(("point", "reason"), [(plans.POINT_CONFIRMATION, "8.2.7/6.4"),
                                                (plans.POINT_ELIGIBILITY, "8.8.5/6.4")])
async def test_retries_exceeded_report_closes_the_invitation(point, reason):
    rig = make_rig()
    _, owner, _ = new_plan(rig.book)
    inv = await invite(rig, owner)
    await rig.service.handle_progress("smdp", ProgressEvent(inv.order.profile.iccid, point, False, EID_A, reason))
    assert state_of(rig, owner, inv.invitation.invitation_id) is InvitationState.EXHAUSTED


async def test_other_failures_keep_the_invitation_pending():
    rig = make_rig()
    _, owner, _ = new_plan(rig.book)
    inv = await invite(rig, owner)
    await rig.service.handle_progress("smdp", ProgressEvent(inv.order.profile.iccid, plans.POINT_ELIGIBILITY, False,
                                                            EID_B, "8.1.1/3.10"))  # a wrong eUICC tried
    assert state_of(rig, owner, inv.invitation.invitation_id) is InvitationState.PENDING


async def test_failed_order_marks_the_invitation_and_bars_the_imsi():
    rig = make_rig()
    _, owner, _ = new_plan(rig.book)
    rig.smdp.fail_confirm = StatusCodeError(status.MATCHING_ID_CONFLICT, "taken")
    with pytest.raises(StatusCodeError):
        await invite(rig, owner)
    (inv,) = rig.book.list_invitations(owner, owner.plan_id)
    assert inv.state is InvitationState.FAILED
    with pytest.raises(AuthenticationRefused):
        rig.authenticator.generate_vector(rig.book.store.atomic(lambda tx: tx.get_profile(inv.iccid)).imsi)
    member = rig.book.get_member(owner, owner.plan_id, inv.member_id)[0]
    assert member.state is MemberState.INVITED and member.iccid is None
    rig.smdp.fail_confirm = None  # the owner tries again for the same member
    again = await rig.service.issue_profile(owner, owner.plan_id, inv.member_id)
    assert again.invitation.state is InvitationState.PENDING and again.order.profile.iccid != inv.iccid


async def test_plan_size_is_enforced_and_revoked_members_free_their_place():
    rig = make_rig()
    _, owner, _ = new_plan(rig.book, max_members=2)
    inv = await invite(rig, owner)
    with pytest.raises(plans.Conflict):
        await invite(rig, owner, "Third")
    await rig.service.revoke_member(owner, owner.plan_id, inv.order.member.member_id)
    await invite(rig, owner, "Third")


# --- revocation, suspension, device change ------------------------------------------------------------------


async def test_revocation_bars_aka_asks_remote_deletion_and_ends_the_token():
    rig = make_rig()
    _, owner, _ = new_plan(rig.book)
    inv, member = await joined(rig, owner)
    card = SoftUsim.from_package(rig.smdp.uploads[inv.order.profile.iccid][0])
    imsi = inv.order.profile.imsi
    assert rig.authenticator.challenge(imsi, card) is ChallengeOutcome.AUTHENTICATED
    revocation = await rig.service.revoke_member(owner, owner.plan_id, member.member_id)
    assert revocation.bar_imsis == (imsi,) and rig.smdp.revoked == [(inv.order.profile.iccid, EID_A)]
    with pytest.raises(AuthenticationRefused):
        rig.authenticator.challenge(imsi, card)
    with pytest.raises(plans.Unauthenticated):
        rig.book.authenticate(inv.order.member_token)
    _, profiles = rig.book.get_member(OPERATOR, owner.plan_id, member.member_id)
    assert [(p.state, p.delete_requested) for p in profiles] == [(ProfileState.REVOKED, True)]
    assert rig.book.pending_remote_deletes() == []  # the SM-DP+ took the order: it delivers it by itself
    assert await rig.service.retry_remote_deletes() == 0 and len(rig.smdp.revoked) == 1  # never a second order


async def test_a_refused_remote_deletion_is_asked_again_until_accepted():
    rig = make_rig()
    _, owner, _ = new_plan(rig.book)
    inv, member = await joined(rig, owner)
    iccid = inv.order.profile.iccid

    class Unreachable:
        async def revoke_profile(self, iccid, eid):
            raise Es2Unavailable("SM-DP+ down")

    rig.service.remote = Unreachable()
    await rig.service.revoke_member(owner, owner.plan_id, member.member_id)
    assert [p.iccid for p in rig.book.pending_remote_deletes()] == [iccid]
    assert await rig.service.retry_remote_deletes() == 1 and rig.book.pending_remote_deletes() != []
    rig.service.remote = rig.smdp
    assert await rig.service.retry_remote_deletes() == 1
    assert await rig.service.retry_remote_deletes() == 0
    assert rig.smdp.revoked == [(iccid, EID_A)]
    assert "profile.delete-ordered" in [e.action for e in rig.book.audit_log(OPERATOR, owner.plan_id)]


async def test_deletion_notification_reconciles_a_revoked_profile():
    rig = make_rig()
    _, owner, _ = new_plan(rig.book)
    inv, member = await joined(rig, owner)
    await rig.service.revoke_member(owner, owner.plan_id, member.member_id)
    deleted = ProgressEvent(inv.order.profile.iccid, 5, True, EID_A, operation="delete")
    await rig.service.handle_progress("smdp", deleted)
    _, profiles = rig.book.get_member(OPERATOR, owner.plan_id, member.member_id)
    assert profiles[0].state is ProfileState.DELETED
    assert rig.book.pending_remote_deletes() == []
    assert await rig.service.retry_remote_deletes() == 0


async def test_revoking_an_invitee_cancels_the_pending_order():
    rig = make_rig()
    _, owner, _ = new_plan(rig.book)
    inv = await invite(rig, owner)
    await rig.service.revoke_member(owner, owner.plan_id, inv.order.member.member_id)
    assert state_of(rig, owner, inv.invitation.invitation_id) is InvitationState.CANCELLED
    assert rig.smdp.orders[inv.order.profile.iccid]["state"] == "Unavailable"
    with pytest.raises(AuthenticationRefused):
        rig.authenticator.generate_vector(inv.order.profile.imsi)


async def test_installation_after_revocation_is_barred_and_deleted():
    rig = make_rig()
    _, owner, _ = new_plan(rig.book)
    inv = await invite(rig, owner)
    await rig.service.revoke_member(owner, owner.plan_id, inv.order.member.member_id)
    outcome = await rig.service.handle_progress("smdp", installed(inv.order.profile.iccid))
    assert outcome.bar_imsi == inv.order.profile.imsi
    assert rig.smdp.revoked == [(inv.order.profile.iccid, EID_A)]
    member = rig.book.get_member(OPERATOR, owner.plan_id, inv.order.member.member_id)[0]
    assert member.state is MemberState.REVOKED


async def test_owner_cannot_be_revoked_and_revocation_happens_once():
    rig = make_rig()
    _, owner, _ = new_plan(rig.book)
    with pytest.raises(plans.Conflict):
        await rig.service.revoke_member(OPERATOR, owner.plan_id, owner.member_id)
    inv, member = await joined(rig, owner)
    await rig.service.revoke_member(owner, owner.plan_id, member.member_id)
    with pytest.raises(plans.Conflict):
        await rig.service.revoke_member(owner, owner.plan_id, member.member_id)


async def test_device_change_revokes_the_old_profile_and_binds_the_new_one():
    rig = make_rig()
    _, owner, _ = new_plan(rig.book)
    old, member = await joined(rig, owner, eid=EID_A)
    new = await rig.service.issue_profile(member, owner.plan_id, member.member_id, eid=EID_B)
    assert new.order.replaced is not None and new.order.replaced.bar_imsis == (old.order.profile.imsi,)
    assert rig.smdp.revoked == [(old.order.profile.iccid, EID_A)]
    assert rig.smdp.calls[-2] == ("downloadOrder", {"iccid": new.order.profile.iccid, "eid": EID_B})
    with pytest.raises(AuthenticationRefused):
        rig.authenticator.generate_vector(old.order.profile.imsi)
    await rig.service.handle_progress("smdp", installed(new.order.profile.iccid, EID_B))
    me, profiles = rig.book.get_member(member, owner.plan_id, member.member_id)
    assert (me.state, me.eid, me.iccid) == (MemberState.ACTIVE, EID_B, new.order.profile.iccid)
    assert [p.state for p in profiles] == [ProfileState.REVOKED, ProfileState.INSTALLED]
    assert new.order.member_token is None  # the member keeps their token


async def test_suspension_bars_and_resumption_unbars():
    rig = make_rig()
    _, owner, _ = new_plan(rig.book)
    inv, member = await joined(rig, owner)
    card = SoftUsim.from_package(rig.smdp.uploads[inv.order.profile.iccid][0])
    await rig.service.set_suspended(owner, owner.plan_id, member.member_id, True)
    with pytest.raises(AuthenticationRefused):
        rig.authenticator.challenge(inv.order.profile.imsi, card)
    with pytest.raises(plans.Conflict):
        await rig.service.set_suspended(owner, owner.plan_id, member.member_id, True)
    with pytest.raises(plans.Conflict):  # no way around the suspension with a fresh profile
        await rig.service.issue_profile(member, owner.plan_id, member.member_id, eid=EID_B)
    await rig.service.set_suspended(owner, owner.plan_id, member.member_id, False)
    assert rig.authenticator.challenge(inv.order.profile.imsi, card) is ChallengeOutcome.AUTHENTICATED


async def test_a_profile_released_before_a_suspension_does_not_work_once_installed():
    rig = make_rig()
    _, owner, _ = new_plan(rig.book)
    old, member = await joined(rig, owner, eid=EID_A)
    new = await rig.service.issue_profile(member, owner.plan_id, member.member_id, eid=EID_B)  # new phone
    await rig.service.set_suspended(owner, owner.plan_id, member.member_id, True)
    card = SoftUsim.from_package(rig.smdp.uploads[new.order.profile.iccid][0])
    outcome = await rig.service.handle_progress("smdp", installed(new.order.profile.iccid, EID_B))  # downloaded anyway
    assert outcome.bar_imsi == new.order.profile.imsi  # also when it was still being ordered at the suspension
    with pytest.raises(AuthenticationRefused):
        rig.authenticator.challenge(new.order.profile.imsi, card)
    await rig.service.set_suspended(owner, owner.plan_id, member.member_id, False)
    assert rig.authenticator.challenge(new.order.profile.imsi, card) is ChallengeOutcome.AUTHENTICATED


async def test_installation_reported_before_the_release_is_bookkept():
    rig = make_rig()
    _, owner, _ = new_plan(rig.book)
    order = rig.book.invite(owner, owner.plan_id, "Ann")  # ES2+ still under way
    await rig.service.handle_progress("smdp", installed(order.profile.iccid))
    placed = rig.book.order_placed(order.invitation.invitation_id, SMDP_ADDRESS)
    assert placed.state is InvitationState.USED
    member = rig.book.get_member(owner, owner.plan_id, order.member.member_id)[0]
    assert member.state is MemberState.ACTIVE


async def test_progress_for_an_unknown_iccid_is_refused():
    rig = make_rig()
    with pytest.raises(plans.NotFound):
        await rig.service.handle_progress("smdp", installed("89882470000000099996"))


# --- access rules ------------------------------------------------------------------------------------------


async def test_access_rule_table():
    rig = make_rig()
    plan, owner, _ = new_plan(rig.book)
    _, ben = await joined(rig, owner, "Ben")
    _, cleo = await joined(rig, owner, "Cleo", eid=EID_B)
    stranger = Principal("owner", "plan-0000000000000000", "mem-0000000000000000")
    pid = plan.plan_id
    assert plans.allowed("members.list", owner, pid) and not plans.allowed("members.list", ben, pid)
    assert plans.allowed("usage.records", ben, pid, ben.member_id)
    assert not plans.allowed("usage.records", owner, pid, ben.member_id)  # not even the owner
    assert not plans.allowed("usage.records", cleo, pid, ben.member_id)
    assert plans.allowed("usage.plan", cleo, pid) and not plans.allowed("usage.plan", stranger, pid)
    assert not plans.allowed("member.revoke", ben, pid, ben.member_id)
    assert plans.allowed("member.token", ben, pid, ben.member_id) and plans.allowed("member.token", owner, pid,
                                                                                     owner.member_id)
    assert not plans.allowed("member.token", owner, pid, ben.member_id)  # it would open Ben's EID and records
    assert plans.allowed("usage.ingest", OPERATOR, pid) and not plans.allowed("usage.ingest", owner, pid)
    assert not plans.allowed("plan.read", SMDP, pid)


async def test_members_see_only_what_is_theirs():
    rig = make_rig()
    plan, owner, _ = new_plan(rig.book)
    _, ben = await joined(rig, owner, "Ben", eid=EID_A)
    _, cleo = await joined(rig, owner, "Cleo", eid=EID_B)
    with pytest.raises(plans.Forbidden):
        rig.book.get_member(cleo, plan.plan_id, ben.member_id)
    with pytest.raises(plans.Forbidden):
        rig.book.list_members(cleo, plan.plan_id)
    with pytest.raises(plans.Forbidden):
        rig.book.member_records(owner, plan.plan_id, ben.member_id)
    other_plan, other_owner, _ = new_plan(rig.book)
    with pytest.raises(plans.NotFound):  # another plan does not even exist for them
        rig.book.get_plan(other_owner, plan.plan_id)
    member, profiles = rig.book.get_member(owner, plan.plan_id, ben.member_id)
    assert profiles == []  # the owner does not see the member's profiles
    view = plans.member_view(member, owner)
    assert "eid" not in view and "iccid" not in view and view["display_name"] == "Ben"
    own = plans.member_view(rig.book.get_member(ben, plan.plan_id, ben.member_id)[0], ben)
    assert own["eid"] == EID_A and own["iccid"]
    usage = rig.book.plan_usage(cleo, plan.plan_id)
    assert [m["member_id"] for m in usage["members"]] == [cleo.member_id]


async def test_rotated_token_replaces_the_old_one():
    rig = make_rig()
    _, owner, owner_token = new_plan(rig.book)
    new_token = rig.book.rotate_token(owner, owner.plan_id, owner.member_id)
    with pytest.raises(plans.Unauthenticated):
        rig.book.authenticate(owner_token)
    assert rig.book.authenticate(new_token) == owner
    with pytest.raises(plans.Unauthenticated):
        rig.book.authenticate("kst_nope")


# --- the audit trail ----------------------------------------------------------------------------------------


async def test_every_change_leaves_an_audit_event_without_personal_data():
    rig = make_rig()
    plan, owner, _ = new_plan(rig.book)
    pid = plan.plan_id

    def actions() -> list[str]:
        return [e.action for e in rig.book.audit_log(owner, pid)]

    async def check(change, *expected: str) -> None:
        before = len(actions())
        result = change()
        if hasattr(result, "__await__"):
            await result
        added = actions()[before:]
        for action in expected:
            assert action in added, (action, added)

    assert actions()[:2] == ["plan.created", "member.added"]
    inv = None

    async def do_invite():
        nonlocal inv
        inv = await invite(rig, owner, "Dora Diaz", eid=EID_A)

    await check(do_invite, "member.invited", "invitation.created", "invitation.released")
    mid = inv.order.member.member_id
    await check(lambda: rig.service.handle_progress("smdp", installed(inv.order.profile.iccid)),
                "member.profile-installed")
    await check(lambda: rig.book.set_caps(owner, pid, mid, {"data": {"amount": 10}}), "caps.set")
    await check(lambda: rig.book.update_plan(owner, pid, policy="fixed"), "plan.updated")
    await check(lambda: rig.book.ingest_usage(OPERATOR, kind="data", amount=50, at=rig.clock(),
                                              idempotency_key="u1", member_id=mid), "member.throttled")
    await check(lambda: rig.service.set_suspended(owner, pid, mid, True), "member.suspended")
    await check(lambda: rig.service.set_suspended(owner, pid, mid, False), "member.resumed")
    await check(lambda: rig.book.rotate_token(OPERATOR, pid, mid), "member.token-rotated")
    await check(lambda: rig.service.issue_profile(owner, pid, mid, eid=EID_B), "profile.revoked",
                "member.profile-requested", "invitation.created")
    (second,) = [i for i in rig.book.list_invitations(owner, pid) if i.state is InvitationState.PENDING]
    await check(lambda: rig.service.cancel_invitation(owner, pid, second.invitation_id), "invitation.cancelled")
    await check(lambda: rig.service.revoke_member(owner, pid, mid), "member.revoked")
    events = rig.book.audit_log(owner, pid)
    assert all(e.at is not None and e.actor for e in events)
    assert {e.actor for e in events} >= {"operator", f"owner:{owner.member_id}", "smdp"}
    text = repr([plans.audit_view(e) for e in events])
    profile_ids = [inv.order.profile.iccid, inv.order.profile.imsi, second.iccid]
    for personal in ("Dora", "Diaz", "Olivia", EID_A, EID_B, *profile_ids):
        assert personal not in text


# --- the service's failure paths and hand-over ---------------------------------------------------------------


async def test_unusable_template_fails_the_invitation_before_any_order():
    rig = make_rig()
    rig.service.config = ServiceConfig(template_loader=lambda name: b"\xa0\x00")
    _, owner, _ = new_plan(rig.book)
    with pytest.raises(TemplateError):
        await invite(rig, owner)
    assert rig.smdp.calls == [] and rig.smdp.uploads == {}
    (inv,) = rig.book.list_invitations(owner, owner.plan_id)
    assert inv.state is InvitationState.FAILED


async def test_unusable_smdp_address_takes_the_order_back():
    rig = make_rig()
    rig.smdp.address = "not an address"
    _, owner, _ = new_plan(rig.book)
    with pytest.raises(Es2Unavailable):
        await invite(rig, owner)
    (inv,) = rig.book.list_invitations(owner, owner.plan_id)
    assert inv.state is InvitationState.FAILED and rig.smdp.orders[inv.iccid]["state"] == "Unavailable"
    with pytest.raises(ActivationCodeError):
        ServiceConfig(smdp_address="bad address")


async def test_directory_sink_drops_package_and_metadata(tmp_path):
    rig = make_rig()
    drop = DirectorySink(tmp_path / "drop")

    async def both(package, metadata):  # the stand-in SM-DP+ still needs to know the profile
        await drop.upload(package, metadata)
        await rig.smdp.upload(package, metadata)

    rig.service.sink = CallableSink(both)
    plan, owner, _ = new_plan(rig.book)
    inv = await invite(rig, owner)
    iccid = inv.order.profile.iccid
    package = ProfilePackage.decode((tmp_path / "drop" / f"{iccid}.der").read_bytes())
    assert (package.iccid, package.imsi) == (iccid, inv.order.profile.imsi)
    metadata = json.loads((tmp_path / "drop" / f"{iccid}.json").read_text())
    assert metadata == dataclasses.asdict(metadata_for(plan, "kinsim"))
    assert sorted(p.name for p in (tmp_path / "drop").iterdir()) == [f"{iccid}.der", f"{iccid}.json"]

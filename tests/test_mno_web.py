"""The owner's web page in a real browser: headless Chromium driven over the DevTools protocol loads
/owner/ from the plan service and we read what the page shows (members, usage bars, pending
invitations with their QR codes), for the owner and for a member."""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
from pathlib import Path

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from mno import qr
from mno.api import create_app
from mno.plans import OPERATOR, ProgressEvent
from tests.mno_fixtures import EID_A, EID_B, START, make_rig, new_plan

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium is not installed (apt-get install chromium)"),
]
GUARD = 90  # seconds: only a guard against a hung browser, nothing is timed

SHOWN = """(() => {
  const text = (el) => el ? el.textContent.trim() : null;
  return JSON.stringify({
    error: document.body.dataset.error || null,
    plan: text(document.getElementById("plan-name")),
    facts: text(document.getElementById("plan-facts")),
    pool: [...document.querySelectorAll("#pool meter")].map((m) => ({kind: m.dataset.kind, value: m.value,
                                                                      max: m.max})),
    members: [...document.querySelectorAll("#members tbody tr")].map((tr) => ({
      id: tr.dataset.member, name: text(tr.querySelector(".name")), state: text(tr.querySelector(".state")),
      boldInName: tr.querySelector(".name b") !== null,
      bars: [...tr.querySelectorAll("meter")].map((m) => ({kind: m.dataset.kind, value: m.value, max: m.max})),
      throttled: tr.querySelector(".throttled") !== null})),
    invitationsShown: !document.getElementById("invitations-section").hidden,
    invitations: [...document.querySelectorAll("#invitations li")].map((li) => {
      const img = li.querySelector("img");
      return {who: text(li.querySelector("strong")), code: text(li.querySelector(".activation-code")),
              qrWidth: img ? img.naturalWidth : 0, qrLoaded: img ? img.complete : false};
    }),
    html: document.documentElement.outerHTML,
    address: location.href,
  });
})()"""


class Browser:
    """One headless Chromium and one page, spoken to over the DevTools websocket."""

    def __init__(self, profile_dir: Path):
        self.profile_dir = profile_dir
        self.process: asyncio.subprocess.Process | None = None
        self.session: aiohttp.ClientSession | None = None
        self.ws = None
        self._ids = 0

    async def start(self) -> None:
        self.process = await asyncio.create_subprocess_exec(
            CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--no-first-run", "--no-default-browser-check",
            f"--user-data-dir={self.profile_dir}", "--remote-debugging-port=0", "about:blank",
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
        port_file = self.profile_dir / "DevToolsActivePort"
        while not (port_file.exists() and port_file.read_text().count("\n") >= 1):
            await asyncio.sleep(0.05)
        port = int(port_file.read_text().split("\n")[0])
        self.session = aiohttp.ClientSession()
        page = None
        while page is None:
            async with self.session.get(f"http://127.0.0.1:{port}/json/list") as response:
                page = next((t for t in await response.json() if t["type"] == "page"), None)
            if page is None:
                await asyncio.sleep(0.05)
        self.ws = await self.session.ws_connect(page["webSocketDebuggerUrl"], max_msg_size=0)

    async def send(self, method: str, **params) -> dict:
        self._ids += 1
        await self.ws.send_json({"id": self._ids, "method": method, "params": params})
        while True:
            message = json.loads((await self.ws.receive()).data)
            if message.get("id") == self._ids:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message["result"]

    async def evaluate(self, expression: str):
        result = await self.send("Runtime.evaluate", expression=expression, returnByValue=True)
        return result["result"].get("value")

    async def show(self, url: str) -> dict:
        """Open ``url`` and wait until the page says it is ready (or failed); return what it shows."""
        await self.send("Page.navigate", url="about:blank")
        await self.send("Page.navigate", url=url)
        while not await self.evaluate("document.body && (document.body.dataset.ready || document.body.dataset.error)"):
            await asyncio.sleep(0.05)
        return json.loads(await self.evaluate(SHOWN))

    async def submit_invite(self, name: str, role: str) -> dict:
        """Fill in and send the invitation form; wait for the confirmation code and the new invitation."""
        await self.evaluate(f"""(() => {{
            document.getElementById("invite-name").value = {json.dumps(name)};
            document.getElementById("invite-role").value = {json.dumps(role)};
            document.getElementById("invite").requestSubmit();
        }})()""")
        while not await self.evaluate(f"""!document.getElementById("invite-result").hidden &&
            [...document.querySelectorAll("#invitations strong")].some((s) => s.textContent === {json.dumps(name)})"""):
            await asyncio.sleep(0.05)
        cc = await self.evaluate('document.getElementById("invite-cc").textContent')
        token = await self.evaluate('document.getElementById("invite-token").textContent')
        return {"cc": cc, "token": token, "shown": json.loads(await self.evaluate(SHOWN))}

    async def stop(self) -> None:
        if self.ws is not None:
            await self.ws.close()
        if self.session is not None:
            await self.session.close()
        if self.process is not None and self.process.returncode is None:
            self.process.terminate()
            with contextlib.suppress(ProcessLookupError):
                await self.process.wait()


async def family():
    """A plan with an owner, two joined members (one throttled), one revoked and one pending invitation."""
    rig = make_rig()
    plan, owner, owner_token = new_plan(rig.book, pool={"data": 1_000_000, "sms": 100})
    joined = []
    for name, eid in (("Ana", EID_A), ("<b>Eve</b>", EID_B)):
        invite = await rig.service.invite(owner, plan.plan_id, name, eid=eid)
        await rig.service.handle_progress("smdp", ProgressEvent(invite.order.profile.iccid, 4, True, eid,
                                                                operation="install", install_ok=True))
        joined.append(invite)
    ana, eve = (i.order.member.member_id for i in joined)
    rig.book.set_caps(owner, plan.plan_id, eve, {"data": {"amount": 200_000}})
    rig.book.ingest_usage(OPERATOR, kind="data", amount=150_000, at=START, idempotency_key="a", member_id=ana)
    rig.book.ingest_usage(OPERATOR, kind="data", amount=250_000, at=START, idempotency_key="e", member_id=eve)
    gone = await rig.service.invite(owner, plan.plan_id, "Gus")
    await rig.service.revoke_member(owner, plan.plan_id, gone.order.member.member_id)
    pending = await rig.service.invite(owner, plan.plan_id, "Pia")
    return rig, plan, owner_token, joined, pending


@pytest.mark.asyncio
async def test_owner_page_shows_members_usage_bars_and_pending_invitations(tmp_path):
    rig, plan, owner_token, (ana, eve), pending = await family()
    server = TestServer(create_app(rig.service), host="127.0.0.1")
    await server.start_server()
    browser = Browser(tmp_path / "chromium")
    try:
        await asyncio.wait_for(browser.start(), GUARD)
        shown = await asyncio.wait_for(browser.show(f"{server.make_url('/owner/')}#token={owner_token}"), GUARD)
        invited = await asyncio.wait_for(browser.submit_invite("Quinn", "child"), GUARD)
    finally:
        await browser.stop()
        await server.close()
    assert invited["cc"] == rig.smdp.calls[-1][1]["confirmation_code"]  # shown once, for the second channel
    quinn = next(m["id"] for m in invited["shown"]["members"] if m["name"] == "Quinn")
    assert rig.book.authenticate(invited["token"]).member_id == quinn  # the owner hands it on
    assert owner_token not in shown["address"]  # out of the address bar and the history
    assert [i["who"] for i in invited["shown"]["invitations"]] == ["Pia", "Quinn"]
    assert "Quinn" in [m["name"] for m in invited["shown"]["members"]]
    assert shown["error"] is None
    assert shown["plan"] == "Family" and "shared" in shown["facts"]
    assert {p["kind"]: (p["value"], p["max"]) for p in shown["pool"]} == {"data": (350_000, 1_000_000),
                                                                          "sms": (0, 100)}
    rows = {m["name"]: m for m in shown["members"]}
    assert set(rows) == {"Olivia Owner", "Ana", "<b>Eve</b>", "Gus", "Pia"}
    assert rows["<b>Eve</b>"]["boldInName"] is False  # names are text, never markup
    assert (rows["Gus"]["state"], rows["Pia"]["state"], rows["Ana"]["state"]) == ("revoked", "invited", "active")
    eve_data = next(b for b in rows["<b>Eve</b>"]["bars"] if b["kind"] == "data")
    assert (eve_data["value"], eve_data["max"]) == (200_000, 200_000) and rows["<b>Eve</b>"]["throttled"]
    ana_data = next(b for b in rows["Ana"]["bars"] if b["kind"] == "data")
    assert (ana_data["value"], ana_data["max"]) == (150_000, 1_000_000) and not rows["Ana"]["throttled"]
    assert shown["invitationsShown"] is True
    (invitation,) = shown["invitations"]
    assert invitation["who"] == "Pia" and invitation["code"] == pending.activation_code
    css_pixels = round(len(qr.matrix(pending.activation_code)) * 96 / 25.4)  # one millimetre per module
    assert invitation["qrLoaded"] and invitation["qrWidth"] == css_pixels  # the SVG QR code rendered
    for private in (EID_A, EID_B, ana.order.profile.iccid, ana.order.profile.imsi, pending.order.confirmation_code):
        assert private not in shown["html"]


@pytest.mark.asyncio
async def test_member_page_shows_the_pool_and_only_their_own_line(tmp_path):
    rig, plan, owner_token, (ana, eve), pending = await family()
    server = TestServer(create_app(rig.service), host="127.0.0.1")
    await server.start_server()
    browser = Browser(tmp_path / "chromium")
    try:
        await asyncio.wait_for(browser.start(), GUARD)
        shown = await asyncio.wait_for(browser.show(f"{server.make_url('/owner/')}#token={ana.order.member_token}"),
                                       GUARD)
        refused = await asyncio.wait_for(browser.show(f"{server.make_url('/owner/')}#token=kst_wrong"), GUARD)
    finally:
        await browser.stop()
        await server.close()
    assert [m["name"] for m in shown["members"]] == ["Ana"]
    assert {p["kind"]: p["value"] for p in shown["pool"]} == {"data": 350_000, "sms": 0}
    assert shown["invitationsShown"] is False and shown["invitations"] == []
    assert "Eve" not in shown["html"] and "Pia" not in shown["html"]
    assert refused["error"] and refused["members"] == []
    assert ana.order.member_token not in shown["address"]

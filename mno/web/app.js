// The owner's page: members, pending invitations with their QR codes, usage bars per member.
// The token comes from the URL fragment (#token=...), which browsers never send to the server, and is
// then taken out of the address (so it stays out of the history); every request carries it as a bearer
// token. Text from the API is only ever set as textContent.
"use strict";

const API = "/api/v1";
const UNITS = {
  bytes: (n) => humanBytes(n),
  seconds: (n) => `${Math.floor(n / 60)} min${n % 60 ? ` ${n % 60} s` : ""}`,
  messages: (n) => `${n} SMS`,
};
let token = new URLSearchParams(location.hash.slice(1)).get("token");
if (location.hash) history.replaceState(null, "", location.pathname + location.search);

function humanBytes(n) {
  const steps = ["B", "kB", "MB", "GB", "TB"];
  let i = 0;
  let value = n;
  while (value >= 1000 && i < steps.length - 1) { value /= 1000; i += 1; }
  return `${i === 0 ? value : value.toFixed(value < 10 ? 2 : 1)} ${steps[i]}`;
}

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === "text") node.textContent = value;
    else if (key === "dataset") Object.assign(node.dataset, value);
    else node.setAttribute(key, value);
  }
  for (const child of children) node.append(child);
  return node;
}

async function api(path, options = {}) {
  const response = await fetch(API + path, {
    ...options,
    headers: { Authorization: `Bearer ${token}`, ...(options.body ? { "Content-Type": "application/json" } : {}) },
  });
  if (!response.ok) {
    let message = `HTTP ${response.status}`;
    try { message = (await response.json()).error.message; } catch (e) { /* not JSON */ }
    throw new Error(message);
  }
  const type = response.headers.get("Content-Type") || "";
  return type.includes("json") ? response.json() : response.blob();
}

function meter(used, max, attrs) {
  return el("meter", { min: "0", max: String(Math.max(max, 1)), value: String(Math.min(used, Math.max(max, 1))),
                       ...attrs });
}

function renderPool(usage) {
  const box = document.getElementById("pool");
  box.replaceChildren();
  const grid = el("div", { class: "usage" });
  for (const [kind, pool] of Object.entries(usage.pool)) {
    const fmt = UNITS[pool.unit];
    grid.append(
      el("span", { text: kind }),
      meter(pool.used, pool.total, { id: `pool-${kind}`, dataset: { kind, used: pool.used, total: pool.total } }),
      el("span", { text: `${fmt(pool.used)} used of ${fmt(pool.total)}, ${fmt(pool.remaining)} left` }),
    );
  }
  box.append(grid);
}

function renderMembers(usage) {
  const body = document.querySelector("#members tbody");
  body.replaceChildren();
  for (const member of usage.members) {
    const bars = el("div", { class: "usage" });
    for (const [kind, line] of Object.entries(member.usage)) {
      const fmt = UNITS[usage.pool[kind].unit];
      bars.append(
        el("span", { text: kind }),
        meter(line.used, line.allowance, { dataset: { member: member.member_id, kind, used: line.used,
                                                      allowance: line.allowance } }),
        el("span", { text: `${fmt(line.used)} of ${fmt(line.allowance)}`, class: line.throttled ? "throttled" : "" },
           line.throttled && member.state !== "revoked" ? " (throttled)" : ""),
      );
    }
    body.append(el("tr", { dataset: { member: member.member_id }, class: `state-${member.state}` },
      el("td", { text: member.display_name, class: "name" }),
      el("td", { text: member.role }),
      el("td", { text: member.state, class: "state" }),
      el("td", {}, bars)));
  }
}

async function qrImage(invitation) {
  const blob = await api(`/plans/${invitation.plan}/invitations/${invitation.invitation_id}/qr.svg`);
  return el("img", { src: URL.createObjectURL(blob), alt: `QR code of invitation ${invitation.invitation_id}`,
                     dataset: { invitation: invitation.invitation_id } });
}

async function renderInvitations(planId, invitations, names) {
  const list = document.getElementById("invitations");
  list.replaceChildren();
  const pending = invitations.filter((inv) => inv.state === "pending");
  for (const inv of pending) {
    const img = await qrImage({ ...inv, plan: planId });
    list.append(el("li", { dataset: { invitation: inv.invitation_id } },
      el("strong", { text: names[inv.member_id] || "new member" }),
      img,
      el("code", { text: inv.activation_code, class: "activation-code" }),
      el("p", { text: `Expires ${new Date(inv.expires_at).toLocaleString()}${inv.eid_bound ? " · this device only" : ""}` })));
  }
  document.getElementById("invitations-section").hidden = pending.length === 0;
}

async function load() {
  const me = await api("/me");
  if (!me.plan_id) throw new Error("this page is for a plan's owner or members");
  const plan = await api(`/plans/${me.plan_id}`);
  const usage = await api(`/plans/${me.plan_id}/usage`);
  document.getElementById("plan-name").textContent = plan.name;
  const start = new Date(usage.period_start).toLocaleDateString();
  const end = new Date(usage.period_end).toLocaleDateString();
  document.getElementById("plan-facts").textContent = `Policy: ${plan.policy} · period ${start} – ${end}`;
  renderPool(usage);
  renderMembers(usage);
  if (me.role === "owner") {
    const names = Object.fromEntries(usage.members.map((m) => [m.member_id, m.display_name]));
    const { invitations } = await api(`/plans/${me.plan_id}/invitations`);
    await renderInvitations(me.plan_id, invitations, names);
    document.getElementById("invite-section").hidden = false;
  }
  document.getElementById("content").hidden = false;
  return me;
}

async function invite(event, planId) {
  event.preventDefault();
  const body = { display_name: document.getElementById("invite-name").value,
                 role: document.getElementById("invite-role").value };
  const eid = document.getElementById("invite-eid").value.trim();
  if (eid) body.eid = eid;
  const result = await api(`/plans/${planId}/members`, { method: "POST", body: JSON.stringify(body) });
  document.getElementById("invite-cc").textContent = result.confirmation_code || "(none required)";
  document.getElementById("invite-token").textContent = result.member_token;
  document.getElementById("invite-result").hidden = false;
  await load();
}

async function start() {
  const status = document.getElementById("status");
  if (!token) {
    const form = document.getElementById("login");
    form.hidden = false;
    status.textContent = "Enter your token to open the plan.";
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      token = document.getElementById("login-token").value.trim();
      form.hidden = true;
      start();
    });
    return;
  }
  try {
    const me = await load();
    status.textContent = "";
    document.getElementById("invite").addEventListener("submit", (event) => invite(event, me.plan_id).catch((e) => {
      status.textContent = `Could not invite: ${e.message}`;
    }));
    document.body.dataset.ready = "1";
  } catch (e) {
    status.textContent = `Could not load the plan: ${e.message}`;
    document.body.dataset.error = e.message;
  }
}

document.addEventListener("DOMContentLoaded", start);

// cohort console: polls the admin API with the session cookie and renders
// the cluster. No framework, no build step. Every value from the API is
// put into the page as text, never as HTML.
"use strict";
(function () {
  const csrf = (document.querySelector('meta[name="cohort-csrf"]') || {}).content || "";
  const $ = (id) => document.getElementById(id);
  let members = null;
  let lastOK = 0;
  let busy = false;

  function el(tag, attrs, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === "class") e.className = v;
      else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
      else if (v !== undefined && v !== null && v !== false) e.setAttribute(k, v === true ? "" : v);
    }
    for (const c of children.flat(Infinity)) {
      if (c === null || c === undefined || c === false) continue;
      e.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return e;
  }

  async function api(method, path, body) {
    const opts = { method, headers: { "Accept": "application/json" }, credentials: "same-origin" };
    if (method !== "GET") opts.headers["X-Cohort-CSRF"] = csrf;
    if (body !== undefined) { opts.headers["Content-Type"] = "application/json"; opts.body = JSON.stringify(body); }
    const r = await fetch(path, opts);
    if (r.status === 401) { location.reload(); throw new Error("signed out"); }
    let data = null;
    const text = await r.text();
    try { data = text ? JSON.parse(text) : null; } catch (e) { data = null; }
    if (!r.ok) {
      const err = new Error((data && data.error) || ("HTTP " + r.status));
      err.status = r.status;
      throw err;
    }
    return data;
  }

  function dur(sec) {
    if (sec === undefined || sec === null) return "–";
    sec = Math.floor(sec);
    if (sec < 60) return sec + "s";
    if (sec < 3600) return Math.floor(sec / 60) + "m " + (sec % 60) + "s";
    if (sec < 86400) return Math.floor(sec / 3600) + "h " + Math.floor((sec % 3600) / 60) + "m";
    return Math.floor(sec / 86400) + "d " + Math.floor((sec % 86400) / 3600) + "h";
  }
  function bytes(n) {
    if (typeof n !== "number") return "–";
    const u = ["B", "KiB", "MiB", "GiB", "TiB"];
    let i = 0;
    while (n >= 1024 && i < u.length - 1) { n /= 1024; i++; }
    return (i ? n.toFixed(1) : n) + " " + u[i];
  }
  function when(t) {
    if (!t) return "–";
    const d = new Date(t);
    if (isNaN(d) || d.getFullYear() < 2000) return "–";
    const s = (Date.now() - d.getTime()) / 1000;
    if (Math.abs(s) < 86400) {
      const rel = s >= 0 ? dur(s) + " ago" : "in " + dur(-s);
      return d.toLocaleTimeString() + " (" + rel + ")";
    }
    return d.toLocaleString();
  }

  function toast(msg, isErr) {
    const t = $("toast");
    t.textContent = msg;
    t.className = "toast" + (isErr ? " error" : "");
    clearTimeout(toast.timer);
    toast.timer = setTimeout(() => { t.className = "toast hidden"; }, isErr ? 7000 : 4000);
  }

  function confirmAction(title, text, okLabel) {
    return new Promise((resolve) => {
      $("modal-title").textContent = title;
      $("modal-text").textContent = text;
      $("modal-ok").textContent = okLabel || "Confirm";
      $("modal").className = "modal";
      const done = (v) => {
        $("modal").className = "modal hidden";
        $("modal-ok").onclick = $("modal-cancel").onclick = null;
        resolve(v);
      };
      $("modal-ok").onclick = () => done(true);
      $("modal-cancel").onclick = () => done(false);
      $("modal-ok").focus();
    });
  }

  const actions = {
    drain: { title: "Drain", text: (id) => `Drain ${id}? It keeps serving its existing sessions but takes no new ones.`,
      run: (id) => api("POST", `/_cohort/api/nodes/${encodeURIComponent(id)}/drain`), done: (id) => `${id} is draining` },
    disable: { title: "Disable", text: (id) => `Disable ${id}? It takes no traffic at all; its sessions fail over to other nodes.`,
      run: (id) => api("POST", `/_cohort/api/nodes/${encodeURIComponent(id)}/disable`), done: (id) => `${id} is disabled` },
    enable: { title: "Enable", text: (id) => `Enable ${id}? It takes new sessions again.`,
      run: (id) => api("POST", `/_cohort/api/nodes/${encodeURIComponent(id)}/enable`), done: (id) => `${id} is active` },
    transfer: { title: "Make leader", text: (id) => `Transfer Raft leadership to ${id}? Writes pause for a moment during the election.`,
      run: (id) => api("POST", "/_cohort/api/leader/transfer", { to: id }), done: (id) => `leadership handed to ${id}` },
    remove: { title: "Remove", text: (id) => `Remove ${id} from the cluster? It stops being a voter. To come back it must wipe its data dir or use a new id.`,
      run: (id) => api("DELETE", `/_cohort/api/nodes/${encodeURIComponent(id)}`), done: (id) => `${id} removed` },
    ping: { title: "Ping", text: null,
      run: (id) => api("POST", `/_cohort/api/nodes/${encodeURIComponent(id)}/ping`),
      done: (id, r) => `${id} answered through the cluster port: ${r.rtt_ms.toFixed(2)} ms (min ${r.min_ms.toFixed(2)}, max ${r.max_ms.toFixed(2)})` },
  };

  async function act(name, id) {
    const a = actions[name];
    if (a.text && !(await confirmAction(a.title + " " + id, a.text(id), a.title))) return;
    busy = true;
    try {
      const r = await a.run(id);
      toast(a.done(id, r));
    } catch (e) {
      toast(`${a.title} ${id} failed: ${e.message}`, true);
    } finally {
      busy = false;
      refreshMembers();
      refreshEvents();
    }
  }

  function nodeCard(m, view) {
    const role = m.leader ? "leader" : (m.reachable ? (m.raft_state || "follower") : "unreachable");
    const state = m.state || "active";
    const cls = ["card"];
    if (m.leader) cls.push("leader");
    if (!m.healthy) cls.push("unhealthy");
    const kv = [
      ["Cluster", m.address], ["HTTP", m.http_address || "–"],
      ["Applied / commit", m.reachable ? `${m.applied_index} / ${m.commit_index}` : "–"],
      ["Last contact", m.leader ? "is leader" : (m.reachable && m.last_contact_ms >= 0 ? m.last_contact_ms + " ms" : "–")],
      ["Uptime", m.reachable ? dur(m.uptime_seconds) : "–"],
      ["Load", m.load ? `${m.load.goroutines} goroutines · ${bytes(m.load.heap_bytes)} heap` : "–"],
      ["Version", m.version || "–"],
      ["State since", when(m.since)],
    ];
    const btn = (name, label, disabled, extra) =>
      el("button", { class: "ghost " + (extra || ""), "data-action": name, "data-node": m.id, disabled: disabled, onclick: () => act(name, m.id) }, label);
    return el("div", { class: cls.join(" "), id: "node-" + m.id, "data-state": state, "data-leader": m.leader ? "true" : "false" },
      el("div", { class: "card-head" },
        el("div", { class: "node-id" }, el("span", { class: "dot" + (m.healthy ? "" : " bad"), title: m.healthy ? "healthy" : "unhealthy" }), m.id),
        el("div", { class: "badges" },
          m.id === view.node_id ? el("span", { class: "badge here" }, "this node") : null,
          el("span", { class: "badge role-" + role, "data-role": role }, m.leader ? "★ leader" : role),
          el("span", { class: "badge state-" + state, "data-field": "state" }, state))),
      m.error ? el("div", { class: "err", title: m.error }, m.reachable ? m.error : "does not answer through the cluster port") : null,
      el("dl", { class: "kv" }, kv.map(([k, v]) => [el("dt", {}, k), el("dd", { title: String(v) }, v)])),
      el("div", { class: "actions" },
        btn("drain", "Drain", state === "draining"),
        btn("disable", "Disable", state === "disabled"),
        btn("enable", "Enable", state === "active"),
        btn("transfer", "Make leader", m.leader || !m.voter || !m.reachable),
        btn("ping", "Ping", false),
        btn("remove", "Remove", false, "rm")));
  }

  function renderMembers(v) {
    members = v;
    const healthy = v.members.filter((m) => m.healthy).length;
    const voters = v.members.filter((m) => m.voter);
    const healthyVoters = voters.filter((m) => m.healthy).length;
    const quorum = Math.floor(voters.length / 2) + 1;
    $("sum-leader").textContent = v.leader_id || "none";
    $("sum-leader").className = "v " + (v.leader_id ? "" : "bad");
    $("sum-term").textContent = v.term;
    $("sum-healthy").textContent = `${healthy} / ${v.members.length}`;
    $("sum-healthy").className = "v " + (healthy === v.members.length ? "good" : "bad");
    $("sum-commit").textContent = v.commit_index;
    $("sum-quorum").textContent = healthyVoters >= quorum ? `ok (${healthyVoters}/${voters.length})` : `LOST (${healthyVoters}/${voters.length})`;
    $("sum-quorum").className = "v " + (healthyVoters >= quorum ? "good" : "bad");
    const box = $("nodes");
    box.replaceChildren(...v.members.map((m) => nodeCard(m, v)));
    if (!v.members.length) box.replaceChildren(el("p", { class: "muted" }, "No members known."));
  }

  async function refreshMembers() {
    try {
      const v = await api("GET", "/_cohort/api/members");
      lastOK = Date.now();
      if (!busy || !members) renderMembers(v);
    } catch (e) {
      if (!members) $("nodes").replaceChildren(el("p", { class: "bad" }, "Cannot read members: " + e.message));
    }
  }

  function list(v, key) {
    if (Array.isArray(v)) return v;
    if (v && Array.isArray(v[key])) return v[key];
    return null;
  }

  async function refreshJobs() {
    const box = $("jobs");
    let v;
    try { v = await api("GET", "/_cohort/api/jobs"); } catch (e) {
      box.replaceChildren(el("p", { class: "muted" }, e.status === 404 ? "The jobs API is not available on this node." : "Cannot read jobs: " + e.message));
      return;
    }
    const jobs = list(v, "jobs") || [];
    if (!jobs.length) { box.replaceChildren(el("p", { class: "muted" }, "No jobs are defined.")); return; }
    const pick = (j, ...ks) => { for (const k of ks) { const p = k.split("."); let x = j; for (const s of p) x = x && x[s]; if (x !== undefined && x !== null && x !== "") return x; } return undefined; };
    box.replaceChildren(el("table", {},
      el("thead", {}, el("tr", {}, ["Job", "Schedule", "Last run", "Result", "Next run", ""].map((h) => el("th", {}, h)))),
      el("tbody", {}, jobs.map((j) => {
        const name = pick(j, "name", "id");
        const result = pick(j, "last_run.status", "last.status", "last_status", "last_result") || "–";
        const suspended = pick(j, "suspended", "paused");
        return el("tr", {},
          el("td", {}, el("b", {}, name)),
          el("td", {}, pick(j, "schedule", "every", "cron") || "–"),
          el("td", {}, when(pick(j, "last_run.started_at", "last_run.finished_at", "last_run.scheduled_at", "last_run.started", "last_started"))),
          el("td", { class: /fail|error/i.test(result) ? "bad" : (/ok|succe/i.test(result) ? "ok" : "") }, result),
          el("td", {}, suspended ? "suspended" : when(pick(j, "next_run", "next"))),
          el("td", {}, el("button", { class: "ghost", onclick: async () => {
            if (!(await confirmAction("Run " + name, `Run job ${name} now, once, on the leader?`, "Run now"))) return;
            try { await api("POST", `/_cohort/api/jobs/${encodeURIComponent(name)}/run`); toast(`${name} started`); }
            catch (e) { toast(`run ${name} failed: ${e.message}`, true); }
          } }, "Run now")));
      }))));
  }

  // Singleton processes: where each runs (its preference list's placement,
  // or the leader) and its fencing token.
  async function refreshSingletons() {
    const box = $("singletons");
    let v;
    try { v = await api("GET", "/_cohort/api/singletons"); } catch (e) {
      box.replaceChildren(el("p", { class: "muted" }, e.status === 404 ? "No singletons are defined." : "Cannot read singletons: " + e.message));
      return;
    }
    if (!Array.isArray(v) || !v.length) { box.replaceChildren(el("p", { class: "muted" }, "No singletons are defined.")); return; }
    box.replaceChildren(el("table", {},
      el("thead", {}, el("tr", {}, ["Singleton", "Placement", "Runs on", "Fence", "Since"].map((h) => el("th", {}, h)))),
      el("tbody", {}, v.map((s) => el("tr", {},
        el("td", {}, el("b", {}, s.name)),
        el("td", {}, s.nodes && s.nodes.length ? s.nodes.join(", ") : "leader"),
        el("td", { class: s.runs_on ? "" : "bad" }, s.runs_on || "nowhere"),
        el("td", {}, String(s.placed_fence || s.fence || "–")),
        el("td", {}, s.since ? when(s.since) : "–"))))));
  }

  function figure(k, v, wide) { return el("div", { class: "figure" + (wide ? " wide" : "") }, el("div", { class: "k" }, k), el("div", { class: "v" }, v)); }

  // Known figures first, then any other number the endpoint reports is
  // ignored: the panel stays readable as the APIs grow.
  const sessionFigures = [["total", "Sessions"], ["in_memory", "In memory"], ["passivated", "Passivated"],
    ["memory_bytes", "Session memory", true], ["bytes", "Session bytes", true], ["principals", "Users signed in"]];

  async function refreshFigures() {
    const out = [];
    try {
      const s = await api("GET", "/_cohort/api/sessions");
      const src = (s && s.stats) || s || {};
      let any = false;
      for (const [k, label, isBytes] of sessionFigures) {
        if (typeof src[k] === "number") { out.push(figure(label, isBytes ? bytes(src[k]) : src[k])); any = true; }
      }
      if (!any) out.push(figure("Sessions", "–"));
    } catch (e) {
      out.push(figure("Sessions", e.status === 404 ? "not available" : "error", true));
    }
    try {
      const f = await api("GET", "/_cohort/api/files-status");
      const u = f.usage || {}, sy = f.sync || {};
      out.push(figure("Files", u.files ?? "–"), figure("File bytes", bytes(u.bytes)));
      let catchup = "in sync";
      if (sy.running) catchup = `catching up: ${sy.done_files}/${sy.missing_files} files${sy.eta ? ", ETA " + sy.eta : ""}`;
      else if (sy.failed_files) catchup = `${sy.failed_files} files failed to copy`;
      out.push(figure("File catch-up", catchup, true));
    } catch (e) {
      try {
        const f = await api("GET", "/_cohort/api/files?prefix=");
        const files = list(f, "files") || [];
        out.push(figure("Files", files.length), figure("File bytes", bytes(files.reduce((a, x) => a + (x.size || 0), 0))));
      } catch (e2) {
        out.push(figure("Files", e2.status === 404 ? "not available" : "error", true));
      }
    }
    $("figures").replaceChildren(...out);
  }

  // describeMessage renders a replicated cluster message (GET
  // /_cohort/api/messages) as one line: its topic and its payload's fields.
  function describeMessage(m) {
    let body = m.payload || "";
    try {
      const p = JSON.parse(body);
      if (p && typeof p === "object") body = Object.entries(p).map(([k, v]) => `${k}=${typeof v === "object" ? JSON.stringify(v) : v}`).join(" ");
    } catch (e) { /* plain text payload */ }
    if (!body && m.payload_base64) body = "(binary payload)";
    return `${m.topic}: ${body}`;
  }

  async function refreshEvents() {
    let evs = [];
    let ok = false;
    try { const v = await api("GET", "/_cohort/api/events"); evs = evs.concat(list(v, "events") || []); ok = true; } catch (e) { /* shown below */ }
    try {
      const v = await api("GET", "/_cohort/api/messages");
      for (const m of list(v, "messages") || []) evs.push({ time: m.time, kind: "message", node: m.origin || "", message: describeMessage(m) });
      ok = true;
    } catch (e) { /* optional */ }
    const box = $("events");
    if (!ok) { box.replaceChildren(el("p", { class: "muted" }, "The event log is not available.")); return; }
    evs.sort((a, b) => new Date(b.time) - new Date(a.time));
    if (!evs.length) { box.replaceChildren(el("p", { class: "muted" }, "No events in the last 24 hours.")); return; }
    box.replaceChildren(...evs.slice(0, 300).map((e) => el("div", { class: "event" },
      el("span", { class: "t", title: e.time }, new Date(e.time).toLocaleTimeString()),
      el("span", { class: "kind kind-" + e.kind }, e.kind),
      el("span", {}, e.node || ""),
      el("span", {}, e.message))));
  }

  $("logout").addEventListener("click", async () => {
    await fetch("/_cohort/ui/logout", { method: "POST", headers: { "X-Cohort-CSRF": csrf }, credentials: "same-origin" });
    location.reload();
  });
  $("snapshot-btn").addEventListener("click", async () => {
    if (!(await confirmAction("Snapshot now", "Take a Raft snapshot on this node now? It compacts the log.", "Snapshot"))) return;
    try { const r = await api("POST", "/_cohort/api/snapshot"); toast(`snapshot at index ${r.index}`); }
    catch (e) { toast("snapshot failed: " + e.message, true); }
  });
  $("transfer-any").addEventListener("click", async () => {
    if (!(await confirmAction("Transfer leadership", "Hand Raft leadership to the most up-to-date follower?", "Transfer"))) return;
    try { const r = await api("POST", "/_cohort/api/leader/transfer", {}); toast("leader is now " + r.leader_id); }
    catch (e) { toast("transfer failed: " + e.message, true); }
    refreshMembers();
  });

  // The app beside the nodes (--app-command): a rolling restart, and its
  // state on this node (a crash loop shows on the button).
  async function refreshApp() {
    try {
      const a = await api("GET", "/_cohort/api/app");
      const b = $("app-restart");
      b.hidden = !a.supervised;
      const p = a.process || {};
      b.textContent = p.crash_loop ? "Restart app (crash loop here!)" : (a.healthy ? "Restart app (rolling)" : "Restart app (unhealthy here)");
      b.title = `app ${a.upstream}: ${a.healthy ? "healthy" : a.reason}; ${p.state || "not supervised"}, ${p.restarts || 0} restarts`;
    } catch (e) { /* no --app-upstream: the button stays hidden */ }
  }
  $("app-restart").addEventListener("click", async () => {
    if (!(await confirmAction("Restart app", "Restart the app on every node, one at a time: drain, restart, wait healthy, enable. No request fails.", "Restart"))) return;
    toast("rolling restart of the app under way…");
    try {
      const r = await api("POST", "/_cohort/api/app/restart");
      toast("app restarted on " + r.nodes.filter((n) => n.ok).map((n) => n.id).join(", "));
    } catch (e) { toast("app restart stopped: " + e.message, true); }
    refreshMembers(); refreshApp();
  });
  refreshApp();
  setInterval(refreshApp, 5000);

  setInterval(() => {
    $("live").className = Date.now() - lastOK > 5000 ? "live stale" : "live";
    $("live").textContent = Date.now() - lastOK > 5000 ? "● stale" : "● live";
  }, 1000);
  refreshMembers(); refreshJobs(); refreshSingletons(); refreshFigures(); refreshEvents();
  setInterval(refreshMembers, 1500);
  setInterval(refreshEvents, 3000);
  setInterval(refreshJobs, 5000);
  setInterval(refreshSingletons, 5000);
  setInterval(refreshFigures, 5000);
})();

// replog dashboard: reads this node's own JSON endpoints and draws them. No framework, no build step.
//
// - GET /health every second: the node's status, seq, epoch, waiting writes and (on a master) every
//   secondary's status, seq, lag and last contact. Successive samples give the write rate and lag charts.
// - GET /messages?since=&limit=&wait= long-polls: the log's tail, as it grows.
// - POST /messages: the append form (master only).
// A bearer token, if given, stays in this tab (sessionStorage) and goes with every request.
"use strict";

(() => {
  const POLL_MS = 1000; // /health period: the page is never more than a second behind
  const WINDOW_S = 180; // the charts show the last three minutes
  const TAIL_KEEP = 200; // entries the tail list holds
  const TAIL_JUMP = 2000; // further behind than this, the tail skips ahead instead of reading everything
  const HISTORY_KEEP = 6; // earlier answers of the append form shown under the latest
  const TOKEN_KEY = "replog.token";
  const THEME_KEY = "replog.theme";
  const SERIES = ["--accent", "--warn", "--odd", "--ok", "--bad"];

  const $ = (id) => document.getElementById(id);
  const state = {
    health: null,
    role: null,
    samples: [], // {t, seq, lags: {url: lag}}
    tailSince: null, // the highest seq the tail list has read
    tailAbort: null,
    nodes: 0,
    appendSerial: 0,
    sampleCount: 0, // /health answers read since the page loaded
  };

  // -- requests ------------------------------------------------------------------------------------------

  function headers(extra) {
    const h = Object.assign({ Accept: "application/json" }, extra || {});
    const token = sessionStorage.getItem(TOKEN_KEY);
    if (token) h.Authorization = "Bearer " + token;
    return h;
  }

  // One JSON request with a deadline; resolves to {status, body} or throws when the node does not answer.
  async function request(path, { method = "GET", body, timeoutMs = 3000, controller } = {}) {
    const ctl = controller || new AbortController();
    const timer = setTimeout(() => ctl.abort(), timeoutMs);
    try {
      const init = { method, headers: headers(body ? { "Content-Type": "application/json" } : {}), cache: "no-store" };
      init.signal = ctl.signal;
      if (body !== undefined) init.body = JSON.stringify(body);
      const resp = await fetch(path, init);
      let data = null;
      try {
        data = await resp.json();
      } catch (e) {
        data = null;
      }
      return { status: resp.status, body: data };
    } finally {
      clearTimeout(timer);
    }
  }

  const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

  // -- formatting ----------------------------------------------------------------------------------------

  function fmtInt(n) {
    return n === null || n === undefined ? "—" : Number(n).toLocaleString("en-US");
  }

  function fmtAgo(s) {
    if (s === null || s === undefined) return "never";
    if (s < 10) return s.toFixed(1) + " s ago";
    if (s < 120) return Math.round(s) + " s ago";
    if (s < 7200) return Math.round(s / 60) + " min ago";
    return Math.round(s / 3600) + " h ago";
  }

  function fmtDuration(s) {
    if (s === null || s === undefined) return "—";
    if (s < 120) return Math.round(s) + " s";
    if (s < 7200) return Math.round(s / 60) + " min";
    if (s < 172800) return (s / 3600).toFixed(1) + " h";
    return Math.round(s / 86400) + " d";
  }

  function fmtRate(r) {
    if (r >= 100) return Math.round(r).toLocaleString("en-US");
    if (r >= 10) return r.toFixed(1);
    return r.toFixed(2).replace(/\.?0+$/, "") || "0";
  }

  function fmtAxis(v) {
    if (v >= 10000) return Math.round(v / 1000) + "k";
    return String(Number(v.toFixed(2)));
  }

  function cssVar(name) {
    return getComputedStyle(document.documentElement).getPropertyValue(name).trim();
  }

  function el(tag, attrs, text) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
    if (text !== undefined) node.textContent = text;
    return node;
  }

  // -- the connection dot and the banner -----------------------------------------------------------------

  function setConn(stateName, text) {
    const c = $("conn");
    c.dataset.state = stateName;
    c.textContent = text;
  }

  function banner(text, level) {
    const b = $("banner");
    if (!text) {
      b.hidden = true;
      b.textContent = "";
      return;
    }
    b.hidden = false;
    b.dataset.level = level || "bad";
    b.textContent = text;
  }

  function whyNotOk(h) {
    if (h.role === "secondary") {
      return h.status === "disk_failed" ? ["Its disk failed: this secondary stores nothing more until restarted.", "bad"] : null;
    }
    if (h.disk_error) return ["Disk failed: " + h.disk_error + ". The master takes no writes.", "bad"];
    if (h.failed) return ["Failed: " + h.failed + ". The master takes no writes.", "bad"];
    if (h.deposed) return ["Deposed: another master holds a newer epoch. This one takes no writes.", "bad"];
    if (h.recovering) {
      const why = h.recovery_error ? " (" + h.recovery_error + ")" : "";
      return ["Recovering its log at start-up: writes wait until a majority has answered" + why + ".", "warn"];
    }
    if (h.status === "read_only") {
      return [`Read-only: ${h.available} of ${h.nodes} nodes reachable, ${h.quorum} needed. Writes answer 503 no_quorum.`, "bad"];
    }
    return null;
  }

  // -- /health -------------------------------------------------------------------------------------------

  async function pollHealth() {
    const started = Date.now();
    try {
      const { status, body } = await request("/health");
      if (status === 401 || status === 403) {
        setConn("down", status === 401 ? "token needed" : "token refused");
        banner("This node wants an access token: open “access token” below and paste one.", "warn");
      } else if (status !== 200 || !body) {
        setConn("down", "HTTP " + status);
      } else {
        setConn("live", "live");
        onHealth(body);
      }
    } catch (e) {
      setConn("down", "unreachable");
      banner("The node does not answer: it may be down or restarting. Retrying every second.", "bad");
    } finally {
      setTimeout(pollHealth, Math.max(0, POLL_MS - (Date.now() - started)));
    }
  }

  function onHealth(h) {
    const first = state.health === null;
    state.health = h;
    if (state.role !== h.role) setRole(h.role);
    const now = Date.now() / 1000;
    const lags = {};
    for (const s of h.secondaries || []) lags[s.url] = s.lag;
    state.samples.push({ t: now, seq: h.seq, lags });
    while (state.samples.length && state.samples[0].t < now - WINDOW_S - 5) state.samples.shift();

    $("node-url").textContent = location.host;
    $("seq").textContent = fmtInt(h.seq);
    if (h.role === "master") {
      $("epoch").textContent = fmtInt(h.epoch);
      $("quorum").textContent = `${h.available}/${h.nodes} up, ${h.quorum} needed`;
      $("waiting-writes").textContent = fmtInt(h.waiting_writes);
      syncWChoices(h.nodes);
    } else {
      // A secondary's epoch is the one it promised; its log's entries may be from an earlier one.
      const logEpoch = h.log_epoch !== undefined && h.log_epoch !== h.promised ? ` (log ${h.log_epoch})` : "";
      $("epoch").textContent = fmtInt(h.promised) + logEpoch;
      syncSecondaryNote(h);
    }
    $("uptime").textContent = fmtDuration(h.uptime);
    $("uptime").parentElement.hidden = h.uptime === undefined;
    $("readers").textContent = `${fmtInt(h.waiting_reads)} polls · ${fmtInt(h.streams)} streams`;
    const why = whyNotOk(h);
    banner(why && why[0], why && why[1]);
    renderNodes(h);
    drawCharts();
    $("updated").textContent = "updated " + new Date().toLocaleTimeString();
    document.body.dataset.ready = "true";
    document.body.dataset.samples = String(++state.sampleCount);
    // A node restarted empty (no data dir) starts again from seq 0: the tail follows it down.
    if (state.tailSince !== null && h.seq < state.tailSince) resetTail();
    if (first) followTail();
  }

  function setRole(role) {
    state.role = role;
    const r = $("role");
    r.textContent = role;
    r.dataset.role = role;
    document.body.dataset.role = role;
    document.title = `replog ${role} · ${location.host}`;
    for (const n of document.querySelectorAll(".master-only")) n.hidden = role !== "master";
    for (const n of document.querySelectorAll(".secondary-only")) n.hidden = role !== "secondary";
    $("rate-title").textContent = role === "master" ? "Write rate" : "Apply rate";
    $("lag-chart").closest(".card").hidden = role !== "master";
  }

  function syncSecondaryNote(h) {
    // A secondary does not know its master's URL; it knows the id of the master it promised to, if any.
    const known = h.master_url || h.master;
    let who = "the master";
    if (typeof known === "string" && known) who = `the master (${known})`;
    else if (h.promised_to) who = `the master (id ${h.promised_to}, epoch ${h.promised})`;
    const text = `This node is a secondary: it takes no writes. Send them to ${who}; its dashboard shows every node.`;
    $("append-note").textContent = text;
    $("secondary-note").textContent = "A secondary knows only itself: lag is measured by the master.";
  }

  // -- the nodes table -----------------------------------------------------------------------------------

  function nodeRows(h) {
    const self = location.origin;
    if (h.role !== "master") {
      return [{ url: self, role: "secondary", status: h.status, seq: h.seq, lag: null, contact: "this node", failures: null, self: true }];
    }
    const status = h.recovering ? "recovering" : h.deposed ? "deposed" : h.status;
    const rows = [{ url: self, role: "master", status, seq: h.seq, lag: 0, contact: "this node", failures: null, self: true }];
    for (const s of h.secondaries || []) {
      rows.push({
        url: s.url,
        role: "secondary",
        status: s.status,
        seq: s.seq,
        lag: s.lag,
        contact: fmtAgo(s.last_contact),
        failures: s.failures,
        self: false,
      });
    }
    return rows;
  }

  function renderNodes(h) {
    const body = $("nodes").tBodies[0];
    const rows = nodeRows(h);
    const keep = new Set(rows.map((r) => r.url));
    for (const tr of Array.from(body.rows)) if (!keep.has(tr.dataset.node)) tr.remove();
    rows.forEach((r, i) => {
      let tr = body.querySelector(`tr[data-node="${CSS.escape(r.url)}"]`);
      if (!tr) {
        tr = el("tr", { "data-node": r.url });
        tr.append(el("td", { class: "url" }), el("td"), el("td"), el("td", { class: "num" }), el("td", { class: "num" }),
          el("td", { class: "num" }), el("td", { class: "num" }));
      }
      if (body.rows[i] !== tr) body.insertBefore(tr, body.rows[i] || null);
      tr.dataset.status = r.status;
      tr.dataset.role = r.role;
      tr.dataset.seq = r.seq;
      tr.dataset.lag = r.lag === null ? "" : r.lag;
      const [url, role, status, seq, lag, contact, failures] = tr.cells;
      url.textContent = r.url.replace(/^https?:\/\//, "");
      url.title = r.url;
      if (r.self) url.append(el("span", { class: "self" }, "(this page)"));
      role.textContent = r.role;
      status.replaceChildren(el("span", { class: "status", "data-status": r.status }, r.status.replace("_", "-")));
      seq.textContent = fmtInt(r.seq);
      lag.textContent = r.lag === null ? "—" : fmtInt(r.lag);
      lag.classList.toggle("lag-bad", (r.lag || 0) > 0);
      contact.textContent = r.contact;
      failures.textContent = r.failures === null ? "—" : fmtInt(r.failures);
    });
  }

  function syncWChoices(nodes) {
    if (state.nodes === nodes) return;
    state.nodes = nodes;
    const sel = $("append-w");
    const was = sel.value || "majority";
    sel.replaceChildren();
    for (let w = 1; w <= nodes; w++) sel.append(el("option", { value: String(w) }, w === 1 ? "1 (master only)" : String(w)));
    sel.append(el("option", { value: "majority" }, "majority"), el("option", { value: "all" }, "all"));
    sel.value = Array.from(sel.options).some((o) => o.value === was) ? was : "majority";
  }

  // -- charts --------------------------------------------------------------------------------------------

  function rateSeries() {
    const pts = [];
    const s = state.samples;
    for (let i = 1; i < s.length; i++) {
      const dt = s[i].t - s[i - 1].t;
      if (dt <= 0) continue;
      pts.push([s[i].t, Math.max(0, s[i].seq - s[i - 1].seq) / dt]);
    }
    return pts;
  }

  function lagSeries() {
    const urls = ((state.health && state.health.secondaries) || []).map((s) => s.url);
    return urls.map((url) => ({ url, points: state.samples.filter((s) => url in s.lags).map((s) => [s.t, s.lags[url]]) }));
  }

  function niceCeil(v) {
    if (v <= 1) return 1;
    const p = Math.pow(10, Math.floor(Math.log10(v)));
    for (const m of [1, 1.2, 1.6, 2, 2.4, 4, 6, 8, 10]) if (m * p >= v) return m * p;
    return 10 * p;
  }

  // Draw series ([{color, points: [[t, v], ...], fill}]) over the last WINDOW_S seconds on a canvas.
  // minTop: the least top of the scale (4 for counts of entries, whose ticks must be whole numbers).
  function drawChart(canvas, series, unit, minTop = 1) {
    const dpr = window.devicePixelRatio || 1;
    const w = canvas.clientWidth || 600;
    const h = canvas.clientHeight || 180;
    if (canvas.width !== Math.round(w * dpr) || canvas.height !== Math.round(h * dpr)) {
      canvas.width = Math.round(w * dpr);
      canvas.height = Math.round(h * dpr);
    }
    const ctx = canvas.getContext("2d");
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.clearRect(0, 0, w, h);
    const pad = { l: 52, r: 10, t: 10, b: 22 };
    const pw = w - pad.l - pad.r;
    const ph = h - pad.t - pad.b;
    const now = Date.now() / 1000;
    const t0 = now - WINDOW_S;
    let max = 0;
    let count = 0;
    for (const s of series) for (const [t, v] of s.points) if (t >= t0) { max = Math.max(max, v); count++; }
    let top = Math.max(minTop, niceCeil(max * 1.1));
    if (minTop >= 4) top = 4 * Math.ceil(top / 4); // four grid steps of whole entries
    const x = (t) => pad.l + ((t - t0) / WINDOW_S) * pw;
    const y = (v) => pad.t + ph - (v / top) * ph;

    // Grid, value labels and time labels.
    ctx.font = `11px ${cssVar("--mono") || "monospace"}`;
    ctx.fillStyle = cssVar("--muted");
    ctx.strokeStyle = cssVar("--line");
    ctx.lineWidth = 1;
    ctx.textAlign = "right";
    ctx.textBaseline = "middle";
    for (let i = 0; i <= 4; i++) {
      const v = (top * i) / 4;
      const yy = Math.round(y(v)) + 0.5;
      ctx.beginPath();
      ctx.moveTo(pad.l, yy);
      ctx.lineTo(w - pad.r, yy);
      ctx.stroke();
      ctx.fillText(fmtAxis(v), pad.l - 8, yy);
    }
    ctx.textAlign = "center";
    ctx.textBaseline = "top";
    for (let ago = WINDOW_S; ago >= 0; ago -= 60) {
      ctx.fillText(ago === 0 ? "now" : `−${ago / 60} min`, Math.min(Math.max(x(now - ago), pad.l + 20), w - pad.r - 14), h - pad.b + 6);
    }
    ctx.save();
    ctx.textAlign = "left";
    ctx.fillText(unit, pad.l + 6, pad.t + 2);
    ctx.restore();

    // The series: a line each, the first one over a soft fill.
    ctx.save();
    ctx.beginPath();
    ctx.rect(pad.l, pad.t - 2, pw, ph + 4);
    ctx.clip();
    for (const s of series) {
      const pts = s.points.filter(([t]) => t >= t0 - 2);
      if (!pts.length) continue;
      if (s.fill) {
        ctx.beginPath();
        ctx.moveTo(x(pts[0][0]), y(0));
        for (const [t, v] of pts) ctx.lineTo(x(t), y(v));
        ctx.lineTo(x(pts[pts.length - 1][0]), y(0));
        ctx.closePath();
        ctx.globalAlpha = 0.16;
        ctx.fillStyle = s.color;
        ctx.fill();
        ctx.globalAlpha = 1;
      }
      ctx.beginPath();
      pts.forEach(([t, v], i) => (i ? ctx.lineTo(x(t), y(v)) : ctx.moveTo(x(t), y(v))));
      ctx.strokeStyle = s.color;
      ctx.lineWidth = 2;
      ctx.lineJoin = "round";
      ctx.stroke();
    }
    ctx.restore();
    canvas.dataset.points = String(count);
    canvas.dataset.max = String(max);
    canvas.dataset.colors = series.map((s) => s.color).join(" ");
    canvas.dataset.plot = [pad.l, pad.t, pw, ph].join(" ");
  }

  function drawCharts() {
    const rate = rateSeries();
    drawChart($("rate-chart"), [{ color: cssVar("--accent"), points: rate, fill: true }], "entries/s");
    const last = rate.length ? rate[rate.length - 1][1] : 0;
    $("rate-now").textContent = `${fmtRate(last)} /s now`;
    if (state.role !== "master") return;
    const lags = lagSeries();
    const colors = lags.map((_, i) => cssVar(SERIES[i % SERIES.length]));
    drawChart($("lag-chart"), lags.map((s, i) => ({ color: colors[i], points: s.points, fill: false })), "entries behind", 4);
    const legend = $("lag-legend");
    legend.replaceChildren(
      ...lags.map((s, i) => {
        const li = el("li", { "data-node": s.url }, `${s.url.replace(/^https?:\/\//, "")}  ${fmtInt(s.points.length ? s.points[s.points.length - 1][1] : null)}`);
        li.style.setProperty("--swatch", colors[i]);
        return li;
      }),
    );
    const worst = Math.max(0, ...lags.map((s) => (s.points.length ? s.points[s.points.length - 1][1] : 0)));
    $("lag-now").textContent = `max ${fmtInt(worst)} now`;
  }

  // -- the log's tail ------------------------------------------------------------------------------------

  function resetTail() {
    state.tailSince = null;
    $("tail").replaceChildren();
    if (state.tailAbort) state.tailAbort.abort();
  }

  function addToTail(messages) {
    const list = $("tail");
    const empty = list.querySelector(".empty");
    if (empty) empty.remove();
    const fresh = state.tailSince !== null && list.children.length > 0;
    for (const m of messages) {
      const li = el("li", { "data-seq": String(m.seq), "data-id": m.id });
      li.append(el("span", { class: "seq" }, String(m.seq)), el("span", { class: "text", title: m.text }, m.text));
      if (fresh) li.classList.add("fresh");
      list.prepend(li); // the newest on top
    }
    while (list.children.length > TAIL_KEEP) list.lastElementChild.remove();
    if (!list.children.length) list.append(el("li", { class: "empty" }, "the log is empty"));
  }

  async function followTail() {
    for (;;) {
      const h = state.health;
      if (!h) {
        await sleep(POLL_MS);
        continue;
      }
      if (state.tailSince === null || h.seq - state.tailSince > TAIL_JUMP) {
        if (state.tailSince !== null) $("tail").replaceChildren();
        state.tailSince = Math.max(0, h.seq - TAIL_KEEP);
      }
      const since = state.tailSince;
      const ctl = new AbortController();
      state.tailAbort = ctl;
      try {
        const { status, body } = await request(`/messages?since=${since}&limit=500&wait=20`, { timeoutMs: 25000, controller: ctl });
        if (status !== 200 || !body) {
          await sleep(POLL_MS);
          continue;
        }
        if (state.tailSince !== since) continue; // reset while waiting
        const msgs = body.messages || [];
        if (msgs.length || !$("tail").children.length) addToTail(msgs);
        if (msgs.length) state.tailSince = msgs[msgs.length - 1].seq;
        $("tail").dataset.lastSeq = String(state.tailSince);
        $("tail-info").textContent = `up to seq ${fmtInt(state.tailSince)}`;
      } catch (e) {
        await sleep(POLL_MS); // the node is down or the wait was cut short: /health shows which
      } finally {
        if (state.tailAbort === ctl) state.tailAbort = null;
      }
    }
  }

  // -- the append form -----------------------------------------------------------------------------------

  function showResult(outcome, text) {
    const out = $("append-result");
    const before = out.dataset.outcome;
    if (before === "ok" || before === "error") {
      // The answer shown so far moves down into the history, newest first.
      const li = el("li", { "data-outcome": before });
      li.append(el("span", { class: "at" }, out.dataset.at || ""), document.createTextNode(out.textContent));
      const history = $("append-history");
      history.prepend(li);
      while (history.children.length > HISTORY_KEEP) history.lastElementChild.remove();
    }
    out.dataset.outcome = outcome;
    out.dataset.at = new Date().toLocaleTimeString();
    out.textContent = text;
  }

  async function onAppend(ev) {
    ev.preventDefault();
    const input = $("append-message");
    const message = input.value;
    const wv = $("append-w").value;
    const body = { message, w: wv === "majority" || wv === "all" ? wv : Number(wv) };
    const timeout = $("append-timeout").value.trim();
    if (timeout) body.timeout = Number(timeout);
    const serial = ++state.appendSerial;
    showResult("pending", `waiting for w=${wv}…`);
    let answer;
    try {
      // A write may wait for its w as long as its timeout says (or without limit): no deadline of ours.
      answer = await request("/messages", { method: "POST", body, timeoutMs: 2 ** 31 - 1 });
    } catch (e) {
      if (serial === state.appendSerial) showResult("error", "the node did not answer: " + e.message);
      return;
    }
    if (serial !== state.appendSerial) return; // a later append owns the result line
    const { status, body: b } = answer;
    if ((status === 201 || status === 200) && b) {
      const again = status === 200 ? " (already stored under this id)" : "";
      showResult("ok", `${status} stored seq=${b.seq} w=${b.w} acks=${b.acks}${again}`);
      if (input.value === message) input.value = "";
    } else if (b && b.error) {
      const stored = b.error === "write_concern_timeout" ? ` — stored as seq ${b.seq}, acks=${b.acks}, still replicating` : "";
      showResult("error", `${status} ${b.error}: ${b.detail || ""}${stored}`);
    } else {
      showResult("error", `HTTP ${status}`);
    }
  }

  // -- theme and token -----------------------------------------------------------------------------------

  function applyTheme(theme) {
    document.documentElement.dataset.theme = theme;
    if (state.health) drawCharts();
  }

  function init() {
    const saved = localStorage.getItem(THEME_KEY);
    const dark = window.matchMedia && window.matchMedia("(prefers-color-scheme: dark)").matches;
    applyTheme(saved || (dark ? "dark" : "light"));
    $("theme").addEventListener("click", () => {
      const next = document.documentElement.dataset.theme === "dark" ? "light" : "dark";
      localStorage.setItem(THEME_KEY, next);
      applyTheme(next);
    });
    const token = $("token");
    token.value = sessionStorage.getItem(TOKEN_KEY) || "";
    token.addEventListener("change", () => {
      if (token.value) sessionStorage.setItem(TOKEN_KEY, token.value.trim());
      else sessionStorage.removeItem(TOKEN_KEY);
    });
    $("append").addEventListener("submit", onAppend);
    window.addEventListener("resize", () => state.health && drawCharts());
    pollHealth();
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init);
  else init();
})();

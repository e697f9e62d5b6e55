// attractor-trio live run viewer, page half: talks to the server's HTTP API (contract.md §8) and
// keeps the page in step with the run. The pure logic lives in viewer-core.js (loaded first).
"use strict";

(function () {
  const { EVENT_NAMES, parseDot, layoutGraph, nodeStatusFromEvent, runStateFromEvent, describeEvent } =
    window.attractorViewer;
  const TERMINAL_EVENTS = new Set(["pipeline_completed", "pipeline_failed"]);
  const TERMINAL_STATES = new Set(["success", "fail", "canceled"]);

  const $ = (sel) => document.querySelector(sel);
  const SVG_NS = "http://www.w3.org/2000/svg";
  const params = new URLSearchParams(window.location.search);
  const TOKEN = params.get("token");
  const MAX_LOG_ENTRIES = 2000;

  const view = {
    runId: null, source: null, lastSeq: 0, state: "none", nodeStatus: new Map(),
    pollTimer: null, eventCount: 0, answered: new Set(),
  };

  /** Every request carries the page's ?token= (EventSource cannot send headers). */
  function apiUrl(path) {
    if (!TOKEN) return path;
    return path + (path.includes("?") ? "&" : "?") + "token=" + encodeURIComponent(TOKEN);
  }

  async function api(path, options) {
    const response = await fetch(apiUrl(path), options);
    const text = await response.text();
    if (!response.ok) {
      let message = text;
      try { const body = JSON.parse(text); message = body.error || body.detail || body.message || text; } catch (e) { /* not JSON */ }
      throw new Error(response.status + " " + (typeof message === "string" ? message : JSON.stringify(message)));
    }
    return { text: text, type: response.headers.get("content-type") || "" };
  }

  async function apiJson(path, options) {
    const result = await api(path, options);
    return result.text ? JSON.parse(result.text) : null;
  }

  const postJson = (path, body) => apiJson(path, {
    method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body || {}),
  });

  function svg(tag, attrs, parent) {
    const el = document.createElementNS(SVG_NS, tag);
    Object.keys(attrs || {}).forEach((k) => el.setAttribute(k, attrs[k]));
    if (parent) parent.appendChild(el);
    return el;
  }

  function shapeFor(box, group) {
    const x = box.x, y = box.y, w = box.w, h = box.h, cx = box.cx, cy = y + h / 2;
    const poly = (pts) => svg("polygon", { class: "shape", points: pts.map((p) => p.join(",")).join(" ") }, group);
    if (/diamond/.test(box.shape)) return poly([[cx, y], [x + w, cy], [cx, y + h], [x, cy]]);
    if (box.shape === "hexagon") return poly([[x + 12, y], [x + w - 12, y], [x + w, cy], [x + w - 12, y + h], [x + 12, y + h], [x, cy]]);
    if (box.shape === "parallelogram") return poly([[x + 12, y], [x + w, y], [x + w - 12, y + h], [x, y + h]]);
    if (/circle|ellipse|oval/.test(box.shape)) return svg("ellipse", { class: "shape", cx: cx, cy: cy, rx: w / 2, ry: h / 2 }, group);
    const rect = svg("rect", { class: "shape", x: x, y: y, width: w, height: h, rx: box.shape === "box" ? 4 : 0 }, group);
    if (box.shape === "msquare") svg("rect", { class: "shape", x: x + 4, y: y + 4, width: w - 8, height: h - 8 }, group);
    return rect;
  }

  function renderLayout(layout) {
    const root = svg("svg", { id: "graph-svg", width: layout.width, height: layout.height,
      viewBox: "0 0 " + layout.width + " " + layout.height, role: "img" });
    const marker = svg("marker", { id: "arrowhead", viewBox: "0 0 10 10", refX: 10, refY: 5,
      markerWidth: 7, markerHeight: 7, orient: "auto-start-reverse" }, svg("defs", {}, root));
    svg("path", { d: "M0,0 L10,5 L0,10 z" }, marker);
    layout.edges.forEach((e) => {
      const g = svg("g", { class: "edge" + (e.back ? " back" : ""), "data-edge": e.from + "->" + e.to }, root);
      const p = e.points;
      // Back edges are drawn through their lane corners (a curve would bulge into nodes).
      const d = "M" + p[0].join(",") + (e.back && e.from !== e.to ? " L" : " C") +
        p.slice(1).map((q) => q.join(",")).join(e.back && e.from !== e.to ? " L" : " ");
      svg("path", { d: d, "marker-end": "url(#arrowhead)" }, g);
      if (e.label) {
        const t = svg("text", { x: (p[1][0] + p[2][0]) / 2 + 4, y: (p[1][1] + p[2][1]) / 2 - 3 }, g);
        t.textContent = e.label;
      }
    });
    layout.nodes.forEach((box) => {
      const g = svg("g", { class: "node", "data-node": box.id, "data-shape": box.shape,
        "data-status": view.nodeStatus.get(box.id) || "pending" }, root);
      svg("title", {}, g).textContent = box.id;
      shapeFor(box, g);
      const t = svg("text", { x: box.cx, y: box.y + box.h / 2 + 4, "text-anchor": "middle" }, g);
      t.textContent = box.label;
    });
    return root;
  }

  /**
   * Graphviz SVG (the server has `dot`): inline it and tag each g.node (its <title> is the node
   * id) with data-node/data-status, dropping Graphviz's fills so the status CSS colors them.
   */
  function adoptGraphvizSvg(text, statusOf) {
    const doc = new DOMParser().parseFromString(text, "image/svg+xml");
    const root = document.importNode(doc.documentElement, true);
    root.querySelectorAll("g.node").forEach((g) => {
      const title = g.querySelector("title");
      if (!title) return;
      const id = title.textContent.trim();
      g.setAttribute("data-node", id);
      g.setAttribute("data-status", statusOf(id) || "pending");
      g.querySelectorAll("polygon, ellipse, path").forEach((s) => { s.removeAttribute("fill"); s.classList.add("shape"); });
    });
    return root;
  }
  window.attractorViewer.adoptGraphvizSvg = adoptGraphvizSvg;

  async function loadGraph(runId) {
    const holder = $("#graph");
    try {
      const result = await api("/pipelines/" + encodeURIComponent(runId) + "/graph");
      if (runId !== view.runId) return;
      const text = result.text.trim();
      const looksSvg = result.type.includes("svg") || text.startsWith("<");
      const el = looksSvg ? adoptGraphvizSvg(text, (id) => view.nodeStatus.get(id)) : renderLayout(layoutGraph(parseDot(text)));
      holder.replaceChildren(el);
    } catch (err) {
      holder.replaceChildren(textElement("p", "empty", "Graph unavailable: " + err.message));
    }
  }

  function textElement(tag, cls, text) {
    const el = document.createElement(tag);
    if (cls) el.className = cls;
    el.textContent = text;
    return el;
  }

  function setNodeStatus(nodeId, status) {
    view.nodeStatus.set(nodeId, status);
    document.querySelectorAll("#graph [data-node]").forEach((el) => {
      if (el.getAttribute("data-node") === nodeId) el.setAttribute("data-status", status);
    });
  }

  function setRunState(state, detail) {
    view.state = state || "none";
    const badge = $("#run-state");
    badge.setAttribute("data-state", view.state);
    badge.textContent = view.state;
    $("#cancel-run").disabled = !view.runId || TERMINAL_STATES.has(view.state);
    if (detail && detail.failure_reason) {
      $("#failure-reason").textContent = "failure: " + detail.failure_reason;
      $("#failure-reason").hidden = false;
    }
    if (detail && "current_node" in detail) {
      $("#current-node").textContent = detail.current_node ? "at " + detail.current_node : "";
    }
  }

  function appendLog(ev) {
    view.eventCount += 1;
    $("#event-count").textContent = "(" + view.eventCount + ")";
    if (ev.event === "stage_heartbeat") return; // counted, not listed: they would drown the log
    const log = $("#event-log");
    const atBottom = log.scrollHeight - log.scrollTop - log.clientHeight < 40;
    const li = document.createElement("li");
    li.setAttribute("data-seq", ev.seq);
    li.setAttribute("data-event", ev.event);
    const bad = ev.status === "fail" || ev.status === "canceled" || /failed|timeout|blocked|cancellation/.test(ev.event);
    if (bad) li.className = "bad";
    else if (ev.status === "success" || (ev.event === "stage_completed" && nodeStatusFromEvent(ev)[1] === "success")) li.className = "good";
    const time = typeof ev.ts === "string" ? ev.ts.replace(/^.*T/, "").replace(/(\.\d{3})?\d*Z$/, "$1") : "";
    li.append(textElement("span", "seq", "#" + ev.seq + " " + time + " "),
      textElement("span", "name", ev.event),
      document.createTextNode((ev.branch ? " [" + ev.branch + "]" : "") + " " + describeEvent(ev)));
    log.appendChild(li);
    while (log.children.length > MAX_LOG_ENTRIES) log.removeChild(log.firstChild);
    if (atBottom) log.scrollTop = log.scrollHeight;
  }

  function applyEvent(ev) {
    if (typeof ev.seq === "number") {
      if (ev.seq <= view.lastSeq) return; // a reconnect replays history: keep each event once
      view.lastSeq = ev.seq;
    }
    appendLog(ev);
    const change = nodeStatusFromEvent(ev);
    if (change) setNodeStatus(change[0], change[1]);
    if (ev.event === "interview_started" || ev.event === "interview_completed" || ev.event === "interview_timeout") {
      refreshQuestions();
    }
    const state = runStateFromEvent(ev);
    if (state) setRunState(state, ev);
    if (TERMINAL_EVENTS.has(ev.event)) {
      if (ev.status === "canceled") {
        view.nodeStatus.forEach((s, id) => { if (s === "running" || s === "waiting") setNodeStatus(id, "canceled"); });
      }
      closeStream();
      refreshStatus();
      refreshQuestions();
      refreshRuns();
    }
    schedulePoll(); // a gate that starts waiting switches the question poll to fast
  }

  function openStream(runId) {
    closeStream();
    const source = new EventSource(apiUrl("/pipelines/" + encodeURIComponent(runId) + "/events"));
    const onEvent = (message) => {
      if (runId !== view.runId) return;
      let ev;
      try { ev = JSON.parse(message.data); } catch (e) { return; }
      if (!ev.event) ev.event = message.type;
      applyEvent(ev);
    };
    EVENT_NAMES.concat(["message"]).forEach((name) => source.addEventListener(name, onEvent));
    source.onopen = () => { $("#connection").setAttribute("data-connected", "true"); $("#connection").textContent = ""; };
    source.onerror = () => {
      if (TERMINAL_STATES.has(view.state)) { closeStream(); return; }
      $("#connection").setAttribute("data-connected", "false");
      $("#connection").textContent = source.readyState === EventSource.CLOSED
        ? "event stream closed" : "reconnecting…";
    };
    view.source = source;
  }

  function closeStream() {
    if (view.source) view.source.close();
    view.source = null;
  }

  async function refreshStatus() {
    const runId = view.runId;
    if (!runId) return;
    try {
      const status = await apiJson("/pipelines/" + encodeURIComponent(runId));
      if (runId !== view.runId || !status) return;
      // A reply sent before the run ended must not undo the end the event stream already showed.
      const stale = TERMINAL_STATES.has(view.state) && !TERMINAL_STATES.has(status.state);
      setRunState(stale ? view.state : status.state, status);
    } catch (err) {
      $("#current-node").textContent = "status unavailable: " + err.message;
    }
  }

  function renderQuestion(q) {
    const box = document.createElement("div");
    box.className = "question";
    box.setAttribute("data-question-id", q.id);
    box.setAttribute("data-question-node", q.node_id || "");
    box.append(textElement("div", "node-id", q.node_id || ""), textElement("p", "", q.text || "Select an option:"));
    const send = async (value, controls) => {
      controls.forEach((c) => { c.disabled = true; });
      try {
        await postJson("/pipelines/" + encodeURIComponent(view.runId) + "/questions/" +
          encodeURIComponent(q.id) + "/answer", { value: value });
        view.answered.add(String(q.id)); // a poll already in flight may still list it
        box.remove();
        refreshQuestions();
      } catch (err) {
        controls.forEach((c) => { c.disabled = false; });
        box.appendChild(textElement("p", "error", "answer refused: " + err.message));
      }
    };
    let options = q.options || [];
    if (!options.length && (q.type === "yes_no" || q.type === "confirmation")) {
      options = [{ key: "yes", label: "Yes" }, { key: "no", label: "No" }];
    }
    if (options.length) {
      const buttons = options.map((opt) => {
        const b = textElement("button", "", opt.label || opt.key);
        b.type = "button";
        b.setAttribute("data-key", opt.key);
        return b;
      });
      buttons.forEach((b) => b.addEventListener("click", () => send(b.getAttribute("data-key"), buttons)));
      box.append(...buttons);
    } else {
      const input = document.createElement("input");
      input.type = "text";
      input.setAttribute("aria-label", "answer");
      const b = textElement("button", "", "Answer");
      b.type = "button";
      b.addEventListener("click", () => send(input.value, [input, b]));
      box.append(input, b);
    }
    return box;
  }

  async function refreshQuestions() {
    const runId = view.runId;
    if (!runId) return;
    let questions;
    try {
      questions = await apiJson("/pipelines/" + encodeURIComponent(runId) + "/questions");
    } catch (err) {
      return; // transient; the poll tries again
    }
    if (runId !== view.runId) return;
    const list = (Array.isArray(questions) ? questions : (questions && questions.questions) || [])
      .filter((q) => !view.answered.has(String(q.id)));
    const holder = $("#questions");
    const shown = new Set(Array.from(holder.querySelectorAll(".question")).map((q) => q.getAttribute("data-question-id")));
    const wanted = new Set(list.map((q) => String(q.id)));
    holder.querySelectorAll(".question").forEach((el) => { if (!wanted.has(el.getAttribute("data-question-id"))) el.remove(); });
    list.forEach((q) => { if (!shown.has(String(q.id))) holder.appendChild(renderQuestion(q)); });
    const empty = holder.querySelector(".empty");
    if (list.length && empty) empty.remove();
    if (!list.length && !empty) holder.appendChild(textElement("p", "empty", "No pending questions."));
  }

  /**
   * Questions are polled as well as refreshed on interview events: the event can arrive just
   * before the server lists the question. Fast while a gate waits, slow otherwise, off when done.
   */
  function schedulePoll() {
    clearTimeout(view.pollTimer);
    if (!view.runId || TERMINAL_STATES.has(view.state)) return;
    const waiting = Array.from(view.nodeStatus.values()).includes("waiting");
    view.pollTimer = setTimeout(async () => {
      await refreshQuestions();
      schedulePoll();
    }, waiting ? 500 : 3000);
  }

  async function refreshRuns() {
    const picker = $("#run-picker");
    let runs;
    try {
      runs = await apiJson("/pipelines");
    } catch (err) {
      return;
    }
    const list = Array.isArray(runs) ? runs : (runs && (runs.pipelines || runs.runs)) || [];
    const options = [textElement("option", "", "— pick a run —")];
    options[0].value = "";
    list.forEach((run) => {
      const id = run.id || run.run_id;
      const opt = textElement("option", "", id + (run.state ? " — " + run.state : ""));
      opt.value = id;
      options.push(opt);
    });
    if (view.runId && !list.some((r) => (r.id || r.run_id) === view.runId)) {
      const opt = textElement("option", "", view.runId);
      opt.value = view.runId;
      options.push(opt);
    }
    picker.replaceChildren(...options);
    picker.value = view.runId || "";
  }

  function selectRun(runId) {
    closeStream();
    clearTimeout(view.pollTimer);
    Object.assign(view, {
      runId: runId || null, lastSeq: 0, nodeStatus: new Map(), eventCount: 0, answered: new Set(),
    });
    $("#event-log").replaceChildren();
    $("#event-count").textContent = "";
    $("#failure-reason").hidden = true;
    $("#current-node").textContent = "";
    $("#questions").replaceChildren(textElement("p", "empty", "No pending questions."));
    const url = new URL(window.location.href);
    if (runId) url.searchParams.set("run", runId); else url.searchParams.delete("run");
    window.history.replaceState(null, "", url.toString());
    $("#run-picker").value = runId || "";
    if (!runId) {
      setRunState("none");
      $("#graph").replaceChildren(textElement("p", "empty", "Pick a run or submit a pipeline."));
      return;
    }
    setRunState("starting");
    loadGraph(runId);
    openStream(runId);
    refreshStatus();
    refreshQuestions().then(schedulePoll);
  }

  async function submitRun(event) {
    event.preventDefault();
    const error = $("#submit-error");
    error.hidden = true;
    const options = { simulate: $("#simulate").checked };
    const script = $("#sim-script").value.trim();
    try {
      if (script) options.sim_script = JSON.parse(script);
      const created = await postJson("/pipelines", { dot: $("#dot-source").value, options: options });
      await refreshRuns();
      selectRun(created.id || created.run_id);
    } catch (err) {
      error.textContent = err instanceof SyntaxError ? "simulation script is not JSON: " + err.message : err.message;
      error.hidden = false;
    }
  }

  async function cancelRun() {
    if (!view.runId) return;
    $("#cancel-run").disabled = true;
    try {
      await postJson("/pipelines/" + encodeURIComponent(view.runId) + "/cancel");
    } catch (err) {
      $("#current-node").textContent = "cancel failed: " + err.message;
      $("#cancel-run").disabled = false;
    }
    refreshStatus();
  }

  function start() {
    $("#run-picker").addEventListener("change", (e) => selectRun(e.target.value));
    $("#refresh-runs").addEventListener("click", refreshRuns);
    $("#submit-form").addEventListener("submit", submitRun);
    $("#cancel-run").addEventListener("click", cancelRun);
    refreshRuns();
    selectRun(params.get("run"));
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();

// attractor-trio live run viewer, pure half: DOT parsing, layered layout, and what an event
// means for a node or the run. No DOM access and no network, so the Chromium test can call
// these directly through window.attractorViewer; app.js wires them to the page.
"use strict";

(function () {
  /** Every event name of contract.md §4. EventSource has no wildcard listener for named events. */
  const EVENT_NAMES = [
    "pipeline_started", "pipeline_completed", "pipeline_failed",
    "stage_started", "stage_completed", "stage_attempt_started", "stage_attempt_finished",
    "stage_heartbeat", "stage_retrying", "stage_retry_blocked", "status_ingestion_decision",
    "edge_selected", "parallel_started", "parallel_completed", "parallel_branch_started",
    "parallel_branch_completed", "interview_started", "interview_completed",
    "interview_timeout", "checkpoint_saved", "watchdog_timeout", "cancellation_exit",
    "failure_cycle_break", "llm_failover", "llm_failover_blocked", "loop_restart",
    "agent_tool_call",
  ];
  const ENVELOPE_KEYS = new Set(["seq", "ts", "run_id", "event", "branch"]);
  const NODE_STATUSES = new Set([
    "pending", "running", "waiting", "success", "partial_success", "retry", "fail", "skipped",
    "canceled",
  ]);
  /** A custom outcome value (contract.md §10, e.g. "needs_dod") counts as success. */
  const CUSTOM_OUTCOME = /^[a-z_][a-z0-9_]*$/;

  /** The node status a stage's reported outcome implies: custom values show as success. */
  function nodeStatusOfOutcome(status) {
    if (NODE_STATUSES.has(status)) return status;
    return typeof status === "string" && CUSTOM_OUTCOME.test(status) ? "success" : "fail";
  }

  /** Splits DOT source into tokens: ids (quoted or not, HTML strings), edge ops, punctuation. */
  function tokenizeDot(src) {
    const tokens = [];
    let i = 0;
    while (i < src.length) {
      const c = src[i];
      if (/\s/.test(c)) { i += 1; continue; }
      if (src.startsWith("//", i) || (c === "#" && (i === 0 || src[i - 1] === "\n"))) {
        const end = src.indexOf("\n", i);
        i = end < 0 ? src.length : end + 1;
        continue;
      }
      if (src.startsWith("/*", i)) {
        const end = src.indexOf("*/", i + 2);
        i = end < 0 ? src.length : end + 2;
        continue;
      }
      if (c === '"') {
        let j = i + 1;
        let text = "";
        while (j < src.length && src[j] !== '"') {
          if (src[j] === "\\" && j + 1 < src.length) {
            const next = src[j + 1];
            text += next === '"' || next === "\\" ? next : next === "\n" ? "" : "\\" + next;
            j += 2;
          } else {
            text += src[j];
            j += 1;
          }
        }
        tokens.push({ kind: "id", text: text, quoted: true });
        i = j + 1;
        continue;
      }
      if (c === "<") {
        let depth = 0;
        let j = i;
        for (; j < src.length; j += 1) {
          if (src[j] === "<") depth += 1;
          else if (src[j] === ">" && --depth === 0) break;
        }
        tokens.push({ kind: "id", text: src.slice(i + 1, j), quoted: true });
        i = j + 1;
        continue;
      }
      if (src.startsWith("->", i) || src.startsWith("--", i)) {
        tokens.push({ kind: "edgeop", text: src.slice(i, i + 2) });
        i += 2;
        continue;
      }
      if ("[]{};=,:+".includes(c)) {
        tokens.push({ kind: c, text: c });
        i += 1;
        continue;
      }
      const match = /^[A-Za-z0-9_.\-\u0080-\uffff]+/.exec(src.slice(i, i + 512));
      if (!match) { i += 1; continue; } // Unknown character: a viewer skips, the server validates.
      tokens.push({ kind: "id", text: match[0], quoted: false });
      i += match[0].length;
    }
    return tokens;
  }

  /**
   * Reads nodes and edges out of DOT text, enough to draw a pipeline: node ids with label and
   * shape (honouring `node [...]` defaults per subgraph scope), edges with labels, chains
   * `a -> b -> c`, and subgraphs as edge endpoints. The server has already validated the graph.
   */
  function parseDot(src) {
    const tokens = tokenizeDot(src);
    let pos = 0;
    const nodes = new Map();
    const edges = [];
    const peek = (offset) => tokens[pos + (offset || 0)];
    const isKeyword = (tok, word) => tok && tok.kind === "id" && !tok.quoted &&
      tok.text.toLowerCase() === word;
    const accept = (kind) => (peek() && peek().kind === kind ? tokens[pos++] : null);

    function readId() {
      let tok = accept("id");
      if (!tok) return null;
      let text = tok.text;
      while (peek() && peek().kind === "+" && peek(1) && peek(1).kind === "id") {
        pos += 1;
        text += tokens[pos++].text;
      }
      return text;
    }

    function readAttrs() {
      const attrs = {};
      while (accept("[")) {
        while (peek() && peek().kind !== "]") {
          const key = readId();
          if (key === null) { pos += 1; continue; }
          attrs[key] = accept("=") ? readId() : "true";
          accept(",") || accept(";");
        }
        accept("]");
      }
      return attrs;
    }

    function touchNode(id, defaults, attrs) {
      let node = nodes.get(id);
      if (!node) {
        node = { id: id, attrs: Object.assign({}, defaults) };
        nodes.set(id, node);
      }
      Object.assign(node.attrs, attrs || {});
      return node;
    }

    // Returns the node ids of an edge endpoint: one node, or every node of a subgraph.
    function readEndpoint(scope) {
      if (isKeyword(peek(), "subgraph") || (peek() && peek().kind === "{")) {
        return readSubgraph(scope);
      }
      const id = readId();
      if (id === null) return null;
      if (accept(":")) { readId(); if (accept(":")) readId(); } // ports do not matter here
      touchNode(id, scope.nodeDefaults); // declared where first seen, as Graphviz orders them
      scope.members.add(id);
      return [id];
    }

    function readSubgraph(scope) {
      if (isKeyword(peek(), "subgraph")) { pos += 1; if (peek() && peek().kind === "id") readId(); }
      if (!accept("{")) return [];
      const inner = { nodeDefaults: Object.assign({}, scope.nodeDefaults),
        edgeDefaults: Object.assign({}, scope.edgeDefaults), members: new Set() };
      readStatements(inner);
      accept("}");
      inner.members.forEach((id) => scope.members.add(id));
      return Array.from(inner.members);
    }

    function readStatements(scope) {
      while (peek() && peek().kind !== "}") {
        const tok = peek();
        if (accept(";") || accept(",")) continue;
        if (["graph", "node", "edge"].some((w) => isKeyword(tok, w)) &&
            peek(1) && peek(1).kind === "[") {
          pos += 1;
          const attrs = readAttrs();
          if (isKeyword(tok, "node")) Object.assign(scope.nodeDefaults, attrs);
          if (isKeyword(tok, "edge")) Object.assign(scope.edgeDefaults, attrs);
          continue;
        }
        if (tok.kind === "id" && peek(1) && peek(1).kind === "=") {
          readId(); accept("="); readId(); // graph attribute
          continue;
        }
        const chain = [readEndpoint(scope)];
        if (chain[0] === null) { pos += 1; continue; }
        while (accept("edgeop")) {
          const next = readEndpoint(scope);
          if (next !== null) chain.push(next);
        }
        const attrs = readAttrs();
        if (chain.length === 1) {
          chain[0].forEach((id) => touchNode(id, scope.nodeDefaults, attrs));
          continue;
        }
        const edgeAttrs = Object.assign({}, scope.edgeDefaults, attrs);
        for (let k = 0; k + 1 < chain.length; k += 1) {
          chain[k].forEach((from) => chain[k + 1].forEach((to) => {
            edges.push({ from: from, to: to, label: edgeAttrs.label || "" });
          }));
        }
      }
    }

    if (isKeyword(peek(), "strict")) pos += 1;
    if (isKeyword(peek(), "digraph") || isKeyword(peek(), "graph")) pos += 1;
    if (peek() && peek().kind === "id") readId();
    accept("{");
    readStatements({ nodeDefaults: {}, edgeDefaults: {}, members: new Set() });
    return {
      nodes: Array.from(nodes.values()).map((n) => ({
        id: n.id, label: n.attrs.label || n.id, shape: (n.attrs.shape || "box").toLowerCase(),
      })),
      edges: edges,
    };
  }

  /**
   * A layered top-to-bottom layout: layer = longest forward path from the start, back edges
   * (found by DFS from the start) drawn dashed on the right, node order within a layer by the
   * mean position of its predecessors. Good enough for pipelines; no Graphviz needed.
   */
  function layoutGraph(graph, measure) {
    const width = measure || ((text) => Math.max(96, text.length * 7.5 + 28));
    const NODE_H = 38, LAYER_GAP = 74, NODE_GAP = 36, MARGIN = 28;
    const ids = graph.nodes.map((n) => n.id);
    const outgoing = new Map(ids.map((id) => [id, []]));
    graph.edges.forEach((e, index) => {
      if (outgoing.has(e.from) && outgoing.has(e.to)) outgoing.get(e.from).push(index);
    });
    const hasIncoming = new Set(graph.edges.map((e) => e.to));
    const starts = graph.nodes.filter((n) => n.shape === "mdiamond" || /^start$/i.test(n.id));
    const roots = (starts.length ? starts : graph.nodes.filter((n) => !hasIncoming.has(n.id)))
      .map((n) => n.id).concat(ids);

    // DFS (iterative: pipelines may be long) marking edges that close a cycle.
    const back = new Set();
    const state = new Map(); // undefined = unseen, 1 = on stack, 2 = done
    roots.forEach((root) => {
      if (state.has(root)) return;
      const stack = [[root, 0]];
      state.set(root, 1);
      while (stack.length) {
        const top = stack[stack.length - 1];
        const edgeIndexes = outgoing.get(top[0]);
        if (top[1] >= edgeIndexes.length) { state.set(top[0], 2); stack.pop(); continue; }
        const index = edgeIndexes[top[1]++];
        const to = graph.edges[index].to;
        if (state.get(to) === 1) back.add(index);
        else if (!state.has(to)) { state.set(to, 1); stack.push([to, 0]); }
      }
    });

    // Longest-path layering over forward edges (Kahn's order).
    const layer = new Map(ids.map((id) => [id, 0]));
    const indegree = new Map(ids.map((id) => [id, 0]));
    graph.edges.forEach((e, i) => { if (!back.has(i) && indegree.has(e.to)) indegree.set(e.to, indegree.get(e.to) + 1); });
    const queue = ids.filter((id) => indegree.get(id) === 0);
    while (queue.length) {
      const id = queue.shift();
      outgoing.get(id).forEach((i) => {
        if (back.has(i)) return;
        const to = graph.edges[i].to;
        layer.set(to, Math.max(layer.get(to), layer.get(id) + 1));
        indegree.set(to, indegree.get(to) - 1);
        if (indegree.get(to) === 0) queue.push(to);
      });
    }

    const layers = [];
    graph.nodes.forEach((n) => { (layers[layer.get(n.id)] = layers[layer.get(n.id)] || []).push(n); });
    const placed = new Map();
    const rows = layers.filter(Boolean).map((row) => {
      const order = (n) => {
        const xs = graph.edges.filter((e, i) => !back.has(i) && e.to === n.id && placed.has(e.from))
          .map((e) => placed.get(e.from).cx);
        return xs.length ? xs.reduce((a, b) => a + b, 0) / xs.length : Infinity;
      };
      const sorted = row.map((n, i) => ({ n: n, key: order(n), i: i }))
        .sort((a, b) => (a.key - b.key) || (a.i - b.i)).map((x) => x.n);
      let x = 0;
      const boxes = sorted.map((n) => {
        const w = width(n.label) + (/diamond/.test(n.shape) ? 40 : 0);
        const box = { id: n.id, label: n.label, shape: n.shape, x: x, w: w, h: NODE_H };
        x += w + NODE_GAP;
        box.cx = box.x + w / 2;
        placed.set(n.id, box);
        return box;
      });
      return { boxes: boxes, width: x - NODE_GAP };
    });
    const innerWidth = Math.max(0, ...rows.map((r) => r.width));
    rows.forEach((row, r) => row.boxes.forEach((b) => {
      b.x += MARGIN + (innerWidth - row.width) / 2;
      b.cx = b.x + b.w / 2;
      b.y = MARGIN + r * (NODE_H + LAYER_GAP);
    }));
    const nodes = rows.flatMap((r) => r.boxes);
    // Back edges run up the right margin, one lane each, so they never cut through a node.
    let lane = 0;
    const edgeOut = graph.edges.map((e, i) => {
      const a = placed.get(e.from), b = placed.get(e.to);
      if (!a || !b) return null;
      const laneX = back.has(i) && a !== b ? MARGIN + innerWidth + 24 + 12 * lane++ : 0;
      return { from: e.from, to: e.to, label: e.label, back: back.has(i),
        points: edgePoints(a, b, laneX) };
    }).filter(Boolean);
    // Back-edge labels sit right of their lane: leave room for the longest (~7px a character).
    const labelRoom = Math.max(0, ...edgeOut.filter((e) => e.back).map((e) => e.label.length * 7 + 8));
    return {
      width: innerWidth + 2 * MARGIN + 48 + 12 * lane + labelRoom,
      height: MARGIN * 2 + rows.length * NODE_H + Math.max(0, rows.length - 1) * LAYER_GAP,
      nodes: nodes,
      edges: edgeOut,
    };
  }

  /** Cubic Bézier control points [start, c1, c2, end]; laneX > 0 routes a back edge. */
  function edgePoints(a, b, laneX) {
    if (a === b) { // self loop on the right side
      const x = a.x + a.w, y = a.y + a.h / 2;
      return [[x, y - 8], [x + 34, y - 22], [x + 34, y + 22], [x, y + 8]];
    }
    if (laneX) {
      return [[a.x + a.w, a.y + a.h / 2], [laneX, a.y + a.h / 2], [laneX, b.y + b.h / 2], [b.x + b.w, b.y + b.h / 2]];
    }
    const start = [a.cx, a.y + a.h], end = [b.cx, b.y];
    const midY = (start[1] + end[1]) / 2;
    return [start, [start[0], midY], [end[0], midY], end];
  }

  /** The node status an event implies, as [node_id, status], or null when it implies none. */
  function nodeStatusFromEvent(ev) {
    const node = ev.node_id;
    if (!node) return null;
    switch (ev.event) {
      case "stage_started":
      case "stage_attempt_started":
      case "stage_retrying":
      case "interview_completed":
        return [node, "running"];
      case "interview_started":
        return [node, "waiting"];
      case "stage_completed":
        return [node, nodeStatusOfOutcome(ev.status)];
      case "cancellation_exit":
        return [node, "canceled"];
      default:
        return null;
    }
  }

  /** The run state an event implies (live.json vocabulary), or null. */
  function runStateFromEvent(ev) {
    if (ev.event === "pipeline_started") return "running";
    if (ev.event === "pipeline_completed") return ev.status || "success";
    if (ev.event === "pipeline_failed") return ev.status === "canceled" ? "canceled" : "fail";
    return null;
  }

  /** One human line per event: the fields beyond the envelope, as key=value. */
  function describeEvent(ev) {
    const parts = [];
    Object.keys(ev).forEach((key) => {
      if (ENVELOPE_KEYS.has(key)) return;
      const value = ev[key];
      if (value === null || value === undefined || value === "") return;
      const shown = typeof value === "object" ? JSON.stringify(value)
        : typeof value === "number" && !Number.isInteger(value) ? String(Number(value.toFixed(3)))
          : String(value);
      parts.push(key + "=" + shown);
    });
    return parts.join(" ");
  }

  window.attractorViewer = {
    EVENT_NAMES: EVENT_NAMES, tokenizeDot: tokenizeDot, parseDot: parseDot,
    layoutGraph: layoutGraph, nodeStatusFromEvent: nodeStatusFromEvent,
    runStateFromEvent: runStateFromEvent, describeEvent: describeEvent,
  };
})();

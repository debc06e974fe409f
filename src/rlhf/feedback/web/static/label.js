// Labeling page: click / keyboard / drag-and-drop ranking with ties, thumbs mode, flagging.
// State is a list of tiers (arrays of completion ids, best first); the page re-renders from it.
(() => {
  "use strict";
  const $ = (sel, root = document) => root.querySelector(sel);
  const $$ = (sel, root = document) => [...root.querySelectorAll(sel)];

  const instructions = $("#instructions-dialog");
  const flagDialog = $("#flag-dialog");
  $("#open-instructions")?.addEventListener("click", () => instructions.showModal());
  $$("[data-close]").forEach((b) => b.addEventListener("click", () => b.closest("dialog").close()));
  const dataEl = $("#task-data");
  if (!dataEl) {
    document.addEventListener("keydown", (e) => {
      if ((e.key === "i" || e.key === "?") && !document.querySelector("dialog[open]")) instructions.showModal();
    });
    return;
  }

  const task = JSON.parse(dataEl.textContent);
  const rankMode = task.mode === "rank";
  const started = performance.now();
  const cards = $$(".completion");
  const ids = cards.map((c) => Number(c.dataset.id));
  const card = new Map(cards.map((c) => [Number(c.dataset.id), c]));
  const label = (id) => card.get(id).dataset.label;
  const ordinal = (n) => n + (["th", "st", "nd", "rd"][(n % 100 > 10 && n % 100 < 14) ? 0 : n % 10] || "th");

  let tiers = [];              // rank mode: [[id], [id, id], ...]
  let votes = new Map();       // thumbs mode: id -> 1 | -1
  let focus = 0;               // thumbs mode: selected card index
  let tieNext = false;         // "=" pressed: the next number key ties
  let busy = false;
  const history = [];

  const snapshot = () => {
    history.push(JSON.stringify({ tiers, votes: [...votes] }));
    $("#status").classList.remove("error");
  };
  const ranked = (id) => tiers.some((t) => t.includes(id));
  const complete = () => (rankMode ? ids.every(ranked) : ids.every((id) => votes.has(id)));

  function setStatus(text, kind = "") {
    const el = $("#status");
    el.textContent = text;
    el.className = "status " + kind;
  }

  function detach(id) {
    tiers.forEach((t) => { const i = t.indexOf(id); if (i >= 0) t.splice(i, 1); });
  }

  // Click / key: give `id` the next rank (or tie it with the last one); again on a ranked one unranks it.
  function rankNext(id, tie) {
    snapshot();
    if (ranked(id) && !tie) {
      detach(id);
    } else {
      detach(id);
      tiers = tiers.filter((t) => t.length);
      if (tie && tiers.length) tiers[tiers.length - 1].push(id);
      else tiers.push([id]);
    }
    tiers = tiers.filter((t) => t.length);
    render();
  }

  // Drag and drop: join `target` tier, or open a new tier before `target` (null = at the end).
  function place(id, target, asNewTier) {
    snapshot();
    detach(id);
    if (!asNewTier) target.push(id);
    else tiers.splice(target ? tiers.indexOf(target) : tiers.length, 0, [id]);
    tiers = tiers.filter((t) => t.length);
    render();
  }

  function unrank(id) { snapshot(); detach(id); tiers = tiers.filter((t) => t.length); render(); }

  function vote(id, v) {
    snapshot();
    votes.set(id, v);
    const next = ids.findIndex((x) => !votes.has(x));
    if (next >= 0) focus = next;
    render();
  }

  function chip(id) {
    const el = document.createElement("span");
    el.className = "rank-chip";
    el.draggable = true;
    el.dataset.id = id;
    el.textContent = label(id);
    el.title = `Response ${label(id)} (drag to move, click to unrank)`;
    el.addEventListener("click", () => unrank(id));
    return el;
  }

  function gap(before) {
    const li = document.createElement("li");
    li.className = "gap";
    li.dataset.before = before;
    li.setAttribute("aria-hidden", "true");
    return li;
  }

  function renderRanking() {
    const list = $("#tiers");
    list.replaceChildren();
    tiers.forEach((t, i) => {
      list.append(gap(i));
      const li = document.createElement("li");
      li.className = "tier" + (t.length > 1 ? " tie" : "");
      li.dataset.tier = i;
      const rank = document.createElement("span");
      rank.className = "tier-rank";
      rank.textContent = ordinal(i + 1) + (t.length > 1 ? " · tie" : "");
      const chips = document.createElement("span");
      chips.className = "tier-chips";
      t.forEach((id) => chips.append(chip(id)));
      li.append(rank, chips);
      list.append(li);
    });
    const end = gap("end");
    end.textContent = tiers.length ? "Drop here for a new lower rank" : "Drop or click responses to rank them";
    end.classList.add("end");
    list.append(end);
    const rest = ids.filter((id) => !ranked(id));
    const un = $("#unranked");
    un.replaceChildren();
    if (rest.length) {
      const head = document.createElement("span");
      head.className = "small muted";
      head.textContent = "Not ranked yet: ";
      un.append(head, ...rest.map(chip));
    }
    cards.forEach((c) => {
      const id = Number(c.dataset.id);
      const i = tiers.findIndex((t) => t.includes(id));
      c.classList.toggle("ranked", i >= 0);
      c.classList.toggle("tied", i >= 0 && tiers[i].length > 1);
      $(".rank-badge", c).textContent = i >= 0 ? ordinal(i + 1) + (tiers[i].length > 1 ? " (tie)" : "") : "";
    });
  }

  function renderVotes() {
    const list = $("#votes");
    list.replaceChildren();
    cards.forEach((c, i) => {
      const id = Number(c.dataset.id);
      const v = votes.get(id);
      c.classList.toggle("focused", i === focus);
      c.classList.toggle("up", v === 1);
      c.classList.toggle("down", v === -1);
      const li = document.createElement("li");
      li.textContent = `Response ${label(id)}: ${v === 1 ? "▲ good" : v === -1 ? "▼ bad" : "—"}`;
      list.append(li);
    });
  }

  function render() {
    rankMode ? renderRanking() : renderVotes();
    $("#submit").disabled = !complete() || busy;
    $("#undo").disabled = !history.length;
    if (tieNext) setStatus("Tie: the next number key joins the last rank.");
    else if (!busy && !$("#status").classList.contains("error")) {
      const left = rankMode ? ids.filter((id) => !ranked(id)).length : ids.filter((id) => !votes.has(id)).length;
      setStatus(left ? `${left} response${left > 1 ? "s" : ""} left to ${rankMode ? "rank" : "rate"}.` : "Ready: press Enter to submit.");
    }
  }

  async function submit(body) {
    if (busy) return;
    busy = true;
    $("#submit").disabled = true;
    setStatus("Saving…");
    body.seconds = Math.round((performance.now() - started) / 100) / 10;
    try {
      const res = await fetch(task.submitUrl, {
        method: "POST", credentials: "same-origin",
        headers: { "Content-Type": "application/json", Accept: "application/json" },
        body: JSON.stringify(body),
      });
      if (res.status === 401) { window.location.href = "/login"; return; }
      if (res.ok) {
        setStatus("Saved. Loading the next item…", "ok");
        document.body.classList.add("saved");
        window.location.replace(window.location.pathname);
        return;
      }
      let msg = res.statusText;
      try { msg = (await res.json()).detail || msg; } catch (_) { /* not JSON */ }
      setStatus(`Not saved: ${msg}`, "error");
    } catch (err) {
      setStatus("Network error: nothing was lost, try again.", "error");
    }
    busy = false;
    render();
  }

  function submitJudgement() {
    if (!complete() || busy) return;
    if (rankMode) submit({ ranking: tiers.map((t) => (t.length === 1 ? t[0] : [...t])) });
    else submit({ thumbs: Object.fromEntries([...votes].map(([id, v]) => [id, v > 0 ? "up" : "down"])) });
  }

  function undo() {
    const s = history.pop();
    if (!s) return;
    const o = JSON.parse(s);
    tiers = o.tiers;
    votes = new Map(o.votes);
    render();
  }

  // ---- mouse
  cards.forEach((c, i) => {
    const id = Number(c.dataset.id);
    if (rankMode) {
      c.addEventListener("click", (e) => {
        if (window.getSelection().toString()) return;  // selecting text, not ranking
        rankNext(id, e.shiftKey);
      });
      c.addEventListener("keydown", (e) => { if (e.key === " ") { e.preventDefault(); rankNext(id, e.shiftKey); } });
    } else {
      c.addEventListener("click", () => { focus = i; render(); });
      $$(".thumb", c).forEach((b) => b.addEventListener("click", (e) => {
        e.stopPropagation();
        focus = i;
        vote(id, Number(b.dataset.vote));
      }));
    }
  });
  $("#submit").addEventListener("click", submitJudgement);
  $("#undo").addEventListener("click", undo);
  $("#clear").addEventListener("click", () => { snapshot(); tiers = []; votes = new Map(); render(); });

  // ---- drag and drop (rank mode)
  if (rankMode) {
    let dragged = null;
    document.addEventListener("dragstart", (e) => {
      const el = e.target.closest?.("[data-id]");
      if (!el) return;
      dragged = Number(el.dataset.id);
      e.dataTransfer.setData("text/plain", String(dragged));
      e.dataTransfer.effectAllowed = "move";
      document.body.classList.add("dragging");
    });
    document.addEventListener("dragend", () => {
      dragged = null;
      document.body.classList.remove("dragging");
      $$(".over").forEach((x) => x.classList.remove("over"));
    });
    const zone = (e) => e.target.closest?.(".tier, .gap, #unranked, #completions");
    document.addEventListener("dragover", (e) => {
      const z = zone(e);
      if (dragged === null || !z) return;
      e.preventDefault();
      $$(".over").forEach((x) => x !== z && x.classList.remove("over"));
      z.classList.add("over");
    });
    document.addEventListener("drop", (e) => {
      const z = zone(e);
      if (dragged === null || !z) return;
      e.preventDefault();
      if (z.classList.contains("tier")) place(dragged, tiers[Number(z.dataset.tier)], false);
      else if (z.classList.contains("gap")) place(dragged, z.dataset.before === "end" ? null : tiers[Number(z.dataset.before)], true);
      else unrank(dragged);
    });
  }

  // ---- flagging
  $("#open-flag").addEventListener("click", () => { flagDialog.showModal(); $("#flag-reason").focus(); });
  $$("#flag-reasons .chip").forEach((b) => b.addEventListener("click", () => { $("#flag-reason").value = b.textContent; }));
  $("#flag-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const reason = $("#flag-reason").value.trim();
    if (!reason) { $("#flag-reason").focus(); return; }
    flagDialog.close();
    submit({ flag_reason: reason });
  });

  // ---- keyboard
  document.addEventListener("keydown", (e) => {
    if (document.querySelector("dialog[open]") || e.target.matches?.("input, textarea") || e.ctrlKey || e.metaKey || e.altKey) return;
    const digit = /^(Digit|Numpad)([1-9])$/.exec(e.code);
    if (digit) {
      const i = Number(digit[2]) - 1;
      if (i >= cards.length) return;
      e.preventDefault();
      if (rankMode) { rankNext(ids[i], e.shiftKey || tieNext); tieNext = false; render(); }
      else { focus = i; render(); cards[i].scrollIntoView({ block: "nearest" }); }
      return;
    }
    const key = e.key.toLowerCase();
    if (key === "enter") { e.preventDefault(); submitJudgement(); }
    else if (key === "backspace" || key === "z") { e.preventDefault(); undo(); }
    else if (key === "=" && rankMode) { tieNext = !tieNext; render(); }
    else if (key === "i" || key === "?") instructions.showModal();
    else if (key === "f") { e.preventDefault(); flagDialog.showModal(); $("#flag-reason").focus(); }
    else if (!rankMode && (key === "u" || key === "arrowup" || key === "+")) { e.preventDefault(); vote(ids[focus], 1); }
    else if (!rankMode && (key === "d" || key === "arrowdown" || key === "-")) { e.preventDefault(); vote(ids[focus], -1); }
  });

  if (task.firstItem && !sessionStorage.getItem(`seen-instructions-${task.mode}-${location.pathname}`)) {
    sessionStorage.setItem(`seen-instructions-${task.mode}-${location.pathname}`, "1");
    instructions.showModal();
  }
  render();
})();

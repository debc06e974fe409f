// Chat page: conversations, A/B replies with a choice, thumbs for single replies. Talks to /api/chat.
(() => {
  "use strict";
  const $ = (sel, root = document) => root.querySelector(sel);
  const boot = JSON.parse($("#chat-data").textContent);
  const POLICY = { user: "your own adapter", shared: "the shared policy", base: "the base model" };
  let current = null;   // conversation id
  let busy = false;

  function setStatus(text, kind = "") { const el = $("#status"); el.textContent = text; el.className = "status " + kind; }
  function setPolicy(policy, version) {
    $("#policy").textContent = "answered by " + POLICY[policy] + (version ? ` v${version}` : "");
  }

  async function api(method, url, body) {
    const res = await fetch(url, {
      method, credentials: "same-origin",
      headers: { "Content-Type": "application/json", Accept: "application/json" },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    if (res.status === 401) { window.location.href = "/login"; throw new Error("signed out"); }
    let data = null;
    try { data = await res.json(); } catch (_) { /* empty */ }
    if (!res.ok) throw new Error((data && data.detail) || res.statusText);
    return data;
  }

  function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined) e.textContent = text;
    return e;
  }

  function renderTurn(t) {
    const box = el("div", "turn");
    box.dataset.turn = t.id;
    box.append(el("div", "bubble", t.message));
    const replies = el("div", "replies");
    const cards = t.candidates.map((c) => {
      const card = el("article", "candidate");
      card.dataset.label = c.label;
      if (t.candidates.length > 1) card.append(el("div", "letter", "Reply " + c.label));
      card.append(el("div", "text", c.text));
      replies.append(card);
      return card;
    });
    box.append(replies);
    const choices = el("div", "choices");
    const buttons = t.candidates.length > 1
      ? [["choice", "A", "A is better"], ["choice", "tie", "Tie"], ["choice", "B", "B is better"]]
      : [["thumbs", "up", "▲ Good"], ["thumbs", "down", "▼ Bad"]];
    for (const [kind, value, text] of buttons) {
      const b = el("button", "btn small", text);
      b.type = "button";
      b.dataset[kind] = value;
      b.addEventListener("click", () => choose(t, kind, value, box));
      choices.append(b);
    }
    box.append(choices);
    box.append(el("div", "turn-meta", "answered by " + POLICY[t.policy] + (t.adapter_version ? ` v${t.adapter_version}` : "")));
    if (t.feedback) showChoice(box, t.feedback, cards);
    return box;
  }

  function showChoice(box, fb, cards = [...box.querySelectorAll(".candidate")]) {
    box.querySelectorAll(".choices .btn").forEach((b) => {
      const on = (fb.choice && b.dataset.choice === fb.choice) || (fb.thumbs && b.dataset.thumbs === fb.thumbs);
      b.classList.toggle("selected", on);
      b.disabled = true;
    });
    cards.forEach((c) => {
      if (fb.choice && fb.choice !== "tie") {
        c.classList.toggle("chosen", c.dataset.label === fb.choice);
        c.classList.toggle("rejected", c.dataset.label !== fb.choice);
      }
      if (fb.thumbs) c.classList.add(fb.thumbs);
    });
  }

  async function choose(t, kind, value, box) {
    setStatus("Saving your choice…");
    try {
      const out = await api("POST", `/api/chat/turns/${t.id}/feedback`, { [kind]: value });
      showChoice(box, out.feedback);
      setStatus("Saved: thank you.", "ok");
    } catch (err) {
      setStatus("Not saved: " + err.message, "error");
    }
  }

  function renderList(convs) {
    const ul = $("#conversations");
    ul.replaceChildren();
    for (const c of convs) {
      const li = el("li");
      const b = el("button", c.id === current ? "current" : "", c.title || `Conversation ${c.id}`);
      b.type = "button";
      b.addEventListener("click", () => open(c.id));
      li.append(b);
      ul.append(li);
    }
  }

  async function refreshList() { renderList(await api("GET", "/api/chat/conversations")); }

  async function open(id) {
    const conv = await api("GET", `/api/chat/conversations/${id}`);
    current = conv.id;
    $("#chat-title").textContent = conv.title || `Conversation ${conv.id}`;
    $("#turns").replaceChildren(...conv.turn_list.map(renderTurn));
    await refreshList();
  }

  function newChat() {
    current = null;
    $("#chat-title").textContent = "New chat";
    $("#turns").replaceChildren();
    renderList(boot.conversations);
    $("#message").focus();
  }

  async function send() {
    const message = $("#message").value.trim();
    if (!message || busy) return;
    busy = true;
    $("#send").disabled = true;
    const pending = el("div", "turn");
    pending.append(el("div", "bubble", message), el("p", "thinking", "Thinking…"));
    $("#turns").append(pending);
    setStatus("");
    const requestId = (crypto.randomUUID ? crypto.randomUUID() : String(Date.now()) + Math.random()).slice(0, 64);
    try {
      if (current === null) {
        const conv = await api("POST", "/api/chat/conversations", { title: message.slice(0, 80) });
        current = conv.id;
        $("#chat-title").textContent = conv.title;
      }
      const body = { message, compare: $("#compare").checked, request_id: requestId };
      let turn;
      for (let attempt = 0; ; attempt++) {   // a busy server (503) or a lost response: retry, same request id
        try { turn = await api("POST", `/api/chat/conversations/${current}/turns`, body); break; }
        catch (err) { if (attempt >= 2) throw err; setStatus("Busy, retrying…"); await new Promise((r) => setTimeout(r, 2000)); }
      }
      pending.replaceWith(renderTurn(turn));
      setPolicy(turn.policy, turn.adapter_version);
      $("#message").value = "";
      boot.conversations = await api("GET", "/api/chat/conversations");
      renderList(boot.conversations);
    } catch (err) {
      pending.remove();
      setStatus("Not sent: " + err.message, "error");
    }
    busy = false;
    $("#send").disabled = false;
  }

  $("#composer").addEventListener("submit", (e) => { e.preventDefault(); send(); });
  $("#message").addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey) { e.preventDefault(); send(); }
  });
  $("#new-chat").addEventListener("click", newChat);
  setPolicy(boot.policy, boot.adapterVersion);
  renderList(boot.conversations);
  $("#message").focus();
})();

// The page for examples/rooms.lua: joins ws://HOST/room/NAME?nick=NICK and speaks its JSON
// ({type, from, text}). rooms.html?room=NAME&nick=NICK fills in the form.
"use strict";

(function () {
  const $ = (id) => document.getElementById(id);
  const joinForm = $("join-form");
  const chat = $("chat");
  const sendForm = $("send-form");
  const list = $("messages");
  const membersEl = $("members");
  const input = $("input");
  const sendButton = $("send");
  const status = $("status");
  let sock = null;
  let me = null;
  let members = [];

  const params = new URLSearchParams(location.search);
  if (params.get("room")) $("room").value = params.get("room");
  if (params.get("nick")) $("nick").value = params.get("nick");

  function renderMembers() {
    membersEl.replaceChildren();
    for (const nick of members) {
      const li = document.createElement("li");
      li.textContent = nick;
      if (nick === me) li.dataset.self = "";
      membersEl.appendChild(li);
    }
  }

  function onServerMessage(data) {
    let msg;
    try {
      msg = JSON.parse(data);
    } catch (e) {
      appendMessage(list, "system", "(not JSON) " + data);
      return;
    }
    switch (msg.type) {
      case "members":
        me = msg.you;
        members = Array.isArray(msg.members) ? msg.members.slice() : [];
        $("room-title").textContent = "#" + msg.room + " as " + me;
        appendMessage(list, "system", msg.text);
        break;
      case "join":
        if (!members.includes(msg.from)) members.push(msg.from);
        members.sort();
        appendMessage(list, "system", msg.text);
        break;
      case "leave":
        members = members.filter((n) => n !== msg.from);
        appendMessage(list, "system", msg.text);
        break;
      case "message":
        appendMessage(list, "peer", msg.text, msg.from);
        break;
      default:
        appendMessage(list, "system", msg.text || data);
    }
    renderMembers();
  }

  joinForm.addEventListener("submit", (ev) => {
    ev.preventDefault();
    const room = $("room").value.trim();
    const nick = $("nick").value.trim();
    if (!joinForm.reportValidity() || !room || !nick) return;
    joinForm.hidden = true;
    chat.hidden = false;
    sendForm.hidden = false;
    list.replaceChildren();
    members = [];
    me = null;
    renderMembers();
    const url = wsUrl("/room/" + encodeURIComponent(room) + "?nick=" + encodeURIComponent(nick));
    sock = new ReconnectingSocket(url, {
      status(state, text) {
        setStatus(status, state, text);
        sendButton.disabled = state !== "open";
      },
      close() {
        if (me) appendMessage(list, "system", "connection lost");
      },
      message: onServerMessage,
    });
    input.focus();
  });

  sendForm.addEventListener("submit", (ev) => {
    ev.preventDefault();
    const text = input.value;
    if (text.trim() === "" || !me) return;
    if (!sock.send(JSON.stringify({ type: "message", text }))) return;
    appendMessage(list, "own", text, me);
    input.value = "";
    input.focus();
  });

  $("leave").addEventListener("click", () => {
    if (sock) sock.stop();
    sock = null;
    me = null;
    $("room-title").textContent = "";
    chat.hidden = true;
    sendForm.hidden = true;
    joinForm.hidden = false;
  });
})();

// The page for examples/rooms.lua: joins ws://HOST/room/NAME?nick=NICK and speaks its JSON
// ({type, from, text}). rooms.html?room=NAME&nick=NICK fills in the form. The room name and the
// nickname are checked here with the script's own rules before joining, so a mistake is explained
// at once; should the server still refuse (close code 4404 for the room, 4400 for the nickname),
// the page goes back to the form with the server's reason and does not retry.
// cluster-chat.lua follows "members" with the room's last messages ("history": true) at every
// join, so also after a reconnect: that history then replaces the messages shown so far, which it
// holds (the system notices stay, as the record of what happened).
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
  // The "members" notice of the current connection, and whether its history has arrived.
  let welcome = null;
  let historyShown = false;

  const roomInput = $("room");
  const nickInput = $("nick");
  const joinError = $("join-error");

  // examples/rooms.lua's rules (keep them in step with it): a room name is 1-64 of A-Z a-z 0-9
  // _ . -; a nickname (trimmed) is at most MAX_NICK characters (code points, as Lua's utf8.len
  // counts them) and has no control character. "" when the value is fine.
  const MAX_NICK = 24;
  function roomProblem(room) {
    return /^[A-Za-z0-9_.-]{1,64}$/.test(room)
      ? ""
      : "A room name is 1 to 64 letters, digits, _ . or - (no spaces).";
  }
  function nickProblem(nick) {
    const chars = [...nick].length;
    if (chars > MAX_NICK)
      return `A nickname has at most ${MAX_NICK} characters; this one has ${chars}.`;
    if (/[\u0000-\u001f\u007f]/.test(nick)) return "A nickname cannot hold control characters.";
    return "";
  }

  function showJoinError(text) {
    joinError.textContent = text;
    joinError.hidden = !text;
  }

  // Marks the fields the browser's way (setCustomValidity) and says in the form what is wrong
  // with the first bad one; returns false when there is one.
  function checkFields() {
    roomInput.setCustomValidity(roomProblem(roomInput.value.trim()));
    nickInput.setCustomValidity(nickProblem(nickInput.value.trim()));
    const bad = [roomInput, nickInput].find((el) => !el.validity.valid);
    showJoinError(bad ? bad.validationMessage : "");
    return !bad;
  }

  for (const el of [roomInput, nickInput]) el.addEventListener("input", checkFields);

  const params = new URLSearchParams(location.search);
  if (params.get("room")) roomInput.value = params.get("room");
  if (params.get("nick")) nickInput.value = params.get("nick");

  function renderMembers() {
    membersEl.replaceChildren();
    for (const nick of members) {
      const li = document.createElement("li");
      li.textContent = nick;
      if (nick === me) li.dataset.self = "";
      membersEl.appendChild(li);
    }
  }

  // The messages (not the notices) of earlier connections: the history that follows `until`
  // shows them again.
  function dropMessagesBefore(until) {
    for (const li of [...list.children]) {
      if (li === until) break;
      if (li.dataset.kind !== "system") li.remove();
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
        welcome = appendMessage(list, "system", msg.text);
        historyShown = false;
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
        if (msg.history && !historyShown) {
          historyShown = true;
          dropMessagesBefore(welcome);
        }
        appendMessage(list, "peer", msg.text, msg.from);
        break;
      default:
        appendMessage(list, "system", msg.text || data);
    }
    renderMembers();
  }

  function showJoinForm() {
    me = null;
    $("room-title").textContent = "";
    chat.hidden = true;
    sendForm.hidden = true;
    joinForm.hidden = false;
  }

  joinForm.addEventListener("submit", (ev) => {
    ev.preventDefault();
    const room = roomInput.value.trim();
    const nick = nickInput.value.trim();
    if (!checkFields()) {
      joinForm.reportValidity();
      return;
    }
    joinForm.hidden = true;
    chat.hidden = false;
    sendForm.hidden = false;
    list.replaceChildren();
    welcome = null;
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
      // Final: the same request would be refused again. Back to the form, the field at fault
      // marked, the server's own words shown.
      refused(code, reason) {
        sock = null;
        showJoinForm();
        const field = code === 4404 ? roomInput : code === 4400 ? nickInput : null;
        const why = reason || "close code " + code;
        showJoinError("The server refused to join: " + why + ". Change it and join again.");
        if (field) {
          field.setCustomValidity(why); // until the field is edited (checkFields)
          field.focus();
        }
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
    showJoinForm();
  });
})();

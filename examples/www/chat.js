// The page at / : every message typed here goes to everyone else on the server (lua/chat.lua).
// The server never sends a message back to its sender, so our own lines are shown locally.
"use strict";

(function () {
  const list = document.getElementById("messages");
  const form = document.getElementById("send-form");
  const input = document.getElementById("input");
  const button = document.getElementById("send");
  const status = document.getElementById("status");
  let everOpen = false;

  const sock = new ReconnectingSocket(wsUrl("/"), {
    status(state, text) {
      setStatus(status, state, text);
      button.disabled = state !== "open";
    },
    open() {
      appendMessage(list, "system", everOpen ? "reconnected" : "connected to " + sock.url);
      everOpen = true;
    },
    close() {
      if (everOpen) appendMessage(list, "system", "connection lost");
    },
    message(data) {
      if (typeof data === "string") appendMessage(list, "peer", data);
      else appendMessage(list, "system", "(binary message, " + data.byteLength + " bytes)");
    },
  });

  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    const text = input.value;
    if (text.trim() === "") return;
    // While disconnected the text stays in the input, to be sent once we are back.
    if (!sock.send(text)) return;
    appendMessage(list, "own", text);
    input.value = "";
    input.focus();
  });
})();

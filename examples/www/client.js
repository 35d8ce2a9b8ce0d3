// Shared by the example pages: a WebSocket that reconnects with exponential back-off, and a
// message list that only ever inserts received text as text (textContent, never innerHTML).
"use strict";

// ws:// or wss:// to the host that served the page; opened as a file, the default address.
function wsUrl(path) {
  if (!location.host) return "ws://127.0.0.1:8080" + path;
  return (location.protocol === "https:" ? "wss://" : "ws://") + location.host + path;
}

// Calls handlers.open(), handlers.message(data), handlers.close(event), handlers.refused(code,
// reason) and handlers.status(state, text); state is "connecting", "open", "closed" or "refused".
// After a close it retries after 0.5 s, 1 s, 2 s, ... up to 15 s, and starts again from 0.5 s once
// a connection opens and ends otherwise than with 1013 ("try again later": the server took it but
// cannot serve it yet, e.g. cluster-chat.lua while Redis is down, so that counts as a failed
// attempt); the status says how many attempts in a row failed. A close code
// from 4000 to 4999 is the application saying no (say, a nickname it does not accept): asking again
// would get the same answer, so there is no retry, the state is "refused" and the text the
// server's reason. (A browser cannot read the HTTP status of a refused upgrade: that looks like any
// failure to connect, 1006, and is retried.)
class ReconnectingSocket {
  constructor(url, handlers) {
    this.url = url;
    this.h = handlers;
    this.delay = 500;
    this.failures = 0; // attempts in a row that never opened
    this.timer = null;
    this.stopped = false;
    this.ws = null;
    this.connect();
  }

  connect() {
    this.timer = null;
    this.h.status("connecting", "connecting…");
    const ws = new WebSocket(this.url);
    ws.binaryType = "arraybuffer";
    this.ws = ws;
    let opened = false;
    ws.onopen = () => {
      opened = true;
      this.h.status("open", "connected");
      if (this.h.open) this.h.open();
    };
    ws.onmessage = (ev) => this.h.message(ev.data);
    ws.onclose = (ev) => {
      if (this.ws !== ws) return;
      this.ws = null;
      if (this.h.close) this.h.close(ev);
      if (this.stopped) {
        this.h.status("closed", "disconnected");
        return;
      }
      if (ev.code >= 4000 && ev.code <= 4999) {
        this.stopped = true;
        this.h.status("refused", ev.reason || "refused by the server (close code " + ev.code + ")");
        if (this.h.refused) this.h.refused(ev.code, ev.reason);
        return;
      }
      const later = ev.code === 1013;
      if (opened && !later) {
        this.delay = 500;
        this.failures = 0;
      } else {
        this.failures++;
      }
      // A little jitter so a room full of tabs does not reconnect in lockstep.
      const wait = Math.round(this.delay * (0.8 + Math.random() * 0.4));
      this.delay = Math.min(this.delay * 2, 15000);
      const retry = "retrying in " + (wait / 1000).toFixed(1) + " s";
      const n = this.failures;
      this.h.status(
        "closed",
        n === 0
          ? "disconnected, " + retry
          : (later ? ev.reason || "try again later" : "could not connect") +
              " (" + n + (n === 1 ? " attempt" : " attempts") + "), " + retry,
      );
      this.timer = setTimeout(() => this.connect(), wait);
    };
  }

  isOpen() {
    return this.ws !== null && this.ws.readyState === WebSocket.OPEN;
  }

  send(data) {
    if (!this.isOpen()) return false;
    this.ws.send(data);
    return true;
  }

  stop() {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    if (this.ws) this.ws.close(1000);
    else this.h.status("closed", "disconnected");
  }
}

// Appends one message; kind is "own", "peer" or "system". Keeps the view at the bottom when the
// reader was already there.
function appendMessage(list, kind, text, from) {
  const atBottom = list.scrollHeight - list.scrollTop - list.clientHeight < 40;
  const li = document.createElement("li");
  li.className = "msg";
  li.dataset.kind = kind;
  if (from) {
    const who = document.createElement("span");
    who.className = "from";
    who.textContent = from;
    li.appendChild(who);
  }
  const body = document.createElement("span");
  body.className = "text";
  body.textContent = text;
  li.appendChild(body);
  if (kind !== "system") {
    const t = document.createElement("time");
    const now = new Date();
    t.dateTime = now.toISOString();
    t.textContent = now.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
    li.appendChild(t);
  }
  list.appendChild(li);
  if (atBottom || kind === "own") list.scrollTop = list.scrollHeight;
  return li;
}

function setStatus(el, state, text) {
  el.dataset.state = state;
  el.textContent = text;
}

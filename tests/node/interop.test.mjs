// Interoperability: Node's `ws` package, a client nobody here wrote, against the real server
// running examples/echo.lua and lua/chat.lua, over ws:// and over wss:// (a certificate made
// by openssl, verified by the client against its root).
import { test, describe, before, after } from "node:test";
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { rmSync } from "node:fs";
import https from "node:https";
import { startServer, Client, src, event, makePki, withTimeout } from "./server.mjs";

describe("ws client against examples/echo.lua", () => {
  let server;
  before(async () => {
    server = await startServer(src("examples/echo.lua"));
  });
  after(async () => {
    const { code } = await server.stop();
    assert.equal(code, 0, "wsluad exits 0 on SIGTERM");
  });

  for (const size of [0, 125, 126, 65535, 65536, 1 << 20]) {
    test(`text echo of ${size} bytes`, async () => {
      const c = await Client.open(server.ws + "/");
      // Multi-byte characters included: "ab€ü" is 7 bytes; ASCII pads to exactly `size`.
      const padded = "ab€ü".repeat(Math.floor(size / 7)) + "x".repeat(size % 7);
      assert.equal(Buffer.byteLength(padded), size);
      await c.send(padded);
      const m = await c.next();
      assert.equal(m.binary, false);
      assert.equal(m.data, padded);
      await c.close();
    });

    test(`binary echo of ${size} bytes`, async () => {
      const c = await Client.open(server.ws + "/");
      const payload = randomBytes(size);
      await c.send(payload, { binary: true });
      const m = await c.next();
      assert.equal(m.binary, true);
      assert.ok(Buffer.compare(m.data, payload) === 0, "same bytes back");
      await c.close();
    });
  }

  test("a fragmented message, with a ping between its fragments, comes back whole", async () => {
    const c = await Client.open(server.ws + "/");
    const pong = event(c.ws, "pong", "the pong");
    await c.send("frag-one ", { fin: false });
    c.ws.ping(Buffer.from("between"));
    await c.send("frag-two ", { fin: false });
    await c.send("frag-three", { fin: true });
    const [payload] = await pong;
    assert.equal(payload.toString(), "between");
    const m = await c.next();
    assert.equal(m.data, "frag-one frag-two frag-three");
    // A fragmented binary message too.
    await c.send(Buffer.from([1, 2, 3]), { binary: true, fin: false });
    await c.send(Buffer.from([4, 5]), { binary: true, fin: true });
    const b = await c.next();
    assert.equal(b.binary, true);
    assert.deepEqual([...b.data], [1, 2, 3, 4, 5]);
    await c.close();
  });

  test("ping is answered by a pong with the same payload", async () => {
    const c = await Client.open(server.ws + "/");
    for (const payload of [Buffer.alloc(0), Buffer.from("hello"), randomBytes(125)]) {
      const pong = event(c.ws, "pong");
      c.ws.ping(payload);
      const [got] = await pong;
      assert.ok(Buffer.compare(got, payload) === 0);
    }
    await c.close();
  });

  test("the server echoes the client's close code", async () => {
    for (const [code, reason] of [
      [1000, ""],
      [1001, "going away"],
      [4000, "custom"],
      [3999, "é"],
    ]) {
      const c = await Client.open(server.ws + "/");
      // The reason is the client's to give; the server's answer carries the code.
      const closed = await c.close(code, reason);
      assert.equal(closed.code, code);
    }
    // No code at all: the echo is an empty close, which the client reports as 1005.
    const c = await Client.open(server.ws + "/");
    c.ws.close();
    assert.equal((await c.closed).code, 1005);
  });

  test("text that is not UTF-8 is closed with 1007", async () => {
    const c = await Client.open(server.ws + "/");
    await c.send(Buffer.from([0x68, 0x69, 0xff, 0xfe]), { binary: false });
    assert.equal((await c.closed).code, 1007);
  });

  test("a message over --max-message (1 MiB) is closed with 1009", async () => {
    const c = await Client.open(server.ws + "/");
    c.send(Buffer.alloc((1 << 20) + 1, 0x61), { binary: true }).catch(() => {});
    assert.equal((await c.closed).code, 1009);
  });

  test("the server keeps serving after all that", async () => {
    const c = await Client.open(server.ws + "/");
    await c.send("still here");
    assert.equal(await c.nextText(), "still here");
    await c.close();
  });
});

describe("ws clients chatting through lua/chat.lua", () => {
  let server;
  before(async () => {
    server = await startServer(src("lua/chat.lua"));
  });
  after(async () => {
    const { code } = await server.stop();
    assert.equal(code, 0, "wsluad exits 0 on SIGTERM");
  });

  test("three clients: the others get each message, the sender gets nothing back", async () => {
    const [a, b, c] = await Promise.all([1, 2, 3].map(() => Client.open(server.ws + "/")));

    await a.send("hello from a");
    assert.equal(await b.nextText(), "hello from a");
    assert.equal(await c.nextText(), "hello from a");

    // b answers only after it has a's message. Had a's message come back to a, it would have
    // been queued for a before b's answer, so a's first message proves it got nothing back.
    await b.send("hello from b");
    assert.equal(await a.nextText(), "hello from b");
    assert.equal(await c.nextText(), "hello from b");

    await c.send("and c ☃");
    assert.equal(await a.nextText(), "and c ☃");
    assert.equal(await b.nextText(), "and c ☃");

    // Each proves in turn that b and c were not sent their own lines either.
    await a.send("last");
    assert.equal(await b.nextText(), "last");
    assert.equal(await c.nextText(), "last");

    assert.equal(a.inbox.length + b.inbox.length + c.inbox.length, 0);
    await Promise.all([a.close(), b.close(), c.close()]);
  });

  test("a client that leaves does not stop the others", async () => {
    const [a, b, c] = await Promise.all([1, 2, 3].map(() => Client.open(server.ws + "/")));
    b.terminate(); // no close frame: the server sees the TCP connection drop
    await b.closed;
    await a.send("after b left");
    assert.equal(await c.nextText(), "after b left");
    await c.send("c answers");
    assert.equal(await a.nextText(), "c answers");
    await Promise.all([a.close(), c.close()]);
  });
});

// The first byte of every data frame the server sent, read off the socket under ws: RSV1 (0x40)
// marks a compressed message. Server frames are unmasked; control frames are skipped.
function frameWatcher(c) {
  const seen = [];
  let buf = Buffer.alloc(0);
  c.ws._socket.on("data", (chunk) => {
    buf = Buffer.concat([buf, chunk]);
    for (;;) {
      if (buf.length < 2) return;
      let n = buf[1] & 0x7f;
      let h = 2;
      if (n === 126) {
        if (buf.length < 4) return;
        n = buf.readUInt16BE(2);
        h = 4;
      } else if (n === 127) {
        if (buf.length < 10) return;
        n = Number(buf.readBigUInt64BE(2));
        h = 10;
      }
      if (buf.length < h + n) return;
      if ((buf[0] & 0x08) === 0) seen.push({ rsv1: (buf[0] & 0x40) !== 0, wire: n });
      buf = buf.subarray(h + n);
    }
  });
  return seen;
}

describe("ws with perMessageDeflate against --deflate", () => {
  let server;
  before(async () => {
    server = await startServer(src("examples/echo.lua"), ["--deflate"]);
  });
  after(async () => {
    const { code } = await server.stop();
    assert.equal(code, 0, "wsluad exits 0 on SIGTERM");
  });

  // threshold 0: ws compresses every message, the small ones too.
  const deflate = { perMessageDeflate: { threshold: 0 } };

  test("the extension is agreed, and off for a client that does not offer it", async () => {
    const z = await Client.open(server.ws + "/", deflate);
    assert.equal(z.ws.extensions, "permessage-deflate");
    const p = await Client.open(server.ws + "/", { perMessageDeflate: false });
    assert.equal(p.ws.extensions, "");
    await Promise.all([z.close(), p.close()]);
  });

  for (const size of [0, 100, 255, 256, 4096, 65536, 1 << 20]) {
    test(`echo of ${size} bytes, compressed both ways from 256 bytes on`, async () => {
      const c = await Client.open(server.ws + "/", deflate);
      const frames = frameWatcher(c);
      const text = "ab€ü ".repeat(Math.floor(size / 8)) + "x".repeat(size % 8);
      assert.equal(Buffer.byteLength(text), size);
      await c.send(text);
      assert.equal(await c.nextText(), text);
      const blob = randomBytes(size);
      await c.send(blob, { binary: true });
      const m = await c.next();
      assert.ok(Buffer.compare(m.data, blob) === 0, "same bytes back");
      // Text at or above --deflate-min comes back compressed; random bytes never shrink.
      assert.equal(frames.length, 2);
      assert.equal(frames[0].rsv1, size >= 256, `text of ${size} bytes: ${frames[0].rsv1}`);
      if (frames[0].rsv1) assert.ok(frames[0].wire < size / 2);
      assert.equal(frames[1].rsv1, false);
      await c.close();
    });
  }

  test("many messages in one context, fragmented ones too", async () => {
    // ws keeps its compression context (the server asked for an 11-bit window).
    const c = await Client.open(server.ws + "/", deflate);
    for (let i = 0; i < 50; i++) {
      const text = `{"type":"message","n":${i},"text":"${"the same words again ".repeat(i % 7)}"}`;
      await c.send(text);
      assert.equal(await c.nextText(), text);
    }
    await c.send("frag-one ", { fin: false, compress: true });
    await c.send("frag-two ", { fin: false, compress: true });
    await c.send("frag-three", { fin: true, compress: true });
    assert.equal(await c.nextText(), "frag-one frag-two frag-three");
    await c.close();
  });

  test("a compressed message inflating past --max-message is closed with 1009", async () => {
    const c = await Client.open(server.ws + "/", deflate);
    c.send(Buffer.alloc((1 << 20) + 1), { binary: true }).catch(() => {});
    assert.equal((await c.closed).code, 1009);
  });
});

describe("ws clients with and without perMessageDeflate chatting through lua/chat.lua", () => {
  let server;
  before(async () => {
    server = await startServer(src("lua/chat.lua"), ["--deflate"]);
  });
  after(async () => {
    const { code } = await server.stop();
    assert.equal(code, 0, "wsluad exits 0 on SIGTERM");
  });

  test("one broadcast: compressed for the deflate clients, plain for the other", async () => {
    const a = await Client.open(server.ws + "/", { perMessageDeflate: { threshold: 0 } });
    const [b, c] = await Promise.all(
      [{}, { perMessageDeflate: false }].map((o) => Client.open(server.ws + "/", o)),
    );
    const fb = frameWatcher(b);
    const fc = frameWatcher(c);
    const text = JSON.stringify({ type: "message", text: "hello everyone ".repeat(100) });
    await a.send(text);
    assert.equal(await b.nextText(), text);
    assert.equal(await c.nextText(), text);
    assert.equal(fb[0].rsv1, true);
    assert.equal(fc[0].rsv1, false);
    await Promise.all([a.close(), b.close(), c.close()]);
  });
});

describe("ws client over wss:// against examples/echo.lua", () => {
  let server, pki;
  before(async () => {
    pki = makePki();
    server = await startServer(src("examples/echo.lua"), [], { tls: pki });
  });
  after(async () => {
    const { code } = await server.stop();
    assert.equal(code, 0, "wsluad exits 0 on SIGTERM");
    rmSync(pki.dir, { recursive: true, force: true });
  });

  for (const size of [0, 126, 65536, 1 << 20]) {
    test(`binary echo of ${size} bytes, the certificate verified`, async () => {
      const c = await Client.open(server.wss + "/", { ca: pki.ca });
      assert.equal(c.ws._socket.getProtocol(), "TLSv1.3");
      assert.equal(c.ws._socket.alpnProtocol, false); // ws offers none
      const payload = randomBytes(size);
      await c.send(payload, { binary: true });
      const m = await c.next();
      assert.ok(Buffer.compare(m.data, payload) === 0, "same bytes back");
      await c.close();
    });
  }

  test("a client that does not trust the certificate cannot connect", async () => {
    const c = new Client(server.wss + "/");
    await assert.rejects(withTimeout(c.opened, "the refusal"), /self.signed|unable to (get|verify)/i);
  });

  test("text, fragments, a ping and the close code over TLS", async () => {
    const c = await Client.open(server.wss + "/", { rejectUnauthorized: false });
    const pong = event(c.ws, "pong", "the pong");
    await c.send("one ", { fin: false });
    c.ws.ping(Buffer.from("tls"));
    await c.send("two ☃", { fin: true });
    assert.equal((await pong)[0].toString(), "tls");
    assert.equal(await c.nextText(), "one two ☃");
    c.ws.close(4321, "done");
    const closed = await c.closed;
    assert.equal(closed.code, 4321);
  });

  test("https: the static page over TLS, ALPN http/1.1", async () => {
    const res = await new Promise((resolve, reject) => {
      const req = https.get(server.https + "/", { ca: pki.ca, ALPNProtocols: ["h2", "http/1.1"] },
        (r) => {
          let body = "";
          const alpn = r.socket.alpnProtocol;
          r.setEncoding("utf8");
          r.on("data", (d) => (body += d));
          r.on("end", () => resolve({ status: r.statusCode, body, alpn }));
        });
      req.on("error", reject);
    });
    assert.equal(res.status, 200);
    assert.match(res.body, /wsluad chat/);
    assert.equal(res.alpn, "http/1.1");
  });
});

describe("ws clients chatting through lua/chat.lua over ws:// and wss:// at once", () => {
  let server, pki;
  before(async () => {
    pki = makePki();
    server = await startServer(src("lua/chat.lua"), [], { tls: pki });
  });
  after(async () => {
    const { code } = await server.stop();
    assert.equal(code, 0, "wsluad exits 0 on SIGTERM");
    rmSync(pki.dir, { recursive: true, force: true });
  });

  test("a line from a wss:// client reaches the ws:// ones and back", async () => {
    const a = await Client.open(server.wss + "/", { ca: pki.ca });
    const b = await Client.open(server.ws + "/");
    const c = await Client.open(server.wss + "/", { ca: pki.ca });
    await a.send("from tls");
    assert.equal(await b.nextText(), "from tls");
    assert.equal(await c.nextText(), "from tls");
    await b.send("from plain");
    assert.equal(await a.nextText(), "from plain");
    assert.equal(await c.nextText(), "from plain");
    assert.equal(a.inbox.length + b.inbox.length + c.inbox.length, 0);
    await Promise.all([a.close(), b.close(), c.close()]);
  });
});

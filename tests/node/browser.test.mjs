// A real browser: headless Chromium (Debian's /usr/bin/chromium) driven by playwright-core opens
// the pages wsluad serves and chats through them: the bundled chat page with lua/chat.lua, and
// rooms.html with examples/rooms.lua, and rooms.html against two nodes of examples/cluster-chat.lua
// sharing a real redis-server. Set WSLUAD_SCREENSHOTS=DIR to keep screenshots.
import { test, describe, before, after } from "node:test";
import assert from "node:assert/strict";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { chromium } from "playwright-core";
import { execFileSync } from "node:child_process";
import { startServer, src, TIMEOUT, makePki } from "./server.mjs";
import { startRedis, until } from "./redis.mjs";

const CHROMIUM = process.env.WSLUAD_CHROMIUM || "/usr/bin/chromium";
const XSS = `<img src=x onerror="alert('xss')"><b>bold</b><script>alert(1)</script>`;

let browser;
before(async () => {
  if (!existsSync(CHROMIUM)) throw new Error(`${CHROMIUM} not found: apt-get install chromium`);
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    timeout: 60000,
    args: [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
    ],
  });
});
after(async () => {
  await browser?.close();
});

async function screenshot(page, name) {
  const dir = process.env.WSLUAD_SCREENSHOTS;
  if (!dir) return;
  mkdirSync(dir, { recursive: true });
  await page.screenshot({ path: path.join(dir, name + ".png") });
}

// Counts the WebSockets a page creates (window.socketsCreated), so a test can tell that a page
// did not connect, or did not retry. Installed with context.addInitScript.
function countSockets() {
  const Native = window.WebSocket;
  window.socketsCreated = 0;
  window.WebSocket = class extends Native {
    constructor(...args) {
      super(...args);
      window.socketsCreated++;
    }
  };
}

// A tab that records what would betray a bug: script errors and dialogs (an executed injection).
// setup(page) runs before the page loads (to install a fake clock, say).
async function openTab(context, url, setup) {
  const page = await context.newPage();
  if (setup) await setup(page);
  page.problems = [];
  page.on("pageerror", (err) => page.problems.push("page error: " + err.message));
  page.on("dialog", (d) => {
    page.problems.push("dialog: " + d.message());
    d.dismiss().catch(() => {});
  });
  page.setDefaultTimeout(TIMEOUT);
  await page.goto(url);
  return page;
}

function waitState(page, state) {
  return page.waitForSelector(`#status[data-state="${state}"]`);
}

// Waits for a message of that kind (own, peer, system) whose text is exactly `text`.
function waitMessage(page, kind, text) {
  return page.waitForFunction(
    ([k, t]) =>
      [...document.querySelectorAll(`#messages li.msg[data-kind="${k}"] .text`)].some(
        (e) => e.textContent === t,
      ),
    [kind, text],
  );
}

function messages(page, kind) {
  return page.$$eval(`#messages li.msg[data-kind="${kind}"] .text`, (els) =>
    els.map((e) => e.textContent),
  );
}

function noInjectedElements(page) {
  return page.$$eval("#messages img, #messages b, #messages script", (els) => els.length);
}

describe("the bundled chat page with lua/chat.lua", () => {
  let server, context, a, b;
  before(async () => {
    server = await startServer(src("lua/chat.lua"));
    context = await browser.newContext({ viewport: { width: 720, height: 480 } });
    a = await openTab(context, server.http + "/");
    b = await openTab(context, server.http + "/");
  });
  after(async () => {
    await context?.close();
    if (server) assert.equal((await server.stop()).code, 0);
  });

  test("both tabs connect", async () => {
    await Promise.all([waitState(a, "open"), waitState(b, "open")]);
    assert.equal(await a.title(), "wsluad chat");
    assert.equal(await a.isEnabled("#send"), true);
  });

  test("a line typed in one tab appears in the other, and as the sender's own", async () => {
    await a.fill("#input", "hello from tab A");
    await a.press("#input", "Enter");
    await waitMessage(b, "peer", "hello from tab A");
    await waitMessage(a, "own", "hello from tab A");
    assert.equal(await a.inputValue("#input"), "", "the input is cleared after sending");

    await b.fill("#input", "and back from B, ünïcödé ☃");
    await b.click("#send");
    await waitMessage(a, "peer", "and back from B, ünïcödé ☃");
    await waitMessage(b, "own", "and back from B, ünïcödé ☃");
    // The server never echoes: each tab shows its own line once, as its own.
    assert.deepEqual(await messages(a, "own"), ["hello from tab A"]);
    assert.deepEqual(await messages(a, "peer"), ["and back from B, ünïcödé ☃"]);
    assert.deepEqual(await messages(b, "own"), ["and back from B, ünïcödé ☃"]);
    assert.deepEqual(await messages(b, "peer"), ["hello from tab A"]);
  });

  test("received HTML is shown as text, never run", async () => {
    await a.fill("#input", XSS);
    await a.press("#input", "Enter");
    await waitMessage(b, "peer", XSS);
    await waitMessage(a, "own", XSS);
    assert.equal(await noInjectedElements(b), 0);
    assert.equal(await noInjectedElements(a), 0);
    // One more round trip, so an onerror handler would have had its chance to fire.
    await b.fill("#input", "after the markup");
    await b.press("#input", "Enter");
    await waitMessage(a, "peer", "after the markup");
    await screenshot(a, "chat-tab-a");
    await screenshot(b, "chat-tab-b");
    assert.deepEqual(a.problems, []);
    assert.deepEqual(b.problems, []);
  });

  test("the tabs reconnect by themselves when the server restarts", async () => {
    const port = server.port;
    assert.equal((await server.stop()).code, 0);
    server = null;
    await Promise.all([waitState(a, "closed"), waitState(b, "closed")]);
    assert.equal(await a.isEnabled("#send"), false, "no sending while disconnected");
    // Each failed attempt is counted where the user looks, and retried.
    await a.waitForFunction(() =>
      /^could not connect \(\d+ attempts?\), retrying in \d+\.\d s$/.test(
        document.getElementById("status").textContent,
      ),
    );

    server = await startServer(src("lua/chat.lua"), [], { listen: `127.0.0.1:${port}` });
    await Promise.all([waitState(a, "open"), waitState(b, "open")]);
    await waitMessage(a, "system", "reconnected");
    await a.fill("#input", "after the restart");
    await a.press("#input", "Enter");
    await waitMessage(b, "peer", "after the restart");
    await screenshot(b, "chat-after-restart");
    assert.deepEqual(a.problems, []);
    assert.deepEqual(b.problems, []);
  });
});

// The chat page over https://, its WebSocket over wss://: a Chromium of its own whose NSS
// database (in a HOME of its own) trusts the root the test made, so the certificate is
// verified as a user's browser would, not waved through.
describe("the chat page over https:// and wss://", () => {
  let server, pki, home, tlsBrowser, context, a, b;
  before(async () => {
    pki = makePki();
    home = mkdtempSync(path.join(tmpdir(), "wsluad-chromium-home-"));
    const db = path.join(home, ".pki", "nssdb");
    mkdirSync(db, { recursive: true });
    execFileSync("certutil", ["-N", "-d", `sql:${db}`, "--empty-password"]);
    execFileSync("certutil", ["-A", "-d", `sql:${db}`, "-n", "wsluad test root", "-t", "C,,",
                              "-i", pki.root]);
    server = await startServer(src("lua/chat.lua"), ["-v"], { tls: pki });
    tlsBrowser = await chromium.launch({
      executablePath: CHROMIUM,
      timeout: 60000,
      env: { ...process.env, HOME: home },
      args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync"],
    });
    context = await tlsBrowser.newContext({ viewport: { width: 720, height: 480 } });
    a = await openTab(context, server.https + "/");
    b = await openTab(context, server.https + "/");
  });
  after(async () => {
    await context?.close();
    await tlsBrowser?.close();
    if (server) assert.equal((await server.stop()).code, 0);
    if (pki) rmSync(pki.dir, { recursive: true, force: true });
    if (home) rmSync(home, { recursive: true, force: true });
  });

  test("both tabs connect with wss:// to the server that served them", async () => {
    await Promise.all([waitState(a, "open"), waitState(b, "open")]);
    assert.equal(await a.evaluate(() => location.protocol), "https:");
    const opens = await server.waitForLog(/open \/[\s\S]*open \//, "two opens");
    assert.ok(opens);
  });

  test("a browser that does not trust the root refuses the page", async () => {
    const other = await browser.newContext();
    const page = await other.newPage();
    await assert.rejects(page.goto(server.https + "/"), /ERR_CERT_AUTHORITY_INVALID/);
    await other.close();
  });

  test("a line typed in one tab appears in the other", async () => {
    await a.fill("#input", "hello over TLS");
    await a.press("#input", "Enter");
    await waitMessage(b, "peer", "hello over TLS");
    await waitMessage(a, "own", "hello over TLS");
    await b.fill("#input", "and back, ünïcödé ☃");
    await b.click("#send");
    await waitMessage(a, "peer", "and back, ünïcödé ☃");
    await screenshot(a, "chat-tls-tab-a");
    assert.deepEqual(a.problems, []);
    assert.deepEqual(b.problems, []);
  });
});

describe("rooms.html with examples/rooms.lua", () => {
  let server, context, ann, bob;
  before(async () => {
    server = await startServer(src("examples/rooms.lua"));
    context = await browser.newContext({ viewport: { width: 720, height: 480 } });
    await context.addInitScript(countSockets);
  });
  after(async () => {
    await context?.close();
    if (server) assert.equal((await server.stop()).code, 0);
  });

  function members(page) {
    return page.$$eval("#members li", (els) => els.map((e) => e.textContent));
  }

  function waitMembers(page, list) {
    return page.waitForFunction(
      (want) => JSON.stringify([...document.querySelectorAll("#members li")].map((e) => e.textContent)) === want,
      JSON.stringify(list),
    );
  }

  async function join(url, room, nick) {
    const page = await openTab(context, url);
    await page.fill("#room", room);
    await page.fill("#nick", nick);
    await page.click("#join");
    await waitState(page, "open");
    return page;
  }

  test("two tabs join one room and talk", async () => {
    ann = await join(server.http + "/rooms.html", "garden", "ann");
    await waitMembers(ann, ["ann"]);
    // The form can be filled from the query string too.
    bob = await openTab(context, server.http + "/rooms.html?room=garden&nick=bob");
    assert.equal(await bob.inputValue("#room"), "garden");
    await bob.click("#join");
    await waitState(bob, "open");
    await waitMembers(bob, ["ann", "bob"]);
    await waitMembers(ann, ["ann", "bob"]);
    await waitMessage(ann, "system", "bob joined");

    await ann.fill("#input", "hello bob");
    await ann.press("#input", "Enter");
    await waitMessage(bob, "peer", "hello bob");
    await waitMessage(ann, "own", "hello bob");
    const from = await bob.$eval('#messages li.msg[data-kind="peer"] .from', (e) => e.textContent);
    assert.equal(from, "ann");

    await bob.fill("#input", XSS);
    await bob.click("#send");
    await waitMessage(ann, "peer", XSS);
    assert.equal(await noInjectedElements(ann), 0);
    await ann.fill("#input", "got it");
    await ann.press("#input", "Enter");
    await waitMessage(bob, "peer", "got it");
    await screenshot(ann, "rooms-ann");
    await screenshot(bob, "rooms-bob");
  });

  test("a taken nickname is renamed; leaving is seen by the others", async () => {
    const ann2 = await join(server.http + "/rooms.html", "garden", "ann");
    await waitMembers(ann2, ["ann", "ann2", "bob"]);
    await waitMembers(ann, ["ann", "ann2", "bob"]);
    assert.equal(await ann2.$eval("#members li[data-self]", (e) => e.textContent), "ann2");

    await bob.click("#leave");
    await waitState(bob, "closed");
    assert.equal(await bob.isVisible("#join-form"), true);
    await waitMessage(ann, "system", "bob left");
    await waitMembers(ann, ["ann", "ann2"]);
    assert.deepEqual(await members(ann2), ["ann", "ann2"]);
    for (const p of [ann, bob, ann2]) assert.deepEqual(p.problems, []);
  });

  // The page applies the script's rules before joining: a mistake is explained in the form at
  // once, and no connection is even tried.
  async function refusedInForm(query, field, why) {
    const page = await openTab(context, server.http + "/rooms.html?" + query);
    await page.click("#join");
    await page.waitForSelector("#join-error:not([hidden])");
    assert.match(await page.textContent("#join-error"), why);
    assert.equal(await page.isVisible("#join-form"), true);
    assert.equal(await page.isHidden("#chat"), true);
    assert.equal(await page.$eval(field, (e) => e.validity.valid), false);
    assert.equal(await page.evaluate(() => window.socketsCreated), 0, "no connection tried");
    return page;
  }

  test("a nickname or room the script would refuse is explained before joining", async () => {
    const long = await refusedInForm(
      "room=checks&nick=" + "x".repeat(40),
      "#nick",
      /^A nickname has at most 24 characters; this one has 40\.$/,
    );
    await refusedInForm("room=checks&nick=a%01b", "#nick", /control characters/);
    await refusedInForm("room=" + "r".repeat(65) + "&nick=ok", "#room", /1 to 64 letters/);
    await refusedInForm("room=no%20spaces&nick=ok", "#room", /1 to 64 letters/);
    // Characters, not UTF-16 units: 24 emoji are a valid nickname. Fixing the field clears the
    // error as the user types, and the join goes through.
    await long.fill("#nick", "😀".repeat(24));
    assert.equal(await long.isHidden("#join-error"), true);
    await long.click("#join");
    await waitState(long, "open");
    await waitMembers(long, ["😀".repeat(24)]);
    assert.deepEqual(long.problems, []);
  });
});

describe("rooms.html when the server refuses the join", () => {
  // rooms.lua with a nickname limit of 3 instead of 24, run from a temporary copy: the page's own
  // check lets "annabel" through, as if page and script had drifted apart, and the script refuses
  // her. The page must say why and stop, not retry for ever.
  let server, context, dir;
  before(async () => {
    dir = mkdtempSync(path.join(tmpdir(), "wsluad-rooms-"));
    const script = readFileSync(src("examples/rooms.lua"), "utf8");
    const strict = script.replace("local MAX_NICK = 24", "local MAX_NICK = 3");
    assert.notEqual(strict, script, "rooms.lua no longer sets MAX_NICK = 24");
    writeFileSync(path.join(dir, "rooms.lua"), strict);
    server = await startServer(path.join(dir, "rooms.lua"));
    context = await browser.newContext({ viewport: { width: 720, height: 480 } });
    await context.addInitScript(countSockets);
  });
  after(async () => {
    await context?.close();
    if (server) assert.equal((await server.stop()).code, 0);
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  test("the reason is shown, the field marked, and nothing is retried", async () => {
    // A fake clock, so that "never retried" is checked by moving the page's time on, not by
    // waiting: the back-off would retry within 0.6 s, and never waits more than 18 s.
    const page = await openTab(context, server.http + "/rooms.html?room=garden&nick=annabel", (p) =>
      p.clock.install(),
    );
    await page.click("#join");
    await waitState(page, "refused");
    const reason = "bad nickname: at most 3 characters, no control characters";
    assert.equal(await page.textContent("#status"), reason);
    assert.equal(await page.isVisible("#join-form"), true);
    assert.equal(await page.isHidden("#chat"), true);
    assert.equal(
      await page.textContent("#join-error"),
      `The server refused to join: ${reason}. Change it and join again.`,
    );
    assert.equal(await page.$eval("#nick", (e) => e.validationMessage), reason);
    assert.equal(await page.isEnabled("#send"), false);

    await page.clock.runFor(10 * 60 * 1000);
    assert.equal(await page.evaluate(() => window.socketsCreated), 1, "the refusal was retried");
    assert.equal(await page.getAttribute("#status", "data-state"), "refused");

    // Editing the field lifts the server's mark; a name it accepts joins.
    await page.fill("#nick", "ann");
    assert.equal(await page.$eval("#nick", (e) => e.validity.valid), true);
    assert.equal(await page.isHidden("#join-error"), true);
    await page.click("#join");
    await waitState(page, "open");
    await waitMessage(page, "system", "you joined garden as ann; here: ann");
    await screenshot(page, "rooms-refused-then-joined");
    assert.deepEqual(page.problems, []);
  });
});

describe("rooms.html when cluster-chat.lua answers 1013 (try again later)", () => {
  // cluster-chat.lua without --redis accepts each join and closes it at once with 1013, as it
  // does while Redis is unreachable. The page retries, and must back off as it says (0.5 s,
  // 1 s, 2 s, ... up to 15 s): a tab that retried every 0.5 s for as long as Redis is down
  // would hammer the server, times every open tab.
  let server, context;
  before(async () => {
    server = await startServer(src("examples/cluster-chat.lua"));
    context = await browser.newContext({ viewport: { width: 720, height: 480 } });
    await context.addInitScript(countSockets);
  });
  after(async () => {
    await context?.close();
    if (server) assert.equal((await server.stop()).code, 0);
  });

  test("the retries back off although each attempt opens", async () => {
    const page = await openTab(context, server.http + "/rooms.html?room=garden&nick=ann", (p) =>
      p.clock.install(),
    );
    await page.click("#join");
    // The fake clock also runs at the real pace, so a busy machine may start the next attempt
    // before one is looked at: each look reads the count and the text at once, and a wait is
    // checked against its own attempt's number.
    const waits = new Map();
    for (let seen = 0; seen < 6; ) {
      const handle = await page.waitForFunction((n) => {
        const st = document.querySelector("#status");
        return window.socketsCreated > n && st.dataset.state === "closed"
          ? [window.socketsCreated, st.textContent]
          : false;
      }, seen);
      const [made, status] = await handle.jsonValue();
      // The page says what the server said, and how many attempts in a row it has made (each
      // opened and was closed with 1013).
      const m = status.match(/^the chat is unavailable, try again later \((\d+) attempts?\), retrying in (\d+\.\d) s$/);
      assert.ok(m, `status after attempt ${made}: ${status}`);
      assert.equal(Number(m[1]), made, status);
      assert.ok(status.includes(made === 1 ? "(1 attempt)" : `(${made} attempts)`), status);
      waits.set(made, Number(m[2]));
      seen = made;
      await page.clock.runFor(Math.ceil(Number(m[2]) * 1000) + 1);
    }
    // The wait after attempt k is 0.5 s doubled k - 1 times (up to 15 s), give or take the 20 %
    // jitter.
    for (const [k, w] of waits) {
      const expected = Math.min(0.5 * 2 ** (k - 1), 15);
      assert.ok(w >= expected * 0.8 - 0.05 && w <= expected * 1.2 + 0.05, `waits ${[...waits]}`);
    }
    assert.match(server.log(), /cannot join: .*no Redis/);
    assert.deepEqual(page.problems, []);
  });
});

describe("Chromium's permessage-deflate offer with --deflate", () => {
  let server, context;
  before(async () => {
    server = await startServer(src("examples/echo.lua"), ["--deflate"]);
    context = await browser.newContext();
  });
  after(async () => {
    await context?.close();
    const { code } = await server.stop();
    assert.equal(code, 0, "wsluad exits 0 on SIGTERM");
  });

  test("is accepted, and messages of every size go both ways", async () => {
    const page = await openTab(context, server.http + "/");
    const result = await page.evaluate(async (url) => {
      const ws = new WebSocket(url);
      ws.binaryType = "arraybuffer";
      await new Promise((resolve, reject) => {
        ws.onopen = resolve;
        ws.onerror = () => reject(new Error("the socket failed"));
      });
      const got = [];
      ws.onmessage = (e) => got.push(e.data);
      const sent = [];
      for (const n of [0, 10, 300, 5000, 200000]) sent.push("chat ☃ ".repeat(n / 10));
      for (const s of sent) ws.send(s);
      const deadline = Date.now() + 8000;
      while (got.length < sent.length && Date.now() < deadline)
        await new Promise((r) => setTimeout(r, 10));
      ws.close();
      const same = got.length === sent.length && got.every((g, i) => g === sent[i]);
      return { extensions: ws.extensions, same };
    }, server.ws + "/");
    assert.match(result.extensions, /^permessage-deflate/);
    assert.ok(result.same, "every message came back as sent");
    assert.deepEqual(page.problems, []);
    await page.close();
  });
});

describe("rooms.html against two nodes of examples/cluster-chat.lua", () => {
  // The page is the one rooms.lua uses, unchanged; each tab is served by another node, and the
  // nodes meet through Redis.
  let redis, nodeA, nodeB, context;
  before(async () => {
    redis = await startRedis();
    try {
      for (const which of ["A", "B"]) {
        const node = await startServer(src("examples/cluster-chat.lua"), ["--redis", redis.url]);
        if (which === "A") nodeA = node;
        else nodeB = node;
        await node.waitForLog(/redis: link up/, "the Redis link");
      }
    } catch (err) {
      await nodeA?.stop();
      await nodeB?.stop();
      await redis.stop();
      throw err;
    }
    context = await browser.newContext({ viewport: { width: 720, height: 480 } });
  });
  after(async () => {
    await context?.close();
    const codes = await Promise.all([nodeA, nodeB].filter(Boolean).map(async (n) => (await n.stop()).code));
    await redis?.stop();
    assert.deepEqual(codes, [0, 0]);
  });

  function waitMembers(page, list) {
    return page.waitForFunction(
      (want) => JSON.stringify([...document.querySelectorAll("#members li")].map((e) => e.textContent)) === want,
      JSON.stringify(list),
    );
  }

  async function join(node, room, nick) {
    const page = await openTab(context, `${node.http}/rooms.html?room=${room}&nick=${nick}`);
    await page.click("#join");
    await waitState(page, "open");
    return page;
  }

  // Node B hears node A's messages for the room once Redis has its subscription (and back).
  async function subscribedOnBoth(room) {
    const channel = `wsluad:topic:room:${room}`;
    await until(async () => (await redis.command("PUBSUB", "NUMSUB", channel))[1] === 2,
      `both nodes subscribed to ${channel}`);
  }

  test("two tabs on two nodes chat in one room; a later one gets the history", async () => {
    const ann = await join(nodeA, "garden", "ann");
    await waitMembers(ann, ["ann"]);
    const bob = await join(nodeB, "garden", "bob");
    await waitMembers(bob, ["ann", "bob"]);
    await waitMembers(ann, ["ann", "bob"]);
    await waitMessage(ann, "system", "bob joined");
    await subscribedOnBoth("garden");

    await ann.fill("#input", "hello bob, from node A");
    await ann.press("#input", "Enter");
    await waitMessage(bob, "peer", "hello bob, from node A");
    await waitMessage(ann, "own", "hello bob, from node A");
    await bob.fill("#input", XSS);
    await bob.click("#send");
    await waitMessage(ann, "peer", XSS);
    assert.equal(await noInjectedElements(ann), 0);

    // A third tab, on node B, joins later: the room's messages so far are shown to it.
    const cat = await join(nodeB, "garden", "cat");
    await waitMembers(cat, ["ann", "bob", "cat"]);
    await waitMessage(cat, "peer", "hello bob, from node A");
    await waitMessage(cat, "peer", XSS);
    assert.deepEqual(await messages(cat, "peer"), ["hello bob, from node A", XSS]);
    await waitMembers(ann, ["ann", "bob", "cat"]);

    // A taken nickname is renamed across nodes too; leaving shows on the other node.
    const ann2 = await join(nodeB, "garden", "ann");
    await waitMembers(ann2, ["ann", "ann2", "bob", "cat"]);
    assert.equal(await ann2.$eval("#members li[data-self]", (e) => e.textContent), "ann2");
    await bob.click("#leave");
    await waitMessage(ann, "system", "bob left");
    await waitMembers(ann, ["ann", "ann2", "cat"]);
    await screenshot(ann, "cluster-ann-node-a");
    await screenshot(cat, "cluster-cat-node-b");
    for (const p of [ann, bob, cat, ann2]) assert.deepEqual(p.problems, []);
  });

  // The history comes again with every join, so also after a reconnect: it must replace the
  // messages shown, not be added below them a second time.
  test("after a reconnect each history message is shown once", async () => {
    // A node of its own, restarted on its port under the tab to force the reconnect.
    let nodeC = await startServer(src("examples/cluster-chat.lua"), ["--redis", redis.url]);
    let ann;
    try {
      await nodeC.waitForLog(/redis: link up/, "the Redis link");
      const bob = await join(nodeA, "replay", "bob");
      for (const text of ["one", "two", "three"]) {
        await bob.fill("#input", text);
        await bob.press("#input", "Enter");
        await waitMessage(bob, "own", text);
      }
      const newest = async (text) => {
        const first = await redis.command("LINDEX", "wsluad:chat:history:replay", 0);
        return JSON.parse(first ?? "{}").text === text;
      };
      await until(() => newest("three"), "three in the history");

      ann = await join(nodeC, "replay", "ann");
      await waitMessage(ann, "peer", "three");
      await subscribedOnBoth("replay");
      await bob.fill("#input", "four"); // live for ann, in the history at her next join
      await bob.press("#input", "Enter");
      await waitMessage(ann, "peer", "four");
      await until(() => newest("four"), "four in the history");
      assert.deepEqual(await messages(ann, "peer"), ["one", "two", "three", "four"]);

      const port = nodeC.port;
      assert.equal((await nodeC.stop()).code, 0);
      await waitState(ann, "closed");
      nodeC = await startServer(src("examples/cluster-chat.lua"), ["--redis", redis.url],
        { listen: `127.0.0.1:${port}` });
      await waitState(ann, "open");
      // Rejoined, and the whole history shown: its last message follows the second welcome.
      const welcome = "you joined replay as ann; here: ann, bob; the last 4 messages follow";
      await ann.waitForFunction((w) => {
        const items = [...document.querySelectorAll("#messages li.msg .text")].map((e) => e.textContent);
        const at = items.indexOf(w);
        return at >= 0 && items.slice(at + 1).includes("four");
      }, welcome);
      assert.deepEqual(await messages(ann, "peer"), ["one", "two", "three", "four"]);
      // The notices stay: they are not in the history.
      const notices = await messages(ann, "system");
      assert.deepEqual(notices.filter((t) => t.startsWith("you joined") || t === "connection lost"), [
        "you joined replay as ann; here: ann, bob; the last 3 messages follow",
        "connection lost",
        welcome,
      ]);
      await screenshot(ann, "cluster-after-reconnect");
      for (const p of [ann, bob]) assert.deepEqual(p.problems, []);
    } finally {
      await nodeC.stop();
    }
  });
});

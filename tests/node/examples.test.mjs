// Each script in examples/ runs as its header comment says, and behaves as it says.
import { test, describe, before, after } from "node:test";
import assert from "node:assert/strict";
import { startServer, Client, src, withTimeout, nextChatMsg as nextMsg } from "./server.mjs";

function serve(script) {
  const ctx = {};
  before(async () => {
    ctx.server = await startServer(src("examples", script));
  });
  after(async () => {
    const { code } = await ctx.server.stop();
    assert.equal(code, 0, "wsluad exits 0 on SIGTERM");
  });
  return ctx;
}

// Resolves with the refused upgrade's error (status, body); fails if the upgrade succeeds.
async function refused(url, options) {
  const c = new Client(url, options);
  try {
    await c.opened;
  } catch (err) {
    if (err.status) return err;
    throw err;
  }
  c.terminate();
  assert.fail(`${url} was accepted`);
}

// A join refused the way a browser can read: accepted, then closed at once with an application
// close code (4000-4999) and a reason, before any message. Resolves with { code, reason }.
async function closedAtOnce(url) {
  const c = await Client.open(url);
  const closed = await withTimeout(c.closed, `the close frame refusing ${url}`);
  assert.deepEqual(c.inbox, [], "nothing is sent before the refusal");
  return closed;
}

describe("examples/echo.lua", () => {
  const ctx = serve("echo.lua");

  test("echoes text as text and binary as binary", async () => {
    const c = await Client.open(ctx.server.ws + "/");
    await c.send("héllo");
    assert.deepEqual(await c.next(), { data: "héllo", binary: false });
    await c.send(Buffer.from([0, 1, 2, 255]), { binary: true });
    const b = await c.next();
    assert.equal(b.binary, true);
    assert.deepEqual([...b.data], [0, 1, 2, 255]);
    // Binary that happens to be valid text stays binary.
    await c.send(Buffer.from("abc"), { binary: true });
    assert.equal((await c.next()).binary, true);
    await c.close();
  });

  test("echoes only to the sender", async () => {
    const a = await Client.open(ctx.server.ws + "/");
    const b = await Client.open(ctx.server.ws + "/");
    await a.send("for a");
    await b.send("for b");
    assert.equal(await a.nextText(), "for a");
    assert.equal(await b.nextText(), "for b");
    await Promise.all([a.close(), b.close()]);
  });
});

describe("examples/rooms.lua", () => {
  const ctx = serve("rooms.lua");
  const room = (name, nick) =>
    `${ctx.server.ws}/room/${name}` + (nick === undefined ? "" : `?nick=${encodeURIComponent(nick)}`);

  test("join, member list, join/leave notices, messages, unique nicks", async () => {
    const ann = await Client.open(room("lobby", "ann"));
    const welcome = await nextMsg(ann, "ann's member list");
    assert.equal(welcome.type, "members");
    assert.equal(welcome.from, null);
    assert.equal(welcome.room, "lobby");
    assert.equal(welcome.you, "ann");
    assert.deepEqual(welcome.members, ["ann"]);

    const bob = await Client.open(room("lobby", "bob"));
    const bobWelcome = await nextMsg(bob);
    assert.equal(bobWelcome.you, "bob");
    assert.deepEqual(bobWelcome.members, ["ann", "bob"]);
    assert.deepEqual(await nextMsg(ann), { type: "join", from: "bob", text: "bob joined" });

    // A second "ann" is renamed, not refused, and told the name it got.
    const ann2 = await Client.open(room("lobby", "ann"));
    const ann2Welcome = await nextMsg(ann2);
    assert.equal(ann2Welcome.you, "ann2");
    assert.deepEqual(ann2Welcome.members, ["ann", "ann2", "bob"]);
    assert.match(ann2Welcome.text, /ann was taken/);
    assert.deepEqual(await nextMsg(ann), { type: "join", from: "ann2", text: "ann2 joined" });
    assert.deepEqual(await nextMsg(bob), { type: "join", from: "ann2", text: "ann2 joined" });

    // JSON in, JSON out, to everyone in the room but the sender.
    await ann.send(JSON.stringify({ type: "message", text: "hi <all>" }));
    const expected = { type: "message", from: "ann", text: "hi <all>" };
    assert.deepEqual(await nextMsg(bob), expected);
    assert.deepEqual(await nextMsg(ann2), expected);
    // Plain text is accepted as a message too. ann's next message being bob's proves her own
    // line did not come back to her.
    await bob.send("plain text from bob");
    const fromBob = { type: "message", from: "bob", text: "plain text from bob" };
    assert.deepEqual(await nextMsg(ann), fromBob);
    assert.deepEqual(await nextMsg(ann2), fromBob);

    // Leaving is announced, and frees the nick.
    await bob.close();
    assert.deepEqual(await nextMsg(ann), { type: "leave", from: "bob", text: "bob left" });
    assert.deepEqual(await nextMsg(ann2), { type: "leave", from: "bob", text: "bob left" });
    const bobAgain = await Client.open(room("lobby", "bob"));
    const again = await nextMsg(bobAgain);
    assert.equal(again.you, "bob");
    assert.deepEqual(again.members, ["ann", "ann2", "bob"]);
    assert.equal((await nextMsg(ann)).type, "join");
    assert.equal((await nextMsg(ann2)).type, "join");

    // An abrupt disconnect is announced as well.
    ann2.terminate();
    assert.deepEqual(await nextMsg(ann), { type: "leave", from: "ann2", text: "ann2 left" });
    assert.deepEqual(await nextMsg(bobAgain), { type: "leave", from: "ann2", text: "ann2 left" });
    await Promise.all([ann.close(), bobAgain.close()]);
  });

  test("rooms are separate", async () => {
    const red1 = await Client.open(room("red", "x"));
    const blue1 = await Client.open(room("blue", "x")); // same nick, other room: no rename
    assert.equal((await nextMsg(red1)).you, "x");
    assert.equal((await nextMsg(blue1)).you, "x");
    const red2 = await Client.open(room("red", "y"));
    const blue2 = await Client.open(room("blue", "y"));
    assert.deepEqual((await nextMsg(red2)).members, ["x", "y"]);
    assert.deepEqual((await nextMsg(blue2)).members, ["x", "y"]);
    assert.equal((await nextMsg(red1)).from, "y");
    assert.equal((await nextMsg(blue1)).from, "y");

    await red1.send("to red");
    assert.deepEqual(await nextMsg(red2), { type: "message", from: "x", text: "to red" });
    // "to red" has been handled; had it reached blue1 it would come before this one.
    await blue2.send("to blue");
    assert.deepEqual(await nextMsg(blue1), { type: "message", from: "y", text: "to blue" });
    await Promise.all([red1, red2, blue1, blue2].map((c) => c.close()));
  });

  test("nicknames: percent-decoded, trimmed, defaulted, checked", async () => {
    const zoe = await Client.open(room("nicks", " Zoë Ω "));
    assert.equal((await nextMsg(zoe)).you, "Zoë Ω");
    const anon = await Client.open(room("nicks"));
    assert.equal((await nextMsg(anon)).you, "guest");
    const anon2 = await Client.open(room("nicks", ""));
    assert.equal((await nextMsg(anon2)).you, "guest2");
    const badNick = { code: 4400, reason: "bad nickname: at most 24 characters, no control characters" };
    assert.deepEqual(await closedAtOnce(room("nicks", "x".repeat(25))), badNick);
    assert.deepEqual(await closedAtOnce(room("nicks", "x".repeat(40))), badNick);
    assert.deepEqual(await closedAtOnce(room("nicks", "a\nb")), badNick);
    assert.deepEqual(await closedAtOnce(room("nicks", "a\u007fb")), badNick);
    // 24 characters, whatever their size in bytes, are fine.
    const emoji = await Client.open(room("nicks", "😀".repeat(24)));
    assert.equal((await nextMsg(emoji)).you, "😀".repeat(24));
    // The refused ones never joined: nobody saw them come or go.
    const later = await Client.open(room("nicks", "later"));
    assert.deepEqual((await nextMsg(later)).members, ["Zoë Ω", "guest", "guest2", "later", "😀".repeat(24)]);
    await Promise.all([zoe.close(), anon.close(), anon2.close(), emoji.close(), later.close()]);
  });

  test("only /room/NAME paths are rooms; a bad NAME is refused with 4404", async () => {
    for (const path of ["/", "/room", "/rooms/x", "/roomx/a"]) {
      const err = await refused(ctx.server.ws + path + "?nick=n");
      assert.equal(err.status, 404, path);
      assert.match(err.body, /room/);
    }
    for (const path of ["/room/", "/room/a/b", "/room/a%2Fb", "/room/a%20b", "/room/" + "r".repeat(65)]) {
      assert.deepEqual(await closedAtOnce(ctx.server.ws + path + "?nick=n"), {
        code: 4404,
        reason: "bad room name: 1 to 64 letters, digits, _ . or -",
      }, path);
    }
    const longest = await Client.open(room("r".repeat(64), "n"));
    assert.equal((await nextMsg(longest)).room, "r".repeat(64));
    await longest.close();
  });

  test("bad input gets an error message and the connection stays usable", async () => {
    const a = await Client.open(room("errors", "a"));
    const b = await Client.open(room("errors", "b"));
    await nextMsg(a);
    await nextMsg(b);
    await nextMsg(a); // b joined
    for (const bad of ['{"type":"message"}', '{"type":"dance","text":"x"}', "{not json", '{"type":"message","text":"\\ud800"}']) {
      await a.send(bad);
      const err = await nextMsg(a, `the error for ${bad}`);
      assert.equal(err.type, "error", bad);
      assert.equal(err.from, null);
    }
    await a.send(Buffer.from("bin"), { binary: true });
    assert.equal((await nextMsg(a)).type, "error");
    await a.send("ok now");
    // None of the bad ones reached b: its next message is the good one.
    assert.deepEqual(await nextMsg(b), { type: "message", from: "a", text: "ok now" });
    await Promise.all([a.close(), b.close()]);
  });
});

describe("examples/auth.lua", () => {
  const ctx = serve("auth.lua");

  test("401 without a token or with an unknown one", async () => {
    for (const q of ["", "?token=", "?token=wrong", "?tok=alice-secret"]) {
      const err = await refused(ctx.server.ws + "/" + q);
      assert.equal(err.status, 401, q);
      assert.match(err.body, /token/);
    }
    const err = await refused(ctx.server.ws + "/", { headers: { Cookie: "token=wrong" } });
    assert.equal(err.status, 401);
  });

  test("a known token by query or by cookie is accepted, and names the user", async () => {
    const alice = await Client.open(ctx.server.ws + "/?token=alice-secret");
    assert.equal(await alice.nextText(), "welcome, alice");
    const bob = await Client.open(ctx.server.ws + "/", {
      headers: { Cookie: "theme=dark; token=bob-secret; lang=en" },
    });
    assert.equal(await bob.nextText(), "welcome, bob");

    await alice.send("hi bob");
    assert.equal(await bob.nextText(), "alice: hi bob");
    await bob.send("hi alice");
    assert.equal(await alice.nextText(), "bob: hi alice");
    await Promise.all([alice.close(), bob.close()]);
  });

  test("Origin must be on the allow-list when it is sent", async () => {
    for (const origin of ["http://127.0.0.1:8080", "http://localhost:8080"]) {
      const c = await Client.open(ctx.server.ws + "/?token=alice-secret", { origin });
      assert.equal(await c.nextText(), "welcome, alice");
      await c.close();
    }
    for (const origin of ["https://evil.example", "http://localhost:8081", "null"]) {
      const err = await refused(ctx.server.ws + "/?token=alice-secret", { origin });
      assert.equal(err.status, 403, origin);
    }
    const noToken = await refused(ctx.server.ws + "/", { origin: "http://localhost:8080" });
    assert.equal(noToken.status, 401);
  });
});

describe("examples/ticker.lua", () => {
  const ctx = serve("ticker.lua");

  async function nextTick(c) {
    const m = await c.nextText("a tick");
    const tick = JSON.parse(m);
    assert.equal(tick.type, "tick");
    assert.ok(Number.isInteger(tick.n));
    assert.match(tick.time, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$/);
    return tick;
  }

  test("subscribers of ticks get a tick every second, others get none", async () => {
    const sub = await Client.open(ctx.server.ws + "/");
    const other = await Client.open(ctx.server.ws + "/");
    await sub.send("subscribe");
    assert.equal(await sub.nextText(), "subscribed");
    const t1 = await nextTick(sub);
    const t2 = await nextTick(sub);
    assert.equal(t2.n, t1.n + 1);

    // Two ticks went out; any that reached `other` is queued before this answer.
    await other.send("unsubscribe");
    assert.equal(await other.nextText(), "unsubscribed");

    // Unsubscribing ends delivery: after the answer, a third tick reaches a fresh subscriber
    // but not `sub`, whose next message is the answer to its next command.
    await sub.send("unsubscribe");
    let m;
    while ((m = await sub.nextText()) !== "unsubscribed") assert.equal(JSON.parse(m).type, "tick");
    const witness = await Client.open(ctx.server.ws + "/");
    await witness.send("subscribe");
    assert.equal(await witness.nextText(), "subscribed");
    const t3 = await nextTick(witness);
    assert.ok(t3.n > t2.n);
    await sub.send("nonsense");
    assert.match(await sub.nextText(), /unknown command/);

    await Promise.all([sub.close(), other.close(), witness.close()]);
  });
});

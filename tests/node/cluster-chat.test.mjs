// examples/cluster-chat.lua on two wsluad nodes sharing a real redis-server (started here on a
// free port, always stopped): rooms span the nodes, nicknames stay unique across them, the
// history comes from Redis, and a killed node's members leave within the expiry.
import { test, describe, before, after } from "node:test";
import assert from "node:assert/strict";
import { startServer, Client, src, withTimeout, nextChatMsg as nextMsg } from "./server.mjs";
import { startRedis, until } from "./redis.mjs";

const SCRIPT = src("examples", "cluster-chat.lua");
const MEMBER_TTL = 1; // seconds (CHAT_MEMBER_TTL): a dead node's members go within ~1.3 s

// A node of the cluster, once its Redis link is up.
async function startNode(redis) {
  const node = await startServer(SCRIPT, ["--redis", redis.url], {
    env: { CHAT_MEMBER_TTL: String(MEMBER_TTL) },
  });
  await node.waitForLog(/redis: link up/, "the Redis link");
  return node;
}

describe("examples/cluster-chat.lua on two nodes", () => {
  let redis, a, b;
  const url = (node, name, nick) => `${node.ws}/room/${name}?nick=${encodeURIComponent(nick)}`;

  // Joins and returns the client and its "members" message.
  async function join(node, name, nick) {
    const c = await Client.open(url(node, name, nick));
    const welcome = await nextMsg(c, `${nick}'s member list`);
    assert.equal(welcome.type, "members");
    return [c, welcome];
  }

  // A node subscribes to a room's channel when its first member joins; Redis confirms that
  // later. A message published on one node reaches the other only once it has: wait for it.
  async function subscribedOn(nodes, name) {
    const channel = `wsluad:topic:room:${name}`;
    await until(
      async () => (await redis.command("PUBSUB", "NUMSUB", channel))[1] === nodes,
      `${nodes} nodes subscribed to ${channel}`,
    );
  }

  before(async () => {
    redis = await startRedis();
    try {
      a = await startNode(redis);
      b = await startNode(redis);
    } catch (err) {
      await a?.stop();
      await redis.stop();
      throw err;
    }
  });
  after(async () => {
    const results = await Promise.all([a, b].filter(Boolean).map((n) => n.stop()));
    await redis?.stop();
    // b was killed by the last test; a stops cleanly.
    assert.equal(results[0].code, 0, "node A exits 0 on SIGTERM");
  });

  test("one room across the nodes: members of both, notices, messages both ways", async () => {
    const [ann, annWelcome] = await join(a, "lobby", "ann");
    assert.deepEqual(annWelcome.members, ["ann"]);
    assert.equal(annWelcome.room, "lobby");
    assert.equal(annWelcome.from, null);

    const [bob, bobWelcome] = await join(b, "lobby", "bob");
    assert.equal(bobWelcome.you, "bob");
    assert.deepEqual(bobWelcome.members, ["ann", "bob"]);
    assert.equal(bobWelcome.text, "you joined lobby as bob; here: ann, bob");
    assert.deepEqual(await nextMsg(ann), { type: "join", from: "bob", text: "bob joined" });
    await subscribedOn(2, "lobby");

    await ann.send(JSON.stringify({ type: "message", text: "hi bob, from node A" }));
    assert.deepEqual(await nextMsg(bob), { type: "message", from: "ann", text: "hi bob, from node A" });
    // Plain text works too; ann's next message being bob's shows hers did not come back.
    await bob.send("hi ann, from node B ☃");
    assert.deepEqual(await nextMsg(ann), { type: "message", from: "bob", text: "hi ann, from node B ☃" });

    // A third member on node A sees both nodes' members; everyone hears of her.
    const [cat, catWelcome] = await join(a, "lobby", "cat");
    assert.deepEqual(catWelcome.members, ["ann", "bob", "cat"]);
    assert.deepEqual(await nextMsg(ann), { type: "join", from: "cat", text: "cat joined" });
    assert.deepEqual(await nextMsg(bob), { type: "join", from: "cat", text: "cat joined" });
    await cat.send("meow");
    assert.deepEqual(await nextMsg(ann), { type: "message", from: "cat", text: "meow" });
    assert.deepEqual(await nextMsg(bob), { type: "message", from: "cat", text: "meow" });

    // Leaving, cleanly or not, is heard on both nodes and leaves Redis's member set.
    await cat.close();
    assert.deepEqual(await nextMsg(ann), { type: "leave", from: "cat", text: "cat left" });
    assert.deepEqual(await nextMsg(bob), { type: "leave", from: "cat", text: "cat left" });
    bob.terminate();
    assert.deepEqual(await nextMsg(ann), { type: "leave", from: "bob", text: "bob left" });
    await until(
      async () => (await redis.command("ZRANGE", "wsluad:chat:members:lobby", 0, -1)).join() === "ann",
      "only ann left in wsluad:chat:members:lobby",
    );
    await ann.close();
  });

  test("nicknames are unique across the nodes, also when joining at the same moment", async () => {
    const [ann] = await join(a, "nicks", "ann");
    const [ann2, w2] = await join(b, "nicks", "ann");
    assert.equal(w2.you, "ann2");
    assert.match(w2.text, /ann was taken/);
    assert.deepEqual(w2.members, ["ann", "ann2"]);
    assert.equal((await nextMsg(ann)).from, "ann2");

    // Two clients ask for the same name on the two nodes at once (in a room of their own, so
    // ann hears nothing of it): one of them gets it.
    for (let i = 0; i < 5; i++) {
      const nick = `zed${"z".repeat(i)}`;
      const [[x, wx], [y, wy]] = await Promise.all([join(a, "race", nick), join(b, "race", nick)]);
      assert.deepEqual([wx.you, wy.you].sort(), [nick, nick + "2"], `round ${i}`);
      await Promise.all([x.close(), y.close()]);
    }

    // A clean leave frees the name for the other node (once the ZREM is through).
    await ann2.close();
    assert.deepEqual(await nextMsg(ann, "ann2 leaving"), { type: "leave", from: "ann2", text: "ann2 left" });
    await until(async () => (await redis.command("ZSCORE", "wsluad:chat:members:nicks", "ann2")) === null,
      "ann2 out of wsluad:chat:members:nicks");
    const [again, wa] = await join(b, "nicks", "ann");
    assert.equal(wa.you, "ann2");
    await Promise.all([ann.close(), again.close()]);
  });

  test("a later joiner gets the last 50 messages, oldest first, then live ones", async () => {
    const [writer] = await join(a, "history", "writer");
    for (let i = 1; i <= 55; i++) await writer.send(`m${i}`);
    // The history is written without waiting; wait until Redis has all of it.
    const last = JSON.stringify({ type: "message", from: "writer", text: "m55" });
    await until(async () => {
      const [len, first] = await Promise.all([
        redis.command("LLEN", "wsluad:chat:history:history"),
        redis.command("LINDEX", "wsluad:chat:history:history", 0),
      ]);
      return len === 50 && JSON.parse(first ?? "{}").text === "m55";
    }, `50 messages up to ${last} in wsluad:chat:history:history`);
    const ttl = await redis.command("TTL", "wsluad:chat:history:history");
    assert.ok(ttl > 0 && ttl <= 24 * 3600, `the history expires (TTL ${ttl})`);

    const [late, welcome] = await join(b, "history", "late");
    assert.deepEqual(welcome.members, ["late", "writer"]);
    assert.equal(welcome.text, "you joined history as late; here: late, writer; the last 50 messages follow");
    for (let i = 6; i <= 55; i++)
      assert.deepEqual(await nextMsg(late, `history message m${i}`), {
        type: "message",
        from: "writer",
        text: `m${i}`,
        history: true,
      });
    assert.deepEqual(await nextMsg(writer), { type: "join", from: "late", text: "late joined" });
    await subscribedOn(2, "history");
    await writer.send("live");
    assert.deepEqual(await nextMsg(late), { type: "message", from: "writer", text: "live" });
    await Promise.all([writer.close(), late.close()]);
  });

  test("a backend's PUBLISH into the room reaches the members on both nodes", async () => {
    const [x] = await join(a, "news", "x");
    const [y] = await join(b, "news", "y");
    await nextMsg(x); // y joined
    await subscribedOn(2, "news");
    const notice = { type: "message", from: "backend", text: "deploy at noon" };
    assert.equal(await redis.command("PUBLISH", "wsluad:topic:room:news", JSON.stringify(notice)), 2);
    assert.deepEqual(await nextMsg(x), notice);
    assert.deepEqual(await nextMsg(y), notice);
    await Promise.all([x.close(), y.close()]);
  });

  test("rooms.lua's refusals: 404, 4404 and 4400", async () => {
    const c = new Client(`${b.ws}/elsewhere`);
    await assert.rejects(withTimeout(c.opened, "the refusal"), (err) => err.status === 404);
    for (const [path, code] of [["/room/a%20b?nick=x", 4404], ["/room/ok?nick=" + "x".repeat(25), 4400]]) {
      const r = await Client.open(b.ws + path);
      assert.equal((await withTimeout(r.closed, "the close")).code, code, path);
      assert.deepEqual(r.inbox, []);
    }
  });

  test("a node stopped cleanly (SIGTERM) removes its members at once", async () => {
    // Node C writes deadlines a minute ahead: had the stop not removed its members, they would
    // stay listed far longer than this test waits.
    const c = await startServer(SCRIPT, ["--redis", redis.url], { env: { CHAT_MEMBER_TTL: "60" } });
    try {
      await c.waitForLog(/redis: link up/, "the Redis link");
      const [ann] = await join(a, "calm", "ann");
      const [dan] = await join(c, "calm", "dan");
      assert.equal((await nextMsg(ann)).from, "dan");
      assert.equal((await c.stop()).code, 0);
      assert.equal((await withTimeout(dan.closed, "dan's close")).code, 1001);
      assert.deepEqual(await nextMsg(ann, "dan's leave"), { type: "leave", from: "dan", text: "dan left" });
      await until(async () => (await redis.command("ZRANGE", "wsluad:chat:members:calm", 0, -1)).join() === "ann",
        "dan out of wsluad:chat:members:calm");
      await ann.close();
    } finally {
      await c.stop();
    }
  });

  test("killing a node (SIGKILL) removes its members within the expiry", async () => {
    const [ann] = await join(a, "dead", "ann");
    const [bob] = await join(b, "dead", "bob");
    const [bo] = await join(b, "dead", "bo");
    await nextMsg(ann); // bob joined
    await nextMsg(ann); // bo joined
    const started = Date.now();
    b.proc.kill("SIGKILL");
    assert.equal((await b.exited).signal, "SIGKILL");
    bob.terminate();
    bo.terminate();

    // Node A notices the overdue entries and tells its members; a newcomer no longer sees them.
    const left = [await nextMsg(ann, "bob's or bo's leave"), await nextMsg(ann, "the other leave")];
    assert.deepEqual(left.map((m) => `${m.type} ${m.from}`).sort(), ["leave bo", "leave bob"]);
    const waited = Date.now() - started;
    const [cy, wc] = await join(a, "dead", "cy");
    assert.deepEqual(wc.members, ["ann", "cy"]);
    assert.deepEqual(await redis.command("ZRANGE", "wsluad:chat:members:dead", 0, -1), ["ann", "cy"]);
    // Their names are free again.
    const [bob2, wb] = await join(a, "dead", "bob");
    assert.equal(wb.you, "bob");
    await Promise.all([ann.close(), cy.close(), bob2.close()]);
    console.log(`# the dead node's members left ${waited} ms after the kill (MEMBER_TTL ${MEMBER_TTL} s)`);
  });
});

describe("examples/cluster-chat.lua without --redis", () => {
  test("every join is closed with 1013 and the log says why", async () => {
    const node = await startServer(SCRIPT);
    try {
      const c = await Client.open(`${node.ws}/room/lobby?nick=ann`);
      const closed = await withTimeout(c.closed, "the close");
      assert.deepEqual(closed, { code: 1013, reason: "the chat is unavailable, try again later" });
      await node.waitForLog(/cannot join: .*no Redis/, "the reason in the log");
    } finally {
      assert.equal((await node.stop()).code, 0);
    }
  });
});

// A real redis-server for the Node tests (the twin of tests/integration/redisutil.py): on a free
// port of 127.0.0.1 in a fresh temporary directory, no persistence, always stopped and removed.
//
//   const redis = await startRedis();
//   redis.url                                   // "redis://127.0.0.1:PORT"
//   await redis.command("PUBSUB", "NUMSUB", ch)  // the parsed RESP reply
//   await redis.stop();                          // kills it and removes the directory
//
// Debian's redis-server (scripts/setup --test installs it); never a system service.
import { spawn } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import net from "node:net";
import { tmpdir } from "node:os";
import path from "node:path";
import { TIMEOUT } from "./server.mjs";

const REDIS_SERVER = "/usr/bin/redis-server";
const HOST = "127.0.0.1";

export class RedisError extends Error {}

function encode(args) {
  const parts = [`*${args.length}\r\n`];
  for (const a of args) {
    const b = Buffer.from(String(a));
    parts.push(`$${b.length}\r\n`, b, "\r\n");
  }
  return Buffer.concat(parts.map((p) => (Buffer.isBuffer(p) ? p : Buffer.from(p))));
}

// Parses one RESP2 reply at buf[off..]: [value, next offset], or null when incomplete. Bulk
// strings come back as strings, errors as RedisError values.
function parse(buf, off) {
  const eol = buf.indexOf("\r\n", off);
  if (eol < 0) return null;
  const kind = String.fromCharCode(buf[off]);
  const line = buf.toString("utf8", off + 1, eol);
  const next = eol + 2;
  switch (kind) {
    case "+":
      return [line, next];
    case "-":
      return [new RedisError(line), next];
    case ":":
      return [Number(line), next];
    case "$": {
      const n = Number(line);
      if (n < 0) return [null, next];
      if (buf.length < next + n + 2) return null;
      return [buf.toString("utf8", next, next + n), next + n + 2];
    }
    case "*": {
      const n = Number(line);
      if (n < 0) return [null, next];
      const out = [];
      let at = next;
      for (let i = 0; i < n; i++) {
        const r = parse(buf, at);
        if (!r) return null;
        out.push(r[0]);
        at = r[1];
      }
      return [out, at];
    }
    default:
      throw new Error(`unexpected RESP reply ${JSON.stringify(line)}`);
  }
}

function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.on("error", reject);
    srv.listen(0, HOST, () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

// One command on a connection of its own; resolves with the reply, rejects on an error reply.
function command(port, args) {
  return new Promise((resolve, reject) => {
    const sock = net.createConnection({ host: HOST, port });
    let buf = Buffer.alloc(0);
    const timer = setTimeout(() => {
      sock.destroy();
      reject(new Error(`redis ${args[0]}: no reply within ${TIMEOUT} ms`));
    }, TIMEOUT);
    sock.on("connect", () => sock.write(encode(args)));
    sock.on("data", (chunk) => {
      buf = Buffer.concat([buf, chunk]);
      const r = parse(buf, 0);
      if (!r) return;
      clearTimeout(timer);
      sock.destroy();
      if (r[0] instanceof RedisError) reject(r[0]);
      else resolve(r[0]);
    });
    sock.on("error", (err) => {
      clearTimeout(timer);
      reject(err);
    });
  });
}

export async function startRedis() {
  if (!existsSync(REDIS_SERVER))
    throw new Error(`${REDIS_SERVER} is missing: scripts/setup --test installs Debian's redis-server`);
  const dir = mkdtempSync(path.join(tmpdir(), "wsluad-redis-"));
  const logPath = path.join(dir, "redis.log");
  const log = () => (existsSync(logPath) ? readFileSync(logPath, "utf8") : "");
  // A free port can be taken by someone else before redis binds it: try a few.
  for (let attempt = 0; attempt < 5; attempt++) {
    const port = await freePort();
    const proc = spawn(
      REDIS_SERVER,
      ["--port", String(port), "--bind", HOST, "--save", "", "--appendonly", "no", "--dir", dir,
       "--daemonize", "no", "--logfile", logPath, "--protected-mode", "yes"],
      { stdio: "ignore" },
    );
    const exited = new Promise((resolve) => proc.on("exit", resolve));
    let gone = false;
    exited.then(() => (gone = true));
    const deadline = Date.now() + TIMEOUT;
    let ready = false;
    while (!gone && Date.now() < deadline) {
      try {
        if ((await command(port, ["PING"])) === "PONG") {
          ready = true;
          break;
        }
      } catch {
        // not listening yet
      }
      await Promise.race([exited, new Promise((r) => setTimeout(r, 20))]); // poll, or it died
    }
    const redis = {
      port,
      url: `redis://${HOST}:${port}`,
      log,
      command: (...args) => command(port, args),
      async stop() {
        if (!gone) {
          proc.kill("SIGKILL");
          await exited;
        }
        rmSync(dir, { recursive: true, force: true });
      },
    };
    if (ready) return redis;
    if (!gone) {
      proc.kill("SIGKILL");
      await exited;
    }
  }
  const text = log();
  rmSync(dir, { recursive: true, force: true });
  throw new Error(`redis-server did not start:\n${text}`);
}

// Polls an async condition until it holds (a failure guard, not a wait): resolves with its
// truthy value, rejects after ms naming `what`.
export async function until(cond, what, ms = TIMEOUT) {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await cond();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

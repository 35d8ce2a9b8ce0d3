// Shared by the Node tests: start the real wsluad binary on a free port (synchronised on its
// "listening on" log line, never on a sleep), and a ws client whose messages can be awaited in
// order.
import assert from "node:assert/strict";
import { execFileSync, spawn } from "node:child_process";
import { once } from "node:events";
import { mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import WebSocket from "ws";

export const BIN = process.env.WSLUAD_BIN;
export const SRC = process.env.WSLUAD_SRC;
if (!BIN || !SRC) throw new Error("WSLUAD_BIN and WSLUAD_SRC must be set (ctest sets them)");

// Failure guard only: nothing waits this long when things work.
export const TIMEOUT = 10000;

export function src(...parts) {
  return path.join(SRC, ...parts);
}

// Rejects with `what` after ms, so a missing event fails the test instead of hanging it.
export function withTimeout(promise, what, ms = TIMEOUT) {
  let timer;
  const guard = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
  });
  return Promise.race([promise, guard]).finally(() => clearTimeout(timer));
}

// A root CA and a server certificate it signs for 127.0.0.1 and localhost, made with the real
// openssl command in a new temporary directory: { dir, root, cert, key, ca } (ca: the root's
// PEM, for a client's `ca` option).
export function makePki() {
  const dir = mkdtempSync(path.join(tmpdir(), "wsluad-pki-"));
  const run = (...args) => execFileSync("openssl", args, { cwd: dir, stdio: ["ignore", "ignore", "pipe"] });
  const ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"];
  run("req", "-x509", ...ec, "-keyout", "root.key", "-out", "root.pem", "-days", "3",
      "-subj", "/CN=wsluad node test root", "-addext", "basicConstraints=critical,CA:TRUE",
      "-addext", "keyUsage=critical,keyCertSign,cRLSign");
  run("req", "-new", ...ec, "-keyout", "key.pem", "-out", "server.csr", "-subj", "/CN=127.0.0.1");
  writeFileSync(path.join(dir, "server.ext"), "basicConstraints=critical,CA:FALSE\n" +
      "keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n" +
      "subjectAltName=IP:127.0.0.1,DNS:localhost\n");
  run("x509", "-req", "-in", "server.csr", "-CA", "root.pem", "-CAkey", "root.key",
      "-set_serial", "7", "-days", "2", "-extfile", "server.ext", "-out", "cert.pem");
  const root = path.join(dir, "root.pem");
  return { dir, root, cert: path.join(dir, "cert.pem"), key: path.join(dir, "key.pem"),
           ca: readFileSync(root) };
}

// Starts `wsluad -l LISTEN ...args SCRIPT` in the source tree and resolves once it logs
// "listening on 127.0.0.1:PORT". The returned object has port, ws (base ws:// URL), http,
// log() (all stderr so far), waitForLog(regex) and stop(). `env` adds environment variables. With
// tls (from makePki) it also listens with TLS: tlsPort, wss and https.
export async function startServer(script, args = [], { listen = "127.0.0.1:0", env = {}, tls } = {}) {
  const tlsArgs = tls
    ? ["--tls-listen", "127.0.0.1:0", "--tls-cert", tls.cert, "--tls-key", tls.key]
    : [];
  const proc = spawn(BIN, ["-l", listen, ...tlsArgs, ...args, script], {
    cwd: SRC,
    env: { ...process.env, ...env },
    stdio: ["ignore", "ignore", "pipe"],
  });
  let stderr = "";
  const watchers = new Set();
  const exited = new Promise((resolve) => proc.on("exit", (code, signal) => resolve({ code, signal })));
  proc.stderr.setEncoding("utf8");
  proc.stderr.on("data", (chunk) => {
    stderr += chunk;
    if (process.env.WSLUAD_TEST_VERBOSE) process.stderr.write(chunk);
    for (const w of watchers) w();
  });

  const server = {
    proc,
    exited,
    port: 0,
    log: () => stderr,
    // Resolves with the first match of re in stderr (past or future).
    waitForLog(re, what = String(re)) {
      return withTimeout(
        new Promise((resolve, reject) => {
          const check = () => {
            const m = stderr.match(re);
            if (m) {
              watchers.delete(check);
              resolve(m);
            }
          };
          watchers.add(check);
          check();
          exited.then(({ code, signal }) => {
            if (watchers.delete(check))
              reject(new Error(`wsluad exited (${code ?? signal}) before logging ${what}`));
          });
        }),
        `${what} in wsluad's log`,
      ).catch((err) => {
        throw new Error(`${err.message}\n--- wsluad stderr ---\n${stderr}`);
      });
    },
    // SIGTERM, then the exit status; SIGKILL only if the graceful shutdown hangs.
    async stop() {
      if (proc.exitCode === null && proc.signalCode === null) {
        proc.kill("SIGTERM");
        const guard = setTimeout(() => proc.kill("SIGKILL"), TIMEOUT);
        const result = await exited;
        clearTimeout(guard);
        return result;
      }
      return exited;
    },
  };
  const m = await server.waitForLog(/listening on 127\.0\.0\.1:(\d+)/, '"listening on"').catch(
    async (err) => {
      proc.kill("SIGKILL");
      throw err;
    },
  );
  server.port = Number(m[1]);
  server.ws = `ws://127.0.0.1:${server.port}`;
  server.http = `http://127.0.0.1:${server.port}`;
  if (tls) {
    server.tlsPort = Number(m.input.match(/127\.0\.0\.1:(\d+) \(TLS\)/)[1]);
    server.wss = `wss://127.0.0.1:${server.tlsPort}`;
    server.https = `https://127.0.0.1:${server.tlsPort}`;
  }
  return server;
}

// A ws client with an ordered inbox: next() resolves with the next message as
// { data: string|Buffer, binary }. closed resolves with { code, reason }.
export class Client {
  constructor(url, options = {}) {
    this.inbox = [];
    this.waiters = [];
    this.ws = new WebSocket(url, options);
    this.ws.on("message", (data, isBinary) => {
      const msg = { data: isBinary ? data : data.toString("utf8"), binary: isBinary };
      const w = this.waiters.shift();
      if (w) w(msg);
      else this.inbox.push(msg);
    });
    this.ws.on("error", () => {}); // surfaced through `opened`/`closed` instead
    this.closed = new Promise((resolve) =>
      this.ws.on("close", (code, reason) => resolve({ code, reason: reason.toString() })),
    );
    // Resolves on open; rejects with err.status set when the upgrade is refused.
    this.opened = new Promise((resolve, reject) => {
      this.ws.once("open", resolve);
      this.ws.once("unexpected-response", (req, res) => {
        let body = "";
        res.setEncoding("utf8");
        res.on("data", (c) => (body += c));
        res.on("end", () => {
          const err = new Error(`upgrade refused: ${res.statusCode} ${body}`);
          err.status = res.statusCode;
          err.body = body;
          reject(err);
          req.destroy();
        });
      });
      this.ws.once("error", reject);
      this.ws.once("close", () => reject(new Error("closed before opening")));
    });
    this.opened.catch(() => {});
  }

  static async open(url, options) {
    const c = new Client(url, options);
    await withTimeout(c.opened, `the connection to ${url}`);
    return c;
  }

  next(what = "a message") {
    const queued = this.inbox.shift();
    if (queued) return Promise.resolve(queued);
    let waiter;
    const p = new Promise((resolve) => {
      waiter = resolve;
      this.waiters.push(resolve);
    });
    return withTimeout(p, what).catch((err) => {
      this.waiters = this.waiters.filter((w) => w !== waiter);
      throw err;
    });
  }

  async nextText(what) {
    const m = await this.next(what);
    if (m.binary) throw new Error(`expected text, got ${m.data.length} binary bytes`);
    return m.data;
  }

  async nextJSON(what) {
    return JSON.parse(await this.nextText(what));
  }

  send(data, options) {
    return new Promise((resolve, reject) =>
      this.ws.send(data, options ?? {}, (err) => (err ? reject(err) : resolve())),
    );
  }

  async close(code, reason) {
    if (this.ws.readyState === WebSocket.OPEN) this.ws.close(code, reason);
    return withTimeout(this.closed, "the close handshake");
  }

  terminate() {
    this.ws.terminate();
  }
}

// Waits for one event, with the failure guard.
export function event(emitter, name, what = name) {
  return withTimeout(once(emitter, name), what);
}

// The next message of the chat examples (rooms.lua, cluster-chat.lua): every one is a JSON object
// with type, from and text.
export async function nextChatMsg(c, what) {
  const m = await c.nextJSON(what);
  assert.equal(typeof m.type, "string");
  assert.ok("from" in m, "has from");
  assert.equal(typeof m.text, "string");
  return m;
}

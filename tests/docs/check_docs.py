#!/usr/bin/python3
"""Keeps the documentation true to the program.

    check_docs.py agreement    --help, the man page's OPTIONS, README.md and the real parser agree
    check_docs.py man_lint     groff -man -ww -z and mandoc -Tlint report nothing
    check_docs.py man_example  the man page's EXAMPLES holds lua/chat.lua verbatim
    check_docs.py man_api      every handler, conn method and field, req method and field,
                               ws function and field, timer method, ws.options key and
                               on_upgrade req field that the Lua binding defines is
                               documented in the man page
    check_docs.py print_example   prints lua/chat.lua as roff, to paste into EXAMPLES

Environment: WSLUAD_BIN (the built wsluad), WSLUAD_SRC (the source tree).
Each check prints what disagrees and exits 1; 0 when everything agrees.
"""

import difflib
import os
import re
import shutil
import subprocess
import sys
import tempfile

SRC = os.environ.get("WSLUAD_SRC") or os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
MAN = os.path.join(SRC, "man", "wsluad.1")
CHAT = os.path.join(SRC, "lua", "chat.lua")
# The Lua binding: the core and one file per Lua type.
BINDING = [os.path.join(SRC, "src", f)
           for f in ("script.c", "lconn.c", "lrequest.c", "lws.c", "ltimer.c", "lspawn.c",
                     "lredis.c", "lmetric.c")]

failures = []


def fail(msg):
    failures.append(msg)
    print("FAIL: " + msg)


def binary():
    b = os.environ.get("WSLUAD_BIN")
    if not b or not os.access(b, os.X_OK):
        sys.exit("WSLUAD_BIN must name the built wsluad binary (got %r)" % b)
    return b


def run(args, cwd=None):
    p = subprocess.run(args, cwd=cwd, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                       timeout=30)
    return p.returncode, p.stdout, p.stderr


# ---- roff ------------------------------------------------------------------------------------

ESCAPES = {
    r"\-": "-", r"\e": "\\", r"\(rs": "\\", r"\(aq": "'", r"\(dq": '"', r"\(ga": "`",
    r"\(ti": "~", r"\(ha": "^", r"\&": "", r"\ ": " ", r"\(em": "--", r"\(en": "-",
    r"\%": "",
}
ESCAPE_RE = re.compile(r"\\f(?:\(..|\[[^]]*\]|.)|" + "|".join(re.escape(e) for e in ESCAPES))


def unescape(text):
    """roff source -> the characters a reader sees (fonts dropped)."""
    return ESCAPE_RE.sub(lambda m: ESCAPES.get(m.group(0), ""), text)


def man_source():
    with open(MAN, encoding="utf-8") as f:
        return f.read()


def sections(src):
    """{section name: [source lines]} for the .SH sections."""
    out, name = {}, None
    for line in src.splitlines():
        m = re.match(r'\.SH\s+"?([^"]*)"?\s*$', line)
        if m:
            name = m.group(1).strip()
            out[name] = []
        elif name is not None:
            out[name].append(line)
    return out


def section(src, name):
    s = sections(src)
    if name not in s:
        fail("the man page has no %s section" % name)
        return []
    return s[name]


def prose(lines):
    """Readable text of some roff lines: macro names dropped, escapes resolved, one string."""
    words = []
    for line in lines:
        if line.startswith('.\\"'):
            continue
        if line.startswith("."):
            parts = line.split(None, 1)
            line = parts[1] if len(parts) > 1 else ""
            # Alternating-font macros join their arguments; the quotes only group.
            line = line.replace('"', "")
        words.append(unescape(line))
    return "\n".join(words)


def tagged_entries(lines):
    """[(tag line, body lines)] for the .TP entries of some lines (body up to the next .TP)."""
    out = []
    i = 0
    while i < len(lines):
        if lines[i].strip() == ".TP" and i + 1 < len(lines):
            tag = lines[i + 1]
            body = []
            i += 2
            while i < len(lines) and lines[i].strip() != ".TP" and not lines[i].startswith(".SS"):
                body.append(lines[i])
                i += 1
            out.append((tag, body))
        else:
            i += 1
    return out


# ---- --help ---------------------------------------------------------------------------------

# "  -l, --listen HOST:PORT       text" or "      --reload     text"; a long metavar may leave
# one space only before the text, which starts in lower case.
HELP_OPT = re.compile(r"^\s{2,}(?:-(\w), )?\s*--([a-z][a-z-]*)(?: ([A-Z][A-Z:]*))?\s+([a-z(].*)$")


def help_options(text):
    """{long: {"short", "metavar", "desc"}} from the usage text."""
    opts, last = {}, None
    for line in text.splitlines():
        m = HELP_OPT.match(line)
        if m:
            short, long_, metavar, desc = m.groups()
            opts[long_] = {"short": short, "metavar": metavar, "desc": desc}
            last = long_
        elif last and line.startswith(" " * 20) and line.strip():
            opts[last]["desc"] += " " + line.strip()
        else:
            last = None
    return opts


def man_options(src):
    """{long: {"short", "has_arg", "body"}} from the man page's OPTIONS section."""
    opts = {}
    for tag, body in tagged_entries(section(src, "OPTIONS")):
        t = prose([tag]).strip()
        m = re.match(r"^(?:-(\w), )?--([a-z][a-z-]*)(?: (\S+))?$", t)
        if not m:
            fail("OPTIONS: cannot read the entry %r (want '-x, --name value' or '--name')" % t)
            continue
        short, long_, arg = m.groups()
        if long_ in opts:
            fail("OPTIONS: --%s is described twice" % long_)
        opts[long_] = {"short": short, "has_arg": arg is not None, "body": prose(body)}
    return opts


# A value each kind of argument accepts, and one it must refuse.
GOOD_VALUE = {"HOST:PORT": "127.0.0.1:0", "BYTES": "64K", "N": "100", "SEC": "0.5",
              "URL": "redis://127.0.0.1:6379", "NAME": "test", "FORMAT": "json",
              "CIDRS": "127.0.0.1/32,::1"}
# Options for which the value of their kind is wrong: more than one worker needs --redis.
GOOD_OPTION_VALUE = {"workers": "1"}
# Options that work only together (the TLS ones; --deflate-min with --deflate): each is tried
# with the others; the files are a pair made with openssl for the check (see tls_pair).
COMPANIONS = {"tls-listen": ["--tls-cert", "{cert}", "--tls-key", "{key}"],
              "tls-cert": ["--tls-listen", "127.0.0.1:0", "--tls-key", "{key}"],
              "tls-key": ["--tls-listen", "127.0.0.1:0", "--tls-cert", "{cert}"],
              "deflate-min": ["--deflate"]}


def tls_pair(d):
    """A self-signed certificate and its key in d, as README shows how to make them."""
    cert, key = os.path.join(d, "cert.pem"), os.path.join(d, "key.pem")
    code, out, err = run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                          "ec_paramgen_curve:P-256", "-nodes", "-keyout", key, "-out", cert,
                          "-days", "2", "-subj", "/CN=localhost"])
    if code != 0:
        fail("openssl could not make a certificate for the TLS options: " + err)
    return cert, key
BAD_VALUE = "bogus"
BAD_KIND_VALUE = {"NAME": "two words"}  # "bogus" is a fine name


def check_agreement():
    b = binary()
    code, out, err = run([b, "--help"])
    if code != 0:
        fail("wsluad --help exited %d: %s" % (code, err))
        return
    helpopts = help_options(out)
    if len(helpopts) < 5:
        fail("could not read the options of --help:\n" + out)
        return
    src = man_source()
    manopts = man_options(src)

    for name in sorted(set(helpopts) - set(manopts)):
        fail("--%s is in --help but not in the man page's OPTIONS" % name)
    for name in sorted(set(manopts) - set(helpopts)):
        fail("--%s is in the man page's OPTIONS but not in --help" % name)
    for name in sorted(set(helpopts) & set(manopts)):
        h, m = helpopts[name], manopts[name]
        if h["short"] != m["short"]:
            fail("--%s: short option -%s in --help, -%s in the man page" %
                 (name, h["short"], m["short"]))
        if bool(h["metavar"]) != m["has_arg"]:
            fail("--%s: --help and the man page disagree on whether it takes a value" % name)
        for default in re.findall(r"\(default ([^;)\s]+)", h["desc"]):
            if default not in m["body"]:
                fail("--%s: --help says the default is %s; the man page does not say %s" %
                     (name, default, default))

    # The README names every option, and a limit's row in its table gives the same default.
    with open(os.path.join(SRC, "README.md"), encoding="utf-8") as f:
        readme = f.read()
    for name, h in sorted(helpopts.items()):
        if "--" + name not in readme:
            fail("--%s is in --help but not in README.md" % name)
        for default in re.findall(r"\(default ([^;)\s]+)", h["desc"]):
            rows = [l for l in readme.splitlines() if l.startswith("| `--%s " % name)]
            if rows and not any("| %s |" % default in r for r in rows):
                fail("--%s: --help says the default is %s; README.md's table says otherwise" %
                     (name, default))

    # Every option of --help is accepted by the parser, in each spelling.
    with tempfile.TemporaryDirectory() as cwd:
        script = CHAT
        good = dict(GOOD_VALUE, DIR=os.path.join(SRC, "examples", "www"))
        cert, key = tls_pair(cwd)
        option_value = dict(GOOD_OPTION_VALUE, **{"tls-cert": cert, "tls-key": key})
        for name, h in sorted(helpopts.items()):
            spellings = ["--" + name] + (["-" + h["short"]] if h["short"] else [])
            for opt in spellings:
                if name in ("help", "version"):
                    code, out, err = run([b, opt], cwd=cwd)
                    want = "Usage: wsluad" if name == "help" else "wsluad "
                    if code != 0 or not out.startswith(want):
                        fail("%s: exit %d, output %r" % (opt, code, out[:60]))
                    continue
                if h["metavar"]:
                    if h["metavar"] not in good and name not in option_value:
                        fail("%s %s: this test knows no value for %s; add one to GOOD_VALUE" %
                             (opt, h["metavar"], h["metavar"]))
                        continue
                    args = [opt, option_value.get(name) or good[h["metavar"]]]
                else:
                    args = [opt]
                others = [a.format(cert=cert, key=key) for a in COMPANIONS.get(name, [])]
                args = others + args
                code, out, err = run([b, "--check"] + args + [script], cwd=cwd)
                if code != 0:
                    fail("wsluad --check %s %s: exit %d, stderr %r" %
                         (" ".join(args), script, code, err))
                if h["metavar"]:
                    bad_value = BAD_KIND_VALUE.get(h["metavar"], BAD_VALUE)
                    code, out, err = run([b, "--check"] + others + [opt, bad_value, script],
                                         cwd=cwd)
                    if code != 2:
                        fail("wsluad --check %s %s: exit %d, want 2 (usage error)" %
                             (opt, bad_value, code))
                    code, out, err = run([b, opt], cwd=cwd)
                    if code != 2:
                        fail("wsluad %s without its value: exit %d, want 2" % (opt, code))
        code, out, err = run([b, "--check", "--no-such-option", script], cwd=cwd)
        if code != 2 or "--no-such-option" not in err:
            fail("an unknown option: exit %d, stderr %r (want 2, naming it)" % (code, err))
        code, out, err = run([b, "--check", script, script], cwd=cwd)
        if code != 2:
            fail("two scripts: exit %d, want 2" % code)

    # The exit statuses --help lists are the ones the man page lists.
    m = re.search(r"Exit status: (.*)", out_of_help(b))
    help_codes = set(re.findall(r"(\d) [a-z]", m.group(1))) if m else set()
    man_codes = {prose([tag]).strip() for tag, _ in tagged_entries(section(src, "EXIT STATUS"))}
    if not help_codes or help_codes != man_codes:
        fail("exit statuses: --help lists %s, the man page %s" %
             (sorted(help_codes), sorted(man_codes)))


def out_of_help(b):
    return run([b, "--help"])[1]


# ---- lint -----------------------------------------------------------------------------------

def check_man_lint():
    tools = [
        (["groff", "-man", "-ww", "-z", MAN], "groff-base"),
        (["mandoc", "-Tlint", MAN], "mandoc"),
    ]
    for cmd, package in tools:
        if not shutil.which(cmd[0]):
            fail("%s is not installed (Debian package %s; scripts/setup --test installs it)" %
                 (cmd[0], package))
            continue
        code, out, err = run(cmd)
        if code != 0 or out.strip() or err.strip():
            fail("%s: exit %d\n%s%s" % (" ".join(cmd), code, out, err))
    # It renders, with every section, as `man` would show it.
    if shutil.which("groff"):
        code, out, err = run(["groff", "-man", "-Tutf8", "-ww", MAN])
        if code != 0 or err.strip():
            fail("groff -man -Tutf8: exit %d\n%s" % (code, err))
        text = re.sub(r".\x08", "", out)
        for name in sections(man_source()):
            if name not in text:
                fail("the rendered page lacks the section %s" % name)


# ---- EXAMPLES holds chat.lua ------------------------------------------------------------------

def example_blocks(lines):
    blocks, cur = [], None
    for line in lines:
        if line.strip() == ".EX":
            cur = []
        elif line.strip() == ".EE" and cur is not None:
            blocks.append("\n".join(unescape(l) for l in cur))
            cur = None
        elif cur is not None:
            cur.append(line)
    return blocks


def to_roff(text):
    out = []
    for line in text.rstrip("\n").split("\n"):
        line = line.replace("\\", r"\e").replace("-", r"\-").replace("'", r"\(aq")
        line = line.replace("`", r"\(ga")
        if line == "" or line[0] in ".'":
            line = r"\&" + line
        out.append(line)
    return "\n".join(out)


def check_man_example():
    with open(CHAT, encoding="utf-8") as f:
        chat = f.read().rstrip("\n")
    blocks = example_blocks(section(man_source(), "EXAMPLES"))
    if chat in blocks:
        return
    best = max(blocks, key=lambda b: difflib.SequenceMatcher(None, b, chat).ratio(),
               default="")
    diff = "\n".join(difflib.unified_diff(best.split("\n"), chat.split("\n"),
                                          "man page EXAMPLES", "lua/chat.lua", lineterm=""))
    fail("the man page's EXAMPLES does not hold lua/chat.lua verbatim "
         "(tests/docs/check_docs.py print_example prints it as roff):\n" + diff)


# ---- the Lua API of the Lua binding is documented --------------------------------------------

def function_body(c, name):
    m = re.search(r"^(?:static )?[^\n]*\b%s\([^)]*\)\n\{\n(.*?)^\}" % re.escape(name), c,
                  re.MULTILINE | re.DOTALL)
    if not m:
        fail("the Lua binding: cannot find the function %s (update tests/docs/check_docs.py)" %
             name)
        return ""
    return m.group(1)


def setfields(body):
    return [f for f in re.findall(r'lua_setfield\(L, -\d+, "(\w+)"\)', body)
            if not f.startswith("__")]


def check_man_api():
    c = ""
    for path in BINDING:
        with open(path, encoding="utf-8") as f:
            c += f.read()
    src = man_source()
    docs = {
        "LUA HANDLERS": prose(section(src, "LUA HANDLERS")),
        "CONNECTION OBJECT": prose(section(src, "CONNECTION OBJECT")),
        "REQUEST OBJECT": prose(section(src, "REQUEST OBJECT")),
        "THE WS MODULE": prose(section(src, "THE WS MODULE")),
    }
    want = []  # (what the man page must contain, in which section, where it came from)

    # luaL_Reg tables: the functions scripts call.
    prefixes = {"conn_methods": ("conn:", "CONNECTION OBJECT"), "fns": ("ws.", "THE WS MODULE"),
                "req_methods": ("req:", "REQUEST OBJECT"),
                "logs": ("ws.log.", "THE WS MODULE"),
                "timer_methods": ("handle:", "THE WS MODULE"),
                "metric_fns": ("ws.metric.", "THE WS MODULE"),
                "counter_methods": ("counter:", "THE WS MODULE"),
                "gauge_methods": ("gauge:", "THE WS MODULE")}
    tables = re.findall(r"luaL_Reg (\w+)\[\] = \{(.*?)\};", c, re.DOTALL)
    if not tables:
        fail("the Lua binding: no luaL_Reg tables found")
    for table, body in tables:
        if table not in prefixes:
            fail("the Lua binding: luaL_Reg %s is new: tell tests/docs/check_docs.py how scripts "
                 "reach its functions" % table)
            continue
        prefix, sec = prefixes[table]
        for fn in re.findall(r'\{"(\w+)",\s*\w+\}', body):
            want.append((prefix + fn + "(", sec, "luaL_Reg " + table))

    # Handlers the server calls.
    # (metrics.c names them for the handler metrics, "timer" included, which is no handler.)
    m = re.search(r"wsl_handler_names\[\w*\] = \{(.*?)\};",
                  open(os.path.join(SRC, "src", "metrics.c"), encoding="utf-8").read(), re.DOTALL)
    names = [n for n in re.findall(r'"(\w+)"', m.group(1)) if n.startswith("on_")] if m else []
    if not names:
        fail("src/metrics.c: cannot find wsl_handler_names[]")
    for h in names:
        want.append((h + "(", "LUA HANDLERS", "handler_names"))

    # Fields: conn.x, ws.x, ws.options keys, on_upgrade's req fields.
    conn_fields = set(re.findall(r'strcmp\(k, "(\w+)"\)', function_body(c, "conn_index")) +
                      re.findall(r'\{"(\w+)", WSL_INFO_', c))
    for fld in sorted(conn_fields):
        want.append(("conn." + fld, "CONNECTION OBJECT", "conn_index"))
    for fn in ("wsl_lws_open", "wsl_ltimer_register", "wsl_lspawn_register",
               "wsl_lredis_register", "wsl_lmetric_register"):
        for fld in setfields(function_body(c, fn)):
            want.append(("ws." + fld, "THE WS MODULE", fn))
    for fld in re.findall(r'strcmp\(k, "(\w+)"\)', function_body(c, "ws_index")):
        want.append(("ws." + fld, "THE WS MODULE", "ws_index"))
    opts = function_body(c, "push_options")
    for key in setfields(opts) + re.findall(r'set_(?:integer|number)\(L, "(\w+)"', opts):
        want.append((key, "THE WS MODULE", "push_options (ws.options)"))
    for fld in setfields(function_body(c, "push_request")):
        want.append((fld, "LUA HANDLERS", "upgrade_body (on_upgrade's req)"))
    for fld in setfields(function_body(c, "wsl_lrequest_push")):
        want.append(("req." + fld, "REQUEST OBJECT", "wsl_lrequest_push (on_request's req)"))

    for text, sec, origin in want:
        found = (re.search(r"\b%s" % re.escape(text), docs[sec]) if text[0].isalnum()
                 else text in docs[sec])
        if not found:
            fail("%s (from %s in the Lua binding) is not documented in the man page's %s" %
                 (text.rstrip("("), origin, sec))
    if len(want) < 30:
        fail("found only %d API items in the Lua binding: the parsing is broken" % len(want))


CHECKS = {"agreement": check_agreement, "man_lint": check_man_lint,
          "man_example": check_man_example, "man_api": check_man_api}


def main():
    if len(sys.argv) != 2 or sys.argv[1] not in list(CHECKS) + ["print_example"]:
        sys.exit("usage: check_docs.py " + "|".join(list(CHECKS) + ["print_example"]))
    if sys.argv[1] == "print_example":
        with open(CHAT, encoding="utf-8") as f:
            print(to_roff(f.read()))
        return
    CHECKS[sys.argv[1]]()
    if failures:
        print("%d disagreement(s) between the docs and the program" % len(failures))
        sys.exit(1)
    print("ok")


if __name__ == "__main__":
    main()

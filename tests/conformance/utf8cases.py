"""The UTF-8 test sequences of Autobahn cases 6.5.x to 6.23.x, generated here.

They follow Markus Kuhn's UTF-8 decoder stress test (sections 1 to 5), grouped and numbered as
the Autobahn fuzzingclient numbers them, so a failure here names the same case as an Autobahn
report would. Also: an incremental validator that says at which byte a sequence first becomes
impossible, for the fail-fast tests.
"""

# The Greek word "kosme", used by Kuhn's file and by several 6.x cases.
KOSME = bytes.fromhex("cebae1bdb9cf83cebcceb5")


def is_valid(b):
    try:
        bytes(b).decode("utf-8")  # Python's codec is strict: no surrogates, overlongs, > U+10FFFF
        return True
    except UnicodeDecodeError:
        return False


# Allowed range of the 2nd byte after each lead byte (RFC 3629 table); later bytes are 80..BF.
def _second_range(lead):
    if lead == 0xE0:
        return 0xA0, 0xBF
    if lead == 0xED:
        return 0x80, 0x9F
    if lead == 0xF0:
        return 0x90, 0xBF
    if lead == 0xF4:
        return 0x80, 0x8F
    return 0x80, 0xBF


def _seq_len(lead):
    if lead < 0x80:
        return 1
    if 0xC2 <= lead <= 0xDF:
        return 2
    if 0xE0 <= lead <= 0xEF:
        return 3
    if 0xF0 <= lead <= 0xF4:
        return 4
    return 0  # never valid as a lead byte


def first_impossible(b):
    """Index of the byte at which no continuation can make `b` valid UTF-8, or None if every
    prefix can still be completed (b may still be incomplete at its end)."""
    i, n = 0, len(b)
    while i < n:
        lead = b[i]
        ln = _seq_len(lead)
        if ln == 0:
            return i
        for k in range(1, ln):
            if i + k >= n:
                return None
            lo, hi = _second_range(lead) if k == 1 else (0x80, 0xBF)
            if not lo <= b[i + k] <= hi:
                return i + k
        i += ln
    return None


def _groups():
    """[(title, [(valid, bytes), ...]), ...] in Autobahn's order; the first group is 6.5."""
    H = bytes.fromhex
    g = []
    g.append(("Some valid UTF-8 sequences", [
        b"hello\x24world",
        b"hello" + H("c2a2") + b"world",
        b"hello" + H("e282ac") + b"world",
        b"hello" + H("f0a4ada2") + b"world",
        KOSME]))
    g.append(("All prefixes of a valid UTF-8 string that contains multi-byte code points",
              [KOSME[:i] for i in range(1, len(KOSME) + 1)]))
    g.append(("First possible sequence of a certain length",
              [H("00"), H("c280"), H("e0a080"), H("f0908080")]))
    g.append(("First possible sequence length 5/6 (invalid codepoints)",
              [H("f888808080"), H("fc8480808080")]))
    g.append(("Last possible sequence of a certain length",
              [H("7f"), H("dfbf"), H("efbfbf"), H("f48fbfbf")]))
    g.append(("Last possible sequence length 4/5/6 (invalid codepoints)",
              [H("f7bfbfbf"), H("fbbfbfbfbf"), H("fdbfbfbfbfbf")]))
    g.append(("Other boundary conditions",
              [H("ed9fbf"), H("ee8080"), H("efbfbd"), H("f48fbfbf"), H("f4908080")]))
    cont = [H("80"), H("bf"), H("80bf"), H("80bf80"), H("80bf80bf"), H("80bf80bf80"),
            H("80bf80bf80bf"), bytes(range(0x80, 0xBF))]
    g.append(("Unexpected continuation bytes", cont))
    lonely = []
    for lo, hi in [(0xC0, 0xDF), (0xE0, 0xEF), (0xF0, 0xF7), (0xF8, 0xFB), (0xFC, 0xFD)]:
        lonely.append(b"".join(bytes([c, 0x20]) for c in range(lo, hi)))
    g.append(("Lonely start characters", lonely))
    missing = [H("c0"), H("e080"), H("f08080"), H("f8808080"), H("fc80808080"),
               H("df"), H("efbf"), H("f7bfbf"), H("fbbfbfbf"), H("fdbfbfbfbf")]
    g.append(("Sequences with last continuation byte missing", missing))
    g.append(("Concatenation of incomplete sequences", [b"".join(missing)]))
    g.append(("Impossible bytes", [H("fe"), H("ff"), H("fefeffff")]))
    g.append(("Examples of an overlong ASCII character",
              [H("c0af"), H("e080af"), H("f08080af"), H("f8808080af"), H("fc80808080af")]))
    g.append(("Maximum overlong sequences",
              [H("c1bf"), H("e09fbf"), H("f08fbfbf"), H("f887bfbfbf"), H("fc83bfbfbfbf")]))
    g.append(("Overlong representation of the NUL character",
              [H("c080"), H("e08080"), H("f0808080"), H("f880808080"), H("fc8080808080")]))
    singles = [H(x) for x in ("eda080", "edadbf", "edae80", "edafbf", "edb080", "edbe80",
                              "edbfbf")]
    g.append(("Single UTF-16 surrogates", singles))
    highs = [H("eda080"), H("edadbf"), H("edae80"), H("edafbf")]
    lows = [H("edb080"), H("edbfbf")]
    g.append(("Paired UTF-16 surrogates", [h + l for h in highs for l in lows]))
    nonchars = [H("efbfbe"), H("efbfbf")]
    for lead in (0xF0, 0xF1, 0xF2, 0xF3, 0xF4):
        for second in (0x8F, 0x9F, 0xAF, 0xBF):
            if lead == 0xF4 and second != 0x8F:
                continue  # beyond U+10FFFF
            if lead == 0xF0 and second == 0x8F:
                continue  # overlong
            for last in (0xBE, 0xBF):
                nonchars.append(bytes([lead, second, 0xBF, last]))
    g.append(("Non-character code points (valid UTF-8)", nonchars))
    g.append(("Unicode specials (i.e. replacement char)",
              [H(x) for x in ("efbfb9", "efbfba", "efbfbb", "efbfbc", "efbfbd", "efbfbe",
                              "efbfbf")]))
    return g


def cases():
    """[("6_5_1", valid, payload), ...] for every generated 6.x case."""
    out = []
    for gi, (_, seqs) in enumerate(_groups(), start=5):
        for si, s in enumerate(seqs, start=1):
            out.append((f"6_{gi}_{si}", is_valid(s), s))
    return out

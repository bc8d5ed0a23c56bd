"""All injection rules on one value: the patterns (`injection_patterns`), shell commands after a
separator, path traversal to operating-system files, and SSRF targets (`injection_ssrf`).

Word lists come from OWASP CRS (`data/crs/*.data`, Apache-2.0): command names (unix-shell,
windows-powershell-commands), operating-system files (lfi-os-files), metadata hosts (ssrf).
Patterns are only tried when a literal they need is in the value (`injection_engine`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

from detectors.injection_decode import Decoded
from detectors.injection_engine import Hit, LiteralSet, Rule, RuleBook, required_literals
from detectors.injection_patterns import CODE, LFI, SHELL, SQLI, XSS, Rules
from detectors.injection_ssrf import metadata_hosts, ssrf_hits

__all__ = ["DATA_DIR", "Hit", "RuleSet"]

DATA_DIR = Path(__file__).resolve().parent / "data" / "crs"


# Separators after which a word is a new shell command, and what its arguments look like.
_SHELL_WORD = re.compile(
    r"(?P<sep>^|[;`]|&&|\|\||[|&(\n]|\$\(|\{)\s*(?:\$\w+\s+)?(?P<word>[a-z0-9_./+~-]{1,40})(?=[\s;|&<>)`'\"$]|$)(?P<rest>[^;\n|&`]{0,120})"
)
# What the shell itself reads in a command's arguments (redirection, expansion, globbing), and what
# only looks like a command line (options, paths, URLs, addresses), which prose and searches have.
_SHELL_SYNTAX = re.compile(r"(?<![-=<>])[<>]|\$\w|\$\{|\*")
_SHELL_ARGS = re.compile(
    _SHELL_SYNTAX.pattern
    + r"|(?:^|\s)-{1,2}[a-z]|(?:^|\s)/[a-z.]|://|\b\d{1,3}(?:\.\d{1,3}){3}\b|\\\\|\b[a-z]:[\\\\/]"
)
# Words that are shell commands AND ordinary English (or common abbreviations): after a separator
# they need shell-looking arguments to count, at the start of a value they never count alone.
_AMBIGUOUS = frozenset(
    """at as ar cat cc cut date dd df diff dir du echo ed env es ex expand expect file find fmt
    fold go hash head id install ip jobs join kill last less link local look mail make man more
    mount net nice nl od pass paste patch pg pic pr ps ptx rake rc red rename replace rev route
    run script sed set sg shuf sleep sort source split ss su tail tar tee test time top touch
    type watch wc who write yes zip crash fetch column comm cancel dialog genie highlight perf
    screen service shred pico bundler batch command whois arch basename column links nc alpine
    ash bridge cargo chef compress cron dash eb exec fish gem get gimp git hd java knife latex lp
    lua nano node octave pax pdb perl pf php pip pkg post pry puppet python raku rar reboot reg
    ruby sash sc sched shutdown snap strings task tex tic trap ul unlink unset view vi w wall wish
    yelp yarn docker emacs vim view tbl yum lynx mutt volatility finger dig locate grep ping
    telnet htop tmux atom chmod""".split()
)
# Prefixes that run the next word as a command.
_PREFIXES = frozenset("time sudo nohup env nice timeout xargs exec command builtin doas".split())
# Windows programs often used after an injection (the CRS list covers PowerShell cmdlets).
_WINDOWS = frozenset(
    """cmd whoami ipconfig systeminfo tasklist taskkill netstat reg certutil bitsadmin wmic mshta
    rundll32 regsvr32 cscript wscript schtasks nslookup bcdedit bcdboot vssadmin wevtutil
    icacls takeown attrib cacls net1 sc nltest dsquery csvde ntdsutil msiexec forfiles
    iex iwr irm gwmi iwmi saps sajb gci gc icm ipmo sal nal gcm gps spps sls ni ri
    dir del copy move ren md rd cls start echo type set regedit netsh mmc msconfig""".split()
)


def _book(kind: str, rules: Rules) -> list[Rule]:
    out = []
    for label, strength, pattern, *given in rules:
        literals = frozenset(given[0]) if given else required_literals(pattern)
        out.append(Rule(kind, label, strength, re.compile(pattern), literals))
    return out


def _data_lines(path: Path) -> list[str]:
    lines = path.read_text(encoding="utf-8").splitlines()
    return [s.strip() for s in lines if s.strip() and not s.lstrip().startswith("#")]


class RuleSet:
    """All rules, with the CRS word lists from `data_dir` loaded once.

    >>> from detectors.injection_decode import decode
    >>> rules = RuleSet()
    >>> [(h.kind, h.label) for h in rules.scan(decode("1 UNION SELECT null--"))][:1]
    [('sqli', 'UNION SELECT')]
    >>> rules.scan(decode("union station"))
    []
    """

    def __init__(self, data_dir: Path = DATA_DIR, engine: str = "auto") -> None:
        self.text_rules = RuleBook(
            _book("sqli", SQLI) + _book("xss", XSS) + _book("lfi", LFI) + _book("rce", CODE)
        )
        self.shell_rules = RuleBook(_book("rce", SHELL))
        self.literal_set = LiteralSet(
            self.text_rules.literals | self.shell_rules.literals, engine=engine
        )
        commands: set[str] = set()
        prefixes: list[str] = []
        for entry in _data_lines(data_dir / "unix-shell.data"):
            if entry.startswith(("bin/", "sbin/")):
                name = entry.rsplit("/", 1)[1].lower()
                if name.endswith(("-", "_", ".")):
                    prefixes.append(name)  # a family: aa-status, aa-enforce, ...
                else:
                    commands.add(name)
        self.commands = frozenset(commands | _WINDOWS)
        self.command_prefixes = tuple(prefixes)
        self.cmdlets = frozenset(
            e.lower()
            for e in _data_lines(data_dir / "windows-powershell-commands.data")
            if "-" in e
        )
        self.os_files = _OsFiles(_data_lines(data_dir / "lfi-os-files.data"))
        self.metadata_hosts = metadata_hosts(_data_lines(data_dir / "ssrf.data"))

    def scan(
        self, d: Decoded, *, in_path: bool = False, redirect: bool = False, url_param: bool = False
    ) -> list[Hit]:
        """Every rule that matches the decoded value (a query value or name, or the URL path).
        `redirect`: the value is where a browser is sent next (`redirect_uri`, `next`...), where a
        loopback or private address is normal (RFC 8252 loopback redirects for native apps).
        `url_param`: the value is of a parameter known to hold URLs, where an address without a
        scheme may still be fetched (the path always may be)."""
        text = d.text
        hits: list[Hit] = []
        present = self.literal_set.find(text)
        for rule in self.text_rules.candidates(present):
            m = rule.regex.search(text)
            if m is not None:
                hits.append(Hit(rule.kind, rule.label, rule.strength, m.start()))
        shell = d.shell
        if shell != text:
            present = self.literal_set.find(shell)
        for rule in self.shell_rules.candidates(present):
            m = rule.regex.search(shell)
            if m is not None:
                hits.append(Hit(rule.kind, rule.label, rule.strength, m.start()))
        self._commands(d, hits)
        self._traversal(d, hits, in_path=in_path)
        ssrf_hits(
            text, self.metadata_hosts, hits, redirect=redirect, bare=in_path or url_param
        )
        return hits

    # -- shell commands -----------------------------------------------------------------------
    def _is_command(self, word: str) -> bool:
        for name in (word.rsplit("/", 1)[-1], word.split("/", 1)[0]):  # /bin/cat, or cmd/c
            name = name.removesuffix(".exe")
            if name[-1:].isdigit():
                name = _VERSION.sub("", name)  # python3.10 -> python3
            if (
                name in self.commands
                or name in self.cmdlets
                or (name.startswith(self.command_prefixes) and len(name) > 4)
            ):
                return True
        return False

    def _commands(self, d: Decoded, out: list[Hit]) -> None:
        shell = d.shell
        best: Hit | None = None
        for m in _SHELL_WORD.finditer(shell):
            hit = self._command_at(m, shell, d.text)
            if hit is not None and (best is None or hit.strength > best.strength):
                best = hit
        if best is None and "{" in shell:
            best = self._brace_expansion(shell)
        # A command name spelled with quotes or backslashes a shell would drop (w'h'o'am'i): no
        # one writes a word that way but to slip it past a filter.
        if best is None and shell != d.text:
            words = set(_WORD.findall(d.text))
            for word in _WORD.findall(shell):
                if word not in words and self._is_command(word):
                    best = Hit("rce", "command name split by quotes", 0.65, 0)
                    break
        if best is not None:
            out.append(best)

    def _command_at(self, m: re.Match[str], shell: str, text: str) -> Hit | None:
        """How sure a command word after a separator (or at the start) makes us."""
        sep, word, rest = m.group("sep"), m.group("word"), m.group("rest")
        prefixed = word in _PREFIXES and bool(rest.strip())
        if prefixed:  # time sh -c ..., sudo id: the prefix runs the next word
            inner = rest.split(None, 1)
            word, rest = inner[0], (" " + inner[1] if len(inner) > 1 else "")
        if not self._is_command(word):
            return None
        ambiguous = word in _AMBIGUOUS
        shellish = _SHELL_ARGS.search(rest) is not None
        # The command right after the separator, or behind an (empty) variable: ;id, ;$a id
        between = shell[m.end("sep") : m.start("word")].replace(" ", "")
        glued = m.end("sep") == m.start("word") or between.startswith("$")
        label = "command after a separator"
        if sep == "":  # the value starts with the command
            ends = m.end() < len(shell) and shell[m.end()] in ";|&"
            if ambiguous:
                # "ping 127.0.0.1", "find . -name x": nothing but a program run on the whole value
                # would execute it; only syntax that the shell reads makes it a command line.
                # Characters a shell drops in or right after the word (ping``, p'i'ng, ping$())
                # are shell syntax themselves; an apostrophe later on ("aren't") is not.
                end = m.end("word") + 1
                evasive = text[:end] != shell[:end]
                if not evasive and _SHELL_SYNTAX.search(rest) is None:
                    return None
                strength, label = 0.4, "command with shell syntax"
            elif shellish:
                strength, label = 0.5, "command with shell arguments"
            elif rest.strip() or prefixed or ends:
                strength, label = 0.4, "command with arguments"
            else:
                return None
        elif sep in "&(\n":  # also prose: "Tom & Jerry", a line break in a text
            if ambiguous and not shellish:
                return None
            strength = 0.8 if shellish else 0.7 if glued else 0.5
        elif sep == "{":
            if ambiguous and not shellish:
                return None
            strength, label = 0.5, "command in a brace group"
        else:  # ; | || && ` $(
            if ambiguous and not shellish and not glued:
                return None
            strength = 0.85 if shellish or not ambiguous else 0.6
        return Hit("rce", label, strength, m.start("word"))

    def _brace_expansion(self, shell: str) -> Hit | None:
        """Brace expansion builds a command line: {cat,/etc/passwd}, {,ip,a}, c{a,oun}t."""
        for m in _BRACES.finditer(shell):
            before, group, after = m.group(1), m.group(2), m.group(3)
            alternatives = [a.strip("'\"") for a in group.split(",")]
            if before or after:  # inside a word: some spelling of it must be a command
                words = [before + a + after for a in alternatives]
                if any(self._is_command(w) for w in words):
                    return Hit("rce", "command in a brace expansion", 0.75, m.start())
                continue
            words = [w for w in alternatives if w]
            if not words or not self._is_command(words[0]):
                continue
            # {id,name} may be a field list; {,id} or {id,} or {cat,/etc/passwd} is a shell's.
            shell_only = len(words) < len(alternatives) or any(w[:1] in "-/#$" for w in words[1:])
            if words[0] not in _AMBIGUOUS or shell_only:
                return Hit("rce", "command in a brace expansion", 0.75, m.start())
        return None

    def os_file(self, value: str) -> Hit | None:
        """The OS-file check alone, for a plain value such as `.bash_history` or `web.config`."""
        found = self.os_files.find(value.lower())
        if found is None:
            return None
        return Hit("lfi", f"operating-system file {found}", _BARE_FILE, 0)

    # -- traversal --------------------------------------------------------------------------
    def _traversal(self, d: Decoded, out: list[Hit], *, in_path: bool) -> None:
        text = d.text
        if "/" not in text and "\\" not in text and "." not in text:
            return
        unified = text.replace("\\", "/")
        ups = len(_UP.findall(unified))
        os_file = self.os_files.find(unified)
        if ups:
            if os_file is not None:
                out.append(Hit("lfi", f"traversal to {os_file}", 0.95, 0))
            else:
                strength = (
                    (0.5 if ups == 1 else 0.8) if in_path else (0.35, 0.6, 0.8)[min(ups, 3) - 1]
                )
                out.append(
                    Hit("lfi", f"path traversal ({ups} levels up)", strength, unified.find(".."))
                )
        elif os_file is not None and not in_path:
            absolute = _ABSOLUTE.match(unified) is not None
            # a path ("etc/passwd", ".ssh/id_rsa") is more than a file name ("web.config")
            strength = 0.55 if absolute else 0.45 if "/" in os_file else _BARE_FILE
            out.append(Hit("lfi", f"operating-system file {os_file}", strength, 0))
        if d.null_byte and "." in text:
            out.append(Hit("lfi", "null byte", 0.5, text.find("\x00")))


_WORD = re.compile(r"[a-z0-9_.-]{2,40}")
_BRACES = re.compile(r"([a-z0-9_]*)\{([^{}\s:]*,[^{}\s:]*)\}([a-z0-9_]*)")
_VERSION = re.compile(r"(?<=[a-z])[\d.]*\d$|(?<=\d)\.[\d.]+$")
# A file name alone ("web.config", "config.yaml") is also an ordinary value: it needs another sign.
_BARE_FILE = 0.28
_UP = re.compile(r"(?:^|[/=:;])\.{2,}(?:;[^/]*)?(?=/|$)")
_ABSOLUTE = re.compile(r"\s*(?:/|~|[a-z]:/|file:)")


class _OsFiles:
    """CRS `lfi-os-files.data`: paths matched where a path component starts."""

    def __init__(self, entries: Iterable[str]) -> None:
        self._by_head: dict[str, list[str]] = {}
        for entry in entries:
            e = entry.lower().replace("\\", "/").lstrip("/")
            if len(e) >= 3:
                self._by_head.setdefault(e[:3], []).append(e)

    def find(self, text: str) -> str | None:
        start = 0
        n = len(text)
        while start < n:
            head = text[start : start + 3]
            for entry in self._by_head.get(head, ()):
                if text.startswith(entry, start):
                    end = start + len(entry)
                    # a whole component: "etc/passwd" but not "etc/passwdx" (prefix entries end
                    # in "/", "_", "." or "-" and may continue)
                    if end == n or entry[-1] in "/_.-" or not (text[end].isalnum()):
                        return entry
            nxt = text.find("/", start)
            if nxt < 0:
                return None
            start = nxt + 1
        return None

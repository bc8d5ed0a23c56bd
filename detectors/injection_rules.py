"""What an injection payload looks like, class by class: SQLi, XSS, path traversal / LFI, command
injection / RCE, SSRF.

Rules are general statements about each language (a quote that closes a string and continues with
a boolean operator, a shell separator followed by a command, a URL whose host is the cloud metadata
address), not copies of known payloads. Each has a strength in (0, 1]: how sure a match alone makes
us that the value is an attack. Word lists come from OWASP CRS (`data/crs/*.data`, Apache-2.0):
command names, operating-system files, metadata hosts.

Per class, one compiled alternation of all its rules gates the value (Python's `re`; see
`bench/injection.py` for google-re2 and hyperscan measured against it): only a value that matches
the gate is tried rule by rule to find the strongest match.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from detectors.injection_decode import Decoded
from detectors.injection_engine import LiteralSet, Rule, RuleBook, required_literals

__all__ = ["DATA_DIR", "Hit", "RuleSet"]

DATA_DIR = Path(__file__).resolve().parent / "data" / "crs"


@dataclass(frozen=True, slots=True)
class Hit:
    kind: str  # sqli | xss | lfi | rce | ssrf
    label: str
    strength: float
    pos: int  # where in the decoded text it matched (for the reason's excerpt)


# --- SQL injection ----------------------------------------------------------------------------------
_OPERAND = r"(?:(?:['\"`][\w.@]*['\"`]|[\w.@]+)\s*(?:=|<=?|>=?|!=|<>|\blike\b|\bregexp\b|\bglob\b|\bis\b|\bin\s*\(|\bbetween\b)|true\b|false\b|null\b|\d|\(|[a-z_][\w.]*\s*\(|['\"])"  # noqa: E501
_SQLI = (
    ("UNION SELECT", 0.95, r"\bunion(?:\s+(?:all|distinct))?\s*\(*\s*select\b"),
    # A statement someone searches for ("select * from book") is not an injection by itself: the
    # strong form needs what only a query carries (a clause after the table, a function or a
    # server variable in the projection, a list of columns).
    (
        "SELECT … FROM",
        0.85,
        r"\bselect\s*(?:distinct\s+|top\s+\d+\s+|all\s+)?(?:@@?\w+|null\b|\d+\s*,|[\w.`\"\[\]]+\s*\(|[\w.`\"\[\]]+\s*,\s*[\w.`\"\[\]()]+)[^;]{0,80}?\bfrom\b|\bselect\s*(?:distinct\s+|top\s+\d+\s+)?\*\s*from\s+[\w.`\"\[\]]+\s*(?:where\b|limit\b|order\b|group\b|having\b|union\b|join\b|into\b|;|--|#|\))",  # noqa: E501
    ),
    ("SELECT * FROM", 0.28, r"\bselect\s+\*\s*from\b"),
    (
        "SELECT of a function or variable",
        0.7,
        r"\bselect\s*\(?\s*(?:@@?\w+|[a-z_]\w*\s*\()",
    ),  # noqa: E501
    (
        "SELECT … FROM … clause",
        0.55,
        r"\bselect\s+[\w.`\"]+\s+from\s+[\w.`\"]+\s*(?:where\b|limit\b|order\s+by|group\s+by|join\b|;|--|#|\))",
    ),  # noqa: E501
    (
        "quote, then a boolean test",
        0.85,
        r"['\"`]\s*\)*\s*(?:or|and|xor|\|\||&&|div|rlike|regexp|like)\s*\(*\s*(?:not\s+)?"
        + _OPERAND,
    ),  # noqa: E501
    (
        "number, then a boolean test",
        0.8,
        r"(?:^|[\s(])-?\d+\s*\)*\s+(?:or|and|xor|\|\||&&)\s+(?:not\s+)?\(*\s*(?:\d+\s*(?:=|<=?|>=?|!=|<>|\blike\b|\bis\b|\bbetween\b|\bin\s*\()|true\b|false\b|null\b|(?:sleep|benchmark|exists|if|ascii|substr\w*|length|char)\s*\(|\(?\s*select\b|['\"])",
    ),  # noqa: E501
    (
        "tautology",
        0.75,
        r"\b(?:or|and)\s+(?:(\d+)\s*=\s*\1\b|(['\"])(\w*)\2\s*=\s*\2\3\2|(\w+)\s*=\s*\4\b)",
    ),  # noqa: E501
    ("quote, then a comment or terminator", 0.55, r"['\"`]\s*\)*\s*(?:--(?:[\s\-]|$)|#|;|/\*)"),
    (
        "stacked query",
        0.85,
        r";\s*(?:select\b|insert\s+into|update\s+[\w`\".]+\s+set\b|delete\s+from|drop\s+(?:table|database|schema|view|function|procedure|user)\b|create\s+(?:table|database|user|function|procedure)\b|alter\s+(?:table|user|database)\b|truncate\s+table|exec(?:ute)?\s+[\w@(\[]|declare\s+@|shutdown\b|waitfor\s+delay|grant\s+\w|revoke\s+\w|load\s+data\b|call\s+\w+\s*\(|set\s+@)",
    ),  # noqa: E501
    ("DROP TABLE", 0.85, r"\bdrop\s+(?:table|database|schema)\s+(?:if\s+exists\s+)?[\w`\"\[]"),
    ("INSERT INTO", 0.85, r"\binsert\s+into\s+[\w`\".\[\]]+\s*(?:\(|values\b|select\b)"),
    ("UPDATE … SET", 0.85, r"\bupdate\s+[\w`\".]+\s+set\s+[\w`\".]+\s*="),
    ("DELETE FROM", 0.6, r"\bdelete\s+from\s+[\w`\".]+\s*(?:where\b|;|--|#|$)"),
    ("TRUNCATE / ALTER", 0.6, r"\btruncate\s+table\b|\balter\s+table\s+[\w`\"]"),
    (
        "time delay",
        0.9,
        r"\b(?:pg_sleep|benchmark|dbms_lock\.sleep|dbms_pipe\.receive_message|randomblob)\s*\(|\bwaitfor\s+(?:delay|time)\s+['\"]",
    ),  # noqa: E501
    # sleep(5), sleep(20 div 3), sleep(mod(10,5)), sleep('10'): not "sleep (8 hours)".
    ("SLEEP()", 0.75, r"\bsleep\s*\(\s*(?:['\"]|[a-z_]+\s*\(|(?:[-\d.,\s+*/%^()]|\bdiv\b|\bmod\b)+\))"),  # noqa: E501
    ("tautology alone", 0.45, r"(?:^|[\s,;(])(\d+|'\w*'|\"\w*\")\s*(?:=|==|<=>)\s*\1\s*$|<=>"),
    ("delay function", 0.65, r"\b(?:pg_sleep|dbms_lock\.sleep|dbms_pipe\.receive_message)\b"),
    ("XOR expression", 0.55, r"\bxor\b\s*(?:\d|['\"(]|\w+\s*[<>=!-])"),
    ("quote, OR, operand, operator", 0.6, r"['\"`]\s*(?:or|and|xor)\s+\w+\s*[<>=!-]|(?:^|\s)(?:or|and)\s+(?:'[^']*'|\"[^\"]*\"|\d+)\s*(?:[<>=!]|-$)"),  # noqa: E501
    ("DDL statement ended", 0.55, r"\b(?:drop|truncate|alter)\s+\w+\s*(?:;|--|#)|;\s*truncate\b"),
    ("OLE DB provider", 0.5, r"\b(?:msdasql|sqloledb|microsoft\.jet\.oledb)\b"),
    (
        "server variable",
        0.85,
        r"@@(?:version|datadir|hostname|basedir|tmpdir|servername|spid|language|global)\b",
    ),  # noqa: E501
    ("schema catalogue", 0.85, r"\binformation_schema\b"),
    (
        "system table",
        0.6,
        r"\b(?:sysobjects|syscolumns|sysusers|sys\.(?:tables|columns|objects|databases|sql_logins)|pg_(?:catalog|shadow|user|database|tables|class|namespace|proc|authid)|mysql\.(?:user|db)|sqlite_(?:master|schema|temp_master)|all_tables|user_tables|all_tab_columns|msysobjects|dba_users)\b",
    ),  # noqa: E501
    (
        "database procedure or file access",
        0.85,
        r"\b(?:xp_cmdshell|xp_regread|xp_dirtree|sp_executesql|sp_oacreate|sp_makewebtask|sp_addextendedproc|openrowset|opendatasource|utl_http|utl_inaddr|lo_(?:import|export|get|put|from_bytea)|pg_read_file|pg_ls_dir|load_file)\b|\binto\s+(?:out|dump)file\b|\bcopy\s+\w+\s+(?:from|to)\s+program\b",
    ),  # noqa: E501
    ("EXEC", 0.8, r"\bexec(?:ute)?\s+(?:immediate\b|master\.|sp_|xp_|\(\s*['\"@\w]|@)"),
    (
        "error-based function",
        0.75,
        r"\b(?:extractvalue|updatexml|group_concat|concat_ws|json_keys|gtid_subset)\s*\(|\bchar\s*\(\s*\d+\s*(?:,\s*\d+\s*)+\)|\bchr\s*\(\s*\d+\s*\)\s*\|\|",
    ),  # noqa: E501
    (
        "PostgreSQL cast",
        0.5,
        r"[\w)'\"]\s*::\s*(?:int|integer|bigint|smallint|numeric|text|varchar|bool|boolean|regclass|oid|double\s+precision|bytea|json)\b",
    ),  # noqa: E501
    ("ORDER BY column number", 0.5, r"\border\s+by\s+\d+\s*(?:--|#|/\*|;|,|$)"),
    ("GROUP BY … HAVING", 0.7, r"\bgroup\s+by\b.{0,60}?\bhaving\b"),
    ("HAVING condition", 0.55, r"\bhaving\s+(?:count\s*\(|\d+\s*[=<>]|[\w.]+\s*(?:=|>|<))"),
    ("CASE WHEN", 0.55, r"\bcase\s+when\b.{1,80}?\bthen\b"),
    ("IF(condition", 0.5, r"\bif\s*\(\s*[\w'\"@().]+\s*(?:=|<|>|!=|<>|\blike\b|\bis\b)"),
    (
        "LIKE / EXCEPT / IN subquery",
        0.5,
        r"\)\s*like\s*\(|\bexcept\s+(?:select|values)\b|\bin\s*\(\s*select\b",
    ),  # noqa: E501
    ("parenthesised boolean test", 0.7, r"\)\s*(?:or|and)\s*\(\s*\d+\s*[=<>]"),
    (
        "quote, then an SQL keyword",
        0.7,
        r"['\"`]\s*\)*\s*(?:union|select|having|insert|update|delete|drop|exec(?:ute)?|waitfor|order\s+by|group\s+by|procedure\s+analyse)\b",
    ),  # noqa: E501
    ("quote equals quote", 0.6, r"['\"]\s*(?:=|<>|!=|<=>)\s*['\"]"),
    ("SELECT … FROM … WHERE", 0.5, r"\bselect\b.{1,80}?\bfrom\b.{1,80}?\bwhere\b"),
    (
        "SQL string concatenation",
        0.45,
        r"['\"]\s*(?:\|\||\+)\s*['\"]|['\"]\s*\|\|\s*\w+\s*\(|\bconcat\s*\(\s*['\"0-9]",
    ),
    (
        "SQL function",
        0.5,
        r"\b(?:user_name|db_name|host_name|suser_s?name|is_srvrolemember|has_dbaccess|name_const|row_count|found_rows|last_insert_id|connection_id|sqlite_version|unistr|make_set|export_set|json_extract|dbms_xmlgen|xmltype|sys_context|rawtohex|hextoraw|ascii\s*\(\s*substr\w*|schema_name|column_name|table_name|object_id|col_name|quotename)\s*\(",
    ),  # noqa: E501
    (
        "session function",
        0.45,
        r"\b(?:current_user|session_user|system_user|current_database|current_schema)\b",
    ),
    (
        "MATCH … AGAINST / MERGE",
        0.6,
        r"\bmatch\s*\(.{1,60}?\)\s*against\s*\(|\bmerge\s+into\b|\bshutdown\s+with\s+nowait\b",
    ),  # noqa: E501
    ("UNION of NULLs", 0.5, r"\bnull\s*,\s*null\b"),
    ("OR/AND with a literal", 0.55, r"(?:^|['\"`)\s])(?:or|and|xor|\|\||&&)\s+(?:not\s+)?(?:true|false|null|\d+)\s*(?:--|#|;|\)|$)"),  # noqa: E501
    ("OR/AND with a comparison", 0.5, r"\b(?:or|and|xor)\s+[\w.]+\s*(?:=|<|>|!=|<>|<=>|\blike\b|\bregexp\b|\bis\s+(?:not\s+)?null\b)\s*(?:[\w.]+|['\"])"),  # noqa: E501
    ("quote, then OR/AND, then a quote", 0.6, r"['\"]\s*(?:or|and|xor)\s*['\"]"),
    ("MSSQL system object", 0.6, r"\b(?:from|into|exec|execute)\s+(?:dbo|master|tempdb|msdb|sys)\s*\.\s*\.?\w"),
    ("stored procedure or function definition", 0.7, r"\bcreate\s+(?:or\s+replace\s+)?(?:function|procedure|trigger)\b|\bprocedure\s+analyse\b|\breturns\s+\w+\s+soname\b|\bdeclare\s+@\w+"),  # noqa: E501
    ("EXISTS subquery", 0.75, r"\b(?:and|or|where)\s+(?:not\s+)?exists\s*\(\s*select\b"),
    ("closing paren, then SQL", 0.6, r"\)\s*(?:union|select|having)\b|\)\s*(?:and|or|xor)\s*\(?\s*(?:\d|['\"]|select\b|sleep\s*\(|not\b)"),  # noqa: E501
    ("character set switch", 0.6, r"\balter\b.{0,40}?\bcharacter\s+set\b|\bset\s+names\s+\w+\s*;"),
    ("JSON operator after a string", 0.6, r"['\"]\s*(?:#-|#>>?|@>|<@|\?[|&]|->>?)\s*['\"]|\}['\"]\s*[<>=]\s*['\"]\$[.\[]|['\"]\s*::\s*jsonb?\b"),  # noqa: E501
    ("JSON operator in SQL", 0.5, r"['\"]\s*->>?\s*['\"]\$|\bjson_(?:extract|keys|value|query|object)\s*\(|\}\s*['\"]?\s*::\s*jsonb?\b"),  # noqa: E501
    ("conditional function", 0.4, r"\b(?:iif|ifnull|nullif|isnull|coalesce|decode|elt|field)\s*\(\s*[\w'\"@(]"),
    ("quote probe", 0.45, r"^[\s'\"`()\\;=#-]*['\"`][\s'\"`()\\;=#-]*$"),
    (
        "NoSQL operator",
        0.7,
        r"\[\s*\$(?:ne|eq|gt|gte|lt|lte|in|nin|regex|where|exists|or|and|not|nor|expr|elemmatch|size|type|all|mod|text)\s*\]|[\"']\$(?:where|function)[\"']\s*:|\$where\b",
    ),  # noqa: E501
)

# --- Cross-site scripting ----------------------------------------------------------------------------
_XSS = (
    ("<script> tag", 0.95, r"<\s*/?\s*(?:[a-z]+\s*:\s*)?script\b"),
    # The longest DOM event handler name, onwebkitplaybacktargetavailabilitychanged, has 41 letters.
    (
        "tag with an event handler",
        0.95,
        r"<\s*[a-z][\w:-]*\b[^>]{0,200}?[\s/\"'`]on[a-z]{3,40}\s*=",
    ),
    (
        "active-content tag",
        0.65,
        r"<\s*(?:iframe|frame|frameset|object|embed|applet|svg|math|base|meta|link|style|form|isindex|xss|vmlframe|animate|template|portal|marquee|bgsound|layer|ilayer|import|video|audio|img|image|body|details|input|button|textarea|select|keygen|source|a)\b[\s/>]",
    ),  # noqa: E501
    ("event handler attribute", 0.7, r"(?:[\s\"'`;<]|<[a-z][\w:-]*/)on[a-z]{3,40}\s*="),
    # Browsers skip blanks inside a scheme: "java\tscript:". "script" itself is rarely split.
    # ...followed by code, not by words: "javascript:alert(1)", not "javascript: the good parts".
    ("script URL", 0.8, r"(?:j\s*a\s*v\s*a|v\s*b|l\s*i\s*v\s*e)\s*s\s*c\s*r\s*i\s*p\s*t\s*:\s*(?:[\w$.]+\s*[(\[`=]|[/%(\'\"`\[{\\]|void\b|$)", ("script",)),  # noqa: E501
    (
        "HTML data URL",
        0.6,
        r"\bdata\s*:\s*(?:text/html|image/svg\+xml|application/(?:x-)?javascript)",
    ),  # noqa: E501
    (
        "CSS expression",
        0.7,
        r"[:=]\s*expression\s*\(|-moz-binding\s*:|\bbehavior\s*:\s*url|\burl\s*\(\s*['\"]?\s*(?:java|vb)script",
    ),
    (
        "script after a closed string",
        0.8,
        r"['\"`]\s*[;+\-*/|&,)\]}]+\s*(?:alert|prompt|confirm|eval|settimeout|setinterval|fetch|function\b|document\.|window\.|top\.|self\.|parent\.|this\.|location\b|import\s*\(|new\s+function|constructor)",
    ),  # noqa: E501
    (
        "dialog call",
        0.6,
        r"\b(?:alert|prompt|confirm)\s*(?:\(\s*(?:\d|['\"`]|document|window|this|self|top|\))|`)",
    ),  # noqa: E501
    (
        "DOM sink",
        0.7,
        r"\bdocument\s*\.\s*(?:cookie|domain|write|location)\b|\bwindow\s*\.\s*(?:location|open|name)\b|\.innerhtml\s*=|\bstring\s*\.\s*fromcharcode\b|\b(?:atob|btoa)\s*\(|\beval\s*\(\s*(?:atob|unescape|string|name|location)|\b(?:settimeout|setinterval)\s*\(\s*(?:['\"`]|name\b|location)",
    ),  # noqa: E501
    # Below `min_score` alone: markup in a value needs another sign (XML documents are legitimate).
    ("tag", 0.28, r"<\s*/?\s*[a-z][\w:-]{0,20}(?:\s+[\w:-]+\s*=|\s*/?>)"),
    ("attribute break into a tag", 0.85, r"['\"]\s*/?>\s*<\s*[a-z!/]"),
    ("markup declaration", 0.4, r"<!(?:--|\[cdata\[|entity|doctype)"),
    ("srcdoc / formaction attribute", 0.6, r"\b(?:srcdoc|formaction|xlink:href)\s*="),
    ("template sandbox escape", 0.8, r"\{\{[^}]{0,80}?(?:constructor|\$eval|\$on\b|alert\s*\()"),
    ("spaced-out tag name", 0.5, r"<[a-z](?: [a-z]){2,}\b"),
    (
        "global object by name",
        0.6,
        r"\b(?:self|window|this|top|parent|frames|document|globalthis)\s*\[\s*['\"`]",
    ),
    ("symbol-only JavaScript", 0.6, r"[!+\[\]()]{16,}|\(\s*!\s*\[\s*\]\s*\+\s*\[\s*\]\s*\)", ("[]", "[ ]")),
    ("UTF-7 markup", 0.7, r"\+ad[w4]-"),
    ("CSS import", 0.5, r"@import\s*(?:url\s*\(|['\"])"),
    (
        "code execution call",
        0.5,
        r"\b(?:settimeout|setinterval|execscript|eval|function)\s*(?:\(\s*['\"`]|`)|\b(?:settimeout|setinterval|execscript)\s*\(",
    ),
    ("data URL attribute", 0.55, r"=\s*['\"]?\s*data\s*:"),
    ("location or cookie assignment", 0.5, r"['\"][^'\"]{0,30}?\b(?:location|cookie)\b\s*="),
    ("template code", 0.55, r"\{\{[^}]*(?:\(|\.\s*\w+\s*\()[^}]*\}\}"),
    ("method borrowing", 0.6, r"\[\s*\]\s*\.\s*\w+\s*\.\s*(?:call|apply|bind)\b|\.parentnode\b"),
    ("XML namespace attribute", 0.4, r"\bxmlns(?::\w+)?\s*=\s*['\"]?https?:"),
    ("call without parentheses", 0.6, r"\.\s*(?:call|apply|bind)\s*`|\breflect\s*\.\s*(?:apply|construct|get|set|defineproperty)\b"),  # noqa: E501
    ("IE import", 0.6, r"<\?\s*import\b|implementation\s*="),
    ("JavaScript function", 0.5, r"\bnew\s+function\s*\(|\bfunction\s*\(\s*\)\s*\{"),
)

# --- Path traversal and local file inclusion ------------------------------------------------------------
_LFI = (
    ("PHP stream wrapper", 0.85, r"\bphp://(?:filter|input|fd|memory|temp|stdin|stdout)"),
    ("file URL", 0.8, r"\bfile:/{1,3}(?:[a-z]:|/|\.|~|%)"),
    (
        "archive or glob wrapper",
        0.7,
        r"\b(?:zip|phar|glob|compress\.zlib|compress\.bzip2|rar|ogg|ssh2\.\w+)://",
    ),  # noqa: E501
    ("XML external entity", 0.8, r"<!entity\s+(?:%\s*)?\S+\s+(?:system|public)\b"),
)

# --- Command injection and code execution ------------------------------------------------------------
_RCE = (
    ("command substitution", 0.8, r"\$\(\s*/[^)]*\)|`\s*/[^`]*`|\$\(\("),
    ("path to a program", 0.6, r"(?:^|[\s/;|&=(])(?:usr/|usr/local/)?s?bin/[a-z0-9_+-]{2,}"),
    ("shell function definition", 0.85, r"\(\s*\)\s*\{", ("{",)),
    ("process substitution", 0.7, r"[<>]\(\s*[a-z/.]"),
    ("arithmetic expansion", 0.5, r"\$\[[^\]]{0,40}\]"),
    ("history expansion", 0.35, r"(?:^|[\s;&|])!(?:!|-?\d+)(?=\s|$|!)"),
    ("parameter expansion", 0.6, r"\$\{[#!]?\w+(?::?[-=+?]|//?|##?|%%?|:\d|\[)"),
    ("wildcard command", 0.55, r"(?:^|[\s;|&])[a-z]{0,8}[?*][a-z?*]{0,8}\s+[/~.]"),
    ("Windows system path", 0.7, r"\b[a-z]:[\\/]+(?:windows|winnt)[\\/]+(?:system32|syswow64)\b|\\system32\\[\w.]+\.exe"),  # noqa: E501
    (
        "wildcard path",
        0.6,
        r"(?:^|[\s;|&=(])/(?:[\w.?*\[\]-]*[?*\[][\w.?*\[\]-]*/)+|(?:^|[\s;|&=(])/(?:bin|sbin|etc|usr|dev|tmp|proc|var|opt|home|root)/(?:[\w.-]+/)*[\w.-]*[?*\[]",
    ),  # noqa: E501
    (
        "brace expansion",
        0.7,
        r"\{[^{}\s\"':]*,[^{}\s\"':]*/[^{}\s\"':]*\}|\{[^{}\s\"':]*/[^{}\s\"':]*,[^{}\s\"':]*\}",
    ),  # noqa: E501
    ("shell alias", 0.55, r"\balias\s+(?:[+-]?[\w+-]*\s+)*[\w.-]+=\S"),
    (
        "SQLite shell command",
        0.7,
        r"(?:^|[;\n])\s*\.(?:shell|system|sh|databases|tables|dump|import|load|open|read|output|once|schema)\b",
    ),
    ("Perl interpolation", 0.6, r"@\{\[.{1,80}?\]\}"),
    ("serialized object", 0.7, r"\b[oc]:\d+:\"[\w\\]+\":\d+:\{|_\$\$nd_func\$\$_"),
    (
        "template tag",
        0.55,
        r"(?:\{%|<%=?)\s*(?:if|for|while|set|import|include|extends|macro|block|raw|load|with|debug|exec|eval|system)\b[^%]{0,80}%[}>]",
    ),
    (
        "shell variable",
        0.6,
        r"\$\{?(?:ifs|path|home|shell|pwd|hostname|oldpwd|ostype|cdpath|dirstack|user)\b\}?",
    ),  # noqa: E501
    (
        "reverse shell",
        0.9,
        r"/dev/(?:tcp|udp)/|\b(?:nc|ncat|netcat)\b[^;|&]{0,40}\s-[a-z]*[ec]\b|\bbash\s+-i\b|\bsocat\b[^;|&]{0,40}\bexec:|\bmkfifo\b|\bsh\s+-i\s*[<>]",
    ),  # noqa: E501
    ("pipe into a shell", 0.85, r"\|\s*(?:/bin/|/usr/bin/)?(?:ba|z|k|da|tc|c|fi)?sh\b(?:\s|$)"),
    ("shell path", 0.75, r"/bin/(?:ba|z|k|da|tc|c|fi)?sh\b|\b(?:ba|z|k|da)?sh\s+-c\s"),
    ("output redirection", 0.55, r"\s\d?>\s*/(?:dev|tmp|var|etc)/|\b2>&1\b|>\s*/dev/null"),
    (
        "log4j lookup",
        0.95,
        r"\$\{\s*(?:jndi|env|sys|java|lower|upper|date|ctx|main|bundle|docker|k8s|log4j|spring|web|marker|map|sd|::-)\b[^}]*",
    ),  # noqa: E501
    (
        "Windows shell",
        0.85,
        r"\bcmd(?:\.exe)?\s*/[ck]\b|\b(?:powershell(?:\.exe)?|pwsh)\s+-\w",
    ),  # noqa: E501
    (
        "PowerShell download or encoded command",
        0.9,
        r"\bnew-object\s+(?:system\.)?net\.webclient|\bdownload(?:string|file|data)\s*\(|\s-e(?:nc|ncodedcommand)?\s+[a-z0-9+/=]{20,}|\b(?:iex|invoke-expression)\s*[\s(]",
    ),  # noqa: E501
    (
        "batch FOR loop",
        0.85,
        r"\bfor\s+(?:/[a-z]\s+(?:\"[^\"]*\"\s+|[^\s%]+\s+)?)*%%?[^\s%]{0,20}\s+in\s*\(.{0,200}?\)\s*do\b",
    ),  # noqa: E501
    (
        "batch IF test",
        0.75,
        r"\bif\s+(?:/i\s+)?(?:not\s+)?(?:exist|defined|errorlevel|cmdextversion)\s+\S",
    ),  # noqa: E501
    (
        "batch comparison",
        0.6,
        r"\bif\s*(?:/i\s+)?(?:not\s+)?(?:\"[^\"]*\"|[^\s=]+)\s*(?:==|\s(?:equ|neq|lss|leq|gtr|geq)\s)\s*(?:\"[^\"]*\"|\S+)(?:\s+\S|\s*\()",
    ),  # noqa: E501
    ("batch comparison at the end", 0.45, r"\bif\s*(?:/i\s+)?(?:not\s+)?\S*%\S*\s*(?:==|\s(?:equ|neq|lss|leq|gtr|geq)\s)\s*\S+\s*$"),  # noqa: E501
    (
        "Windows variable",
        0.45,
        r"%(?:comspec|systemroot|windir|errorlevel|cd|path|temp|userprofile|appdata|programfiles|computername|username|random|[a-z_]\w{0,20}:~[^%]{0,12})%",
    ),  # noqa: E501
)

# --- Code injection (PHP, Java, templates, Node.js, Python), matched on the plain decoded text -------------
_CODE = (
    (
        "PHP code",
        0.8,
        r"<\?(?:php\b|=|\s)\s*[^?]{0,40}?\b(?:system|exec|passthru|shell_exec|eval|assert|echo|print|include|require|phpinfo|file_\w+|fopen|base64_decode|popen)\b|<\?php\s+\$",
    ),  # noqa: E501
    (
        "PHP function call",
        0.6,
        r"\b(?:system|shell_exec|passthru|popen|proc_open|pcntl_exec|assert|eval|create_function|call_user_func(?:_array)?|preg_replace|file_get_contents|file_put_contents|readfile|show_source|highlight_file|phpinfo|base64_decode|gzinflate|str_rot13)\s*\(\s*(?:['\"$\w(]|\))",
    ),  # noqa: E501
    ("PHP superglobal", 0.6, r"\$_(?:get|post|request|cookie|server|files|env|session)\s*\["),
    (
        "Java runtime",
        0.85,
        r"\bjava\.lang\.(?:runtime|processbuilder|system|class|reflect)\b|\bgetruntime\s*\(\s*\)|\bprocessbuilder\b|\bclassloader\b|\bt\s*\(\s*java\.|#_memberaccess|@java\.lang|\bognlcontext\b|#context\[",
    ),  # noqa: E501
    (
        "template expression",
        0.7,
        r"\{\{[^}]{0,80}?(?:\d+\s*[*+\-/]\s*\d+|__class__|__globals__|__builtins__|__import__|__subclasses__|\bconfig\b|\bself\.|\brequest\.|\blipsum\b|\bcycler\b|\bjoiner\b)|\$\{\s*\d+\s*[*+]\s*\d+\s*\}|#\{\s*\d+\s*[*+]\s*\d+\s*\}|<%=?\s*[^%]{0,40}?(?:\d\s*\*\s*\d|runtime|system\.|exec\b|eval\b)",
    ),  # noqa: E501
    (
        "Node.js process",
        0.85,
        r"\brequire\s*\(\s*['\"](?:child_process|fs|net|os|vm)['\"]|\bchild_process\b|\bprocess\s*\.\s*(?:mainmodule|binding|env|exit|kill)\b|\bglobal\s*\.\s*process\b|\bconstructor\s*\.\s*constructor\s*\(|\bconstructor\s*\[\s*['\"]constructor",
    ),  # noqa: E501
    (
        "Python code",
        0.85,
        r"\b__import__\s*\(|\bos\s*\.\s*(?:system|popen|exec\w*)\s*\(|\bsubprocess\s*\.\s*\w+|__builtins__|__globals__|__subclasses__\s*\(",
    ),  # noqa: E501
    ("prototype pollution", 0.6, r"__proto__|\bconstructor\s*[.\[]\s*['\"]?prototype\b"),
    ("expect wrapper", 0.9, r"\bexpect://"),
    # A whole SMTP, POP3 or IMAP command on a line of its own, after a line break.
    (
        "mail command after a line break",
        0.6,
        r"\n\s*(?:mail\s+from\s*:|rcpt\s+to\s*:|(?:data|quit|rset|noop|starttls|capability|logout|expunge)\s*(?=\n|$)|(?:helo|ehlo|vrfy|expn|help)\s+\S+\s*(?=\n|$)|(?:retr|dele|list|top|stat|uidl)(?:\s+\d+){0,2}\s*(?=\n|$)|(?:auth|apop|user|pass)\s+\S+(?:\s+\S+)?\s*(?=\n|$)|[a-z]?\d+\s+(?:login|select|examine|fetch|store|append|copy|create|delete|rename|uid)\s)",
    ),  # noqa: E501
)

# Separators after which a word is a new shell command, and what its arguments look like.
_SHELL_WORD = re.compile(
    r"(?P<sep>^|[;`]|&&|\|\||[|&(\n]|\$\(|\{)\s*(?:\$\w+\s+)?(?P<word>[a-z0-9_./+~-]{1,40})(?=[\s;|&<>)`'\"$]|$)(?P<rest>[^;\n|&`]{0,120})"
)
_SHELL_ARGS = re.compile(
    r"(?:^|\s)-{1,2}[a-z]|(?:^|\s)/[a-z.]|(?<![-=<>])[<>]|\$\w|\$\{|://|\b\d{1,3}(?:\.\d{1,3}){3}\b|\*|\\\\|\b[a-z]:[\\\\/]"
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


def _book(kind: str, rules: Iterable[tuple[str, float, str] | tuple[str, float, str, tuple[str, ...]]]) -> list[Rule]:
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
            _book("sqli", _SQLI) + _book("xss", _XSS) + _book("lfi", _LFI) + _book("rce", _CODE)
        )
        self.shell_rules = RuleBook(_book("rce", _RCE))
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
        self.metadata_hosts = _metadata_hosts(_data_lines(data_dir / "ssrf.data"))

    def scan(self, d: Decoded, *, in_path: bool = False, redirect: bool = False) -> list[Hit]:
        """Every rule that matches the decoded value (a query value or name, or the URL path).
        `redirect`: the value is where a browser is sent next (`redirect_uri`, `next`...), where a
        loopback or private address is normal (RFC 8252 loopback redirects for native apps)."""
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
        _ssrf(text, self.metadata_hosts, hits, redirect=redirect)
        return hits

    # -- shell commands ---------------------------------------------------------------------------
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
            hit = self._command_at(m, shell)
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

    def _command_at(self, m: re.Match[str], shell: str) -> Hit | None:
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
            if shellish:
                strength, label = (0.4 if ambiguous else 0.5), "command with shell arguments"
            elif ambiguous:
                return None
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

    # -- traversal ----------------------------------------------------------------------------------
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
                )  # noqa: E501
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


# --- Server-side request forgery ------------------------------------------------------------------------
_URL = re.compile(
    r"(?<![a-z0-9+.-])(?P<scheme>(?:jar:)?[a-z][a-z0-9+.-]{1,15})\s*:\s*[/\\]{1,3}\s*(?P<auth>[^/?#\\\s]*)"
)  # noqa: E501
_DANGEROUS_SCHEMES = frozenset(
    {"gopher", "dict", "ldap", "ldaps", "tftp", "netdoc", "jar:http", "jar:https"}
)  # noqa: E501
_REBIND = re.compile(
    r"(?:^|\.)(?:nip\.io|xip\.io|sslip\.io|localtest\.me|lvh\.me|burpcollaborator\.net|oast\.\w+|interact\.sh)$"
)  # noqa: E501
_BARE_METADATA = re.compile(
    r"(?<![\d.])169\.254\.169\.254(?![\d])|\bmetadata\.google\.internal\b|(?<![\d.])100\.100\.100\.200(?![\d])"
)  # noqa: E501
_METADATA_IPS = frozenset(
    ipaddress.ip_address(a)
    for a in ("169.254.169.254", "169.254.170.2", "100.100.100.200", "192.0.0.192", "fd00:ec2::254")
)


def _metadata_hosts(entries: Iterable[str]) -> frozenset[str]:
    hosts = set()
    for entry in entries:
        m = _URL.search(entry.lower())
        if m:
            host = m.group("auth").rsplit("@", 1)[-1].split(":", 1)[0]
            if host and not host[0].isdigit() and not host.startswith("[") and "." not in host[:1]:
                if "localhost" not in host and _REBIND.search(host) is None and host.isascii():
                    hosts.add(host)
    return frozenset(hosts)


_NUMERIC_HOST = re.compile(r"(?:0x[0-9a-f]+|\d+)(?:\.(?:0x[0-9a-f]+|\d+)){0,3}")


def _legacy_ipv4(host: str) -> ipaddress.IPv4Address | None:
    """inet_aton's forms: 1-4 parts, each decimal, octal (leading 0) or hex (0x)."""
    parts = host.split(".")
    if not 1 <= len(parts) <= 4:
        return None
    nums = []
    for p in parts:
        try:
            if p.startswith(("0x", "0X")):
                nums.append(int(p[2:], 16))
            elif len(p) > 1 and p.startswith("0"):
                nums.append(int(p, 8))
            else:
                nums.append(int(p, 10))
        except ValueError:
            return None
    value = 0
    for i, n in enumerate(nums[:-1]):
        if n > 255:
            return None
        value |= n << (24 - 8 * i)
    last_bits = 32 - 8 * (len(nums) - 1)
    if nums[-1] >= 1 << last_bits:
        return None
    return ipaddress.IPv4Address(value | nums[-1])


def _host_risk(host: str, metadata_hosts: frozenset[str]) -> tuple[float, str] | None:
    if not host:
        return None
    if host in metadata_hosts:
        return 0.9, f"cloud metadata host {host}"
    if host.startswith("["):
        try:
            ip6 = ipaddress.IPv6Address(host.strip("[]").split("%")[0])
        except ValueError:
            return None
        mapped = ip6.ipv4_mapped
        if mapped is not None:
            risk = _ip_risk(mapped)
            return (min(1.0, risk[0] + 0.1), f"{risk[1]} (IPv4-mapped)") if risk else None
        return _ip_risk(ip6)
    if host == "localhost" or host.endswith((".localhost", ".localdomain")):
        return 0.35, "localhost"
    if _REBIND.search(host):
        embedded = re.search(r"\d{1,3}(?:[.-]\d{1,3}){3}", host)
        if embedded:
            ip = _legacy_ipv4(embedded.group(0).replace("-", "."))
            risk = _ip_risk(ip) if ip else None
            if risk:
                return min(1.0, risk[0] + 0.1), f"{risk[1]} behind wildcard DNS"
        return 0.6, "wildcard DNS service"
    if not (host[0].isdigit()):
        return None
    canonical = re.fullmatch(
        r"(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(?:\.(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3}", host
    )  # noqa: E501
    ip = _legacy_ipv4(host)
    if ip is None:
        if _NUMERIC_HOST.fullmatch(host):
            # Too large for an address: some resolvers wrap it around (2^32 + 169.254.169.254).
            return 0.8, f"numeric host {host[:20]}, obfuscated"
        return None
    risk = _ip_risk(ip)
    if canonical:
        return risk
    # Nobody writes a real address as 2852039166, 0x7f.1 or 0251.0376.0251.0376 but to dodge a filter.
    label = risk[1] if risk else f"address {ip}"
    return max(0.8, risk[0] if risk else 0.0), f"{label}, obfuscated"


# Loopback, private and localhost scores: at most this.
_LOCAL = 0.65


def _ip_risk(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> tuple[float, str] | None:
    if ip in _METADATA_IPS:
        return 0.9, f"cloud metadata address {ip}"
    if ip.is_loopback or ip.is_unspecified:
        return 0.65, f"loopback address {ip}"
    if ip.is_link_local:
        return 0.85, f"link-local address {ip}"
    if ip.is_private:
        return 0.55, f"private address {ip}"
    return None


def _ssrf(text: str, metadata_hosts: frozenset[str], out: list[Hit], *, redirect: bool) -> None:
    if ":" in text:
        for m in _URL.finditer(text):
            scheme = m.group("scheme")
            host = m.group("auth").rsplit("@", 1)[-1]
            if host.startswith("["):
                host = host[: host.find("]") + 1] if "]" in host else host
            else:
                host = host.split(":", 1)[0]
            risk = _host_risk(host.rstrip("."), metadata_hosts)
            if scheme in _DANGEROUS_SCHEMES:
                target = f" to {risk[1]}" if risk else ""
                out.append(
                    Hit(
                        "ssrf",
                        f"{scheme}:// URL{target}",
                        max(0.75, risk[0] if risk else 0.0),
                        m.start(),
                    )
                )  # noqa: E501
                return
            if risk is not None and not (redirect and risk[0] <= _LOCAL):
                out.append(Hit("ssrf", f"URL to {risk[1]}", risk[0], m.start()))
                return
    m = _BARE_METADATA.search(text)
    if m is not None:
        out.append(Hit("ssrf", "cloud metadata address", 0.8, m.start()))

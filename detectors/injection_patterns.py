"""What an injection payload looks like, class by class, as regular expressions on a decoded,
lower-cased value (`injection_decode`): SQLi, XSS, path traversal / LFI, code injection, and shell
command injection (matched on the value as a shell reads it).

Each rule is (label, strength, pattern[, literals]). Rules are general statements about each
language (a quote that closes a string and continues with a boolean test, a tag with an event
handler, a batch FOR loop), not copies of known payloads. The strength in (0, 1] is how sure a match
alone makes us: at 0.5 and above one match is a clear payload; below 0.3 a match only counts with
another sign. `literals` overrides the literals read from the pattern (`required_literals`) when
those would be too common to select the rule.
"""

from __future__ import annotations

__all__ = ["CODE", "LFI", "SHELL", "SQLI", "XSS", "Rules"]

Rules = tuple[tuple[str, float, str] | tuple[str, float, str, tuple[str, ...]], ...]

# --- SQL injection --------------------------------------------------------------------------------
_OPERAND = r"(?:(?:['\"`][\w.@]*['\"`]|[\w.@]+)\s*(?:=|<=?|>=?|!=|<>|\blike\b|\bregexp\b|\bglob\b|\bis\b|\bin\s*\(|\bbetween\b)|true\b|false\b|null\b|\d|\(|[a-z_][\w.]*\s*\(|['\"])"  # noqa: E501
SQLI: Rules = (
    ("UNION SELECT", 0.95, r"\bunion(?:\s+(?:all|distinct))?\s*\(*\s*select\b"),
    # A statement someone searches for ("select * from book") is not an injection by itself: the
    # strong form needs what only a query carries (a clause after the table, a function or a
    # server variable in the projection, a list of columns).
    (
        "SELECT … FROM",
        0.85,
        r"\bselect\s*(?:distinct\s+|top\s+\d+\s+|all\s+)?(?:@@?\w+|null\b|\d+\s*,|[\w.`\"\[\]]+\s*\(|[\w.`\"\[\]]+\s*,\s*[\w.`\"\[\]()]+)[^;]{0,80}?\bfrom\b|\bselect\s*(?:distinct\s+|top\s+\d+\s+)?\*\s*from\s+[\w.`\"\[\]]+\s*(?:where\b|limit\b|order\b|group\b|having\b|union\b|join\b|into\b|;|--|#|\))",
    ),
    ("SELECT * FROM", 0.28, r"\bselect\s+\*\s*from\b"),
    (
        "SELECT of a function or variable",
        0.7,
        r"\bselect\s*\(?\s*(?:@@?\w+|[a-z_]\w*\s*\()",
    ),
    (
        "SELECT … FROM … clause",
        0.55,
        r"\bselect\s+[\w.`\"]+\s+from\s+[\w.`\"]+\s*(?:where\b|limit\b|order\s+by|group\s+by|join\b|;|--|#|\))",
    ),
    (
        "quote, then a boolean test",
        0.85,
        r"['\"`]\s*\)*\s*(?:or|and|xor|\|\||&&|div|rlike|regexp|like)\s*\(*\s*(?:not\s+)?"
        + _OPERAND,
    ),
    (
        "number, then a boolean test",
        0.8,
        r"(?:^|[\s(])-?\d+\s*\)*\s+(?:or|and|xor|\|\||&&)\s+(?:not\s+)?\(*\s*(?:\d+\s*(?:=|<=?|>=?|!=|<>|\blike\b|\bis\b|\bbetween\b|\bin\s*\()|true\b|false\b|null\b|(?:sleep|benchmark|exists|if|ascii|substr\w*|length|char)\s*\(|\(?\s*select\b|['\"])",
    ),
    (
        "tautology",
        0.75,
        r"\b(?:or|and)\s+(?:(\d+)\s*=\s*\1\b|(['\"])(\w*)\2\s*=\s*\2\3\2|(\w+)\s*=\s*\4\b)",
    ),
    ("quote, then a comment or terminator", 0.55, r"['\"`]\s*\)*\s*(?:--(?:[\s\-]|$)|#|;|/\*)"),
    (
        "stacked query",
        0.85,
        r";\s*(?:select\b|insert\s+into|update\s+[\w`\".]+\s+set\b|delete\s+from|drop\s+(?:table|database|schema|view|function|procedure|user)\b|create\s+(?:table|database|user|function|procedure)\b|alter\s+(?:table|user|database)\b|truncate\s+table|exec(?:ute)?\s+[\w@(\[]|declare\s+@|shutdown\b|waitfor\s+delay|grant\s+\w|revoke\s+\w|load\s+data\b|call\s+\w+\s*\(|set\s+@)",
    ),
    ("DROP TABLE", 0.85, r"\bdrop\s+(?:table|database|schema)\s+(?:if\s+exists\s+)?[\w`\"\[]"),
    ("INSERT INTO", 0.85, r"\binsert\s+into\s+[\w`\".\[\]]+\s*(?:\(|values\b|select\b)"),
    ("UPDATE … SET", 0.85, r"\bupdate\s+[\w`\".]+\s+set\s+[\w`\".]+\s*="),
    ("DELETE FROM", 0.6, r"\bdelete\s+from\s+[\w`\".]+\s*(?:where\b|;|--|#|$)"),
    ("TRUNCATE / ALTER", 0.6, r"\btruncate\s+table\b|\balter\s+table\s+[\w`\"]"),
    (
        "time delay",
        0.9,
        r"\b(?:pg_sleep|benchmark|dbms_lock\.sleep|dbms_pipe\.receive_message|randomblob)\s*\(|\bwaitfor\s+(?:delay|time)\s+['\"]",
    ),
    # sleep(5), sleep(20 div 3), sleep(mod(10,5)), sleep('10'): not "sleep (8 hours)".
    (
        "SLEEP()",
        0.75,
        r"\bsleep\s*\(\s*(?:['\"]|[a-z_]+\s*\(|(?:[-\d.,\s+*/%^()]|\bdiv\b|\bmod\b)+\))",
    ),
    ("tautology alone", 0.45, r"(?:^|[\s,;(])(\d+|'\w*'|\"\w*\")\s*(?:=|==|<=>)\s*\1\s*$|<=>"),
    ("delay function", 0.65, r"\b(?:pg_sleep|dbms_lock\.sleep|dbms_pipe\.receive_message)\b"),
    ("XOR expression", 0.55, r"\bxor\b\s*(?:\d|['\"(]|\w+\s*[<>=!-])"),
    (
        "quote, OR, operand, operator",
        0.6,
        r"['\"`]\s*(?:or|and|xor)\s+\w+\s*[<>=!-]|(?:^|\s)(?:or|and)\s+(?:'[^']*'|\"[^\"]*\"|\d+)\s*(?:[<>=!]|-$)",
    ),
    ("DDL statement ended", 0.55, r"\b(?:drop|truncate|alter)\s+\w+\s*(?:;|--|#)|;\s*truncate\b"),
    ("OLE DB provider", 0.5, r"\b(?:msdasql|sqloledb|microsoft\.jet\.oledb)\b"),
    (
        "server variable",
        0.85,
        r"@@(?:version|datadir|hostname|basedir|tmpdir|servername|spid|language|global)\b",
    ),
    ("schema catalogue", 0.85, r"\binformation_schema\b"),
    (
        "system table",
        0.6,
        r"\b(?:sysobjects|syscolumns|sysusers|sys\.(?:tables|columns|objects|databases|sql_logins)|pg_(?:catalog|shadow|user|database|tables|class|namespace|proc|authid)|mysql\.(?:user|db)|sqlite_(?:master|schema|temp_master)|all_tables|user_tables|all_tab_columns|msysobjects|dba_users)\b",
    ),
    (
        "database procedure or file access",
        0.85,
        r"\b(?:xp_cmdshell|xp_regread|xp_dirtree|sp_executesql|sp_oacreate|sp_makewebtask|sp_addextendedproc|openrowset|opendatasource|utl_http|utl_inaddr|lo_(?:import|export|get|put|from_bytea)|pg_read_file|pg_ls_dir|load_file)\b|\binto\s+(?:out|dump)file\b|\bcopy\s+\w+\s+(?:from|to)\s+program\b",
    ),
    ("EXEC", 0.8, r"\bexec(?:ute)?\s+(?:immediate\b|master\.|sp_|xp_|\(\s*['\"@\w]|@)"),
    (
        "error-based function",
        0.75,
        r"\b(?:extractvalue|updatexml|group_concat|concat_ws|json_keys|gtid_subset)\s*\(|\bchar\s*\(\s*\d+\s*(?:,\s*\d+\s*)+\)|\bchr\s*\(\s*\d+\s*\)\s*\|\|",
    ),
    (
        "PostgreSQL cast",
        0.5,
        r"[\w)'\"]\s*::\s*(?:int|integer|bigint|smallint|numeric|text|varchar|bool|boolean|regclass|oid|double\s+precision|bytea|json)\b",
    ),
    ("ORDER BY column number", 0.5, r"\border\s+by\s+\d+\s*(?:--|#|/\*|;|,|$)"),
    ("GROUP BY … HAVING", 0.7, r"\bgroup\s+by\b.{0,60}?\bhaving\b"),
    ("HAVING condition", 0.55, r"\bhaving\s+(?:count\s*\(|\d+\s*[=<>]|[\w.]+\s*(?:=|>|<))"),
    ("CASE WHEN", 0.55, r"\bcase\s+when\b.{1,80}?\bthen\b"),
    ("IF(condition", 0.5, r"\bif\s*\(\s*[\w'\"@().]+\s*(?:=|<|>|!=|<>|\blike\b|\bis\b)"),
    (
        "LIKE / EXCEPT / IN subquery",
        0.5,
        r"\)\s*like\s*\(|\bexcept\s+(?:select|values)\b|\bin\s*\(\s*select\b",
    ),
    ("parenthesised boolean test", 0.7, r"\)\s*(?:or|and)\s*\(\s*\d+\s*[=<>]"),
    (
        "quote, then an SQL keyword",
        0.7,
        r"['\"`]\s*\)*\s*(?:union|select|having|insert|update|delete|drop|exec(?:ute)?|waitfor|order\s+by|group\s+by|procedure\s+analyse)\b",
    ),
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
    ),
    (
        "session function",
        0.45,
        r"\b(?:current_user|session_user|system_user|current_database|current_schema)\b",
    ),
    (
        "MATCH … AGAINST / MERGE",
        0.6,
        r"\bmatch\s*\(.{1,60}?\)\s*against\s*\(|\bmerge\s+into\b|\bshutdown\s+with\s+nowait\b",
    ),
    ("UNION of NULLs", 0.5, r"\bnull\s*,\s*null\b"),
    (
        "OR/AND with a literal",
        0.55,
        r"(?:^|['\"`)\s])(?:or|and|xor|\|\||&&)\s+(?:not\s+)?(?:true|false|null|\d+)\s*(?:--|#|;|\)|$)",
    ),
    (
        "OR/AND with a comparison",
        0.5,
        r"\b(?:or|and|xor)\s+[\w.]+\s*(?:=|<|>|!=|<>|<=>|\blike\b|\bregexp\b|\bis\s+(?:not\s+)?null\b)\s*(?:[\w.]+|['\"])",
    ),
    ("quote, then OR/AND, then a quote", 0.6, r"['\"]\s*(?:or|and|xor)\s*['\"]"),
    (
        "MSSQL system object",
        0.6,
        r"\b(?:from|into|exec|execute)\s+(?:dbo|master|tempdb|msdb|sys)\s*\.\s*\.?\w",
    ),
    (
        "stored procedure or function definition",
        0.7,
        r"\bcreate\s+(?:or\s+replace\s+)?(?:function|procedure|trigger)\b|\bprocedure\s+analyse\b|\breturns\s+\w+\s+soname\b|\bdeclare\s+@\w+",
    ),
    ("EXISTS subquery", 0.75, r"\b(?:and|or|where)\s+(?:not\s+)?exists\s*\(\s*select\b"),
    (
        "closing paren, then SQL",
        0.6,
        r"\)\s*(?:union|select|having)\b|\)\s*(?:and|or|xor)\s*\(?\s*(?:\d|['\"]|select\b|sleep\s*\(|not\b)",
    ),
    ("character set switch", 0.6, r"\balter\b.{0,40}?\bcharacter\s+set\b|\bset\s+names\s+\w+\s*;"),
    (
        "JSON operator after a string",
        0.6,
        r"['\"]\s*(?:#-|#>>?|@>|<@|\?[|&]|->>?)\s*['\"]|\}['\"]\s*[<>=]\s*['\"]\$[.\[]|['\"]\s*::\s*jsonb?\b",
    ),
    (
        "JSON operator in SQL",
        0.5,
        r"['\"]\s*->>?\s*['\"]\$|\bjson_(?:extract|keys|value|query|object)\s*\(|\}\s*['\"]?\s*::\s*jsonb?\b",
    ),
    (
        "conditional function",
        0.4,
        r"\b(?:iif|ifnull|nullif|isnull|coalesce|decode|elt|field)\s*\(\s*[\w'\"@(]",
    ),
    ("quote probe", 0.45, r"^[\s'\"`()\\;=#-]*['\"`][\s'\"`()\\;=#-]*$"),
    (
        "NoSQL operator",
        0.7,
        r"\[\s*\$(?:ne|eq|gt|gte|lt|lte|in|nin|regex|where|exists|or|and|not|nor|expr|elemmatch|size|type|all|mod|text)\s*\]|[\"']\$(?:where|function)[\"']\s*:|\$where\b",
    ),
)

# --- Cross-site scripting -------------------------------------------------------------------------
XSS: Rules = (
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
    ),
    ("event handler attribute", 0.7, r"(?:[\s\"'`;<]|<[a-z][\w:-]*/)on[a-z]{3,40}\s*="),
    # Browsers skip blanks inside a scheme: "java\tscript:". "script" itself is rarely split.
    # ...followed by code, not by words: "javascript:alert(1)", not "javascript: the good parts".
    (
        "script URL",
        0.8,
        r"(?:j\s*a\s*v\s*a|v\s*b|l\s*i\s*v\s*e)\s*s\s*c\s*r\s*i\s*p\s*t\s*:\s*(?:[\w$.]+\s*[(\[`=]|[/%(\'\"`\[{\\]|void\b|$)",
        ("script",),
    ),
    (
        "HTML data URL",
        0.6,
        r"\bdata\s*:\s*(?:text/html|image/svg\+xml|application/(?:x-)?javascript)",
    ),
    (
        "CSS expression",
        0.7,
        r"[:=]\s*expression\s*\(|-moz-binding\s*:|\bbehavior\s*:\s*url|\burl\s*\(\s*['\"]?\s*(?:java|vb)script",
    ),
    (
        "script after a closed string",
        0.8,
        r"['\"`]\s*[;+\-*/|&,)\]}]+\s*(?:alert|prompt|confirm|eval|settimeout|setinterval|fetch|function\b|document\.|window\.|top\.|self\.|parent\.|this\.|location\b|import\s*\(|new\s+function|constructor)",
    ),
    (
        "dialog call",
        0.6,
        r"\b(?:alert|prompt|confirm)\s*(?:\(\s*(?:\d|['\"`]|document|window|this|self|top|\))|`)",
    ),
    (
        "DOM sink",
        0.7,
        r"\bdocument\s*\.\s*(?:cookie|domain|write|location)\b|\bwindow\s*\.\s*(?:location|open|name)\b|\.innerhtml\s*=|\bstring\s*\.\s*fromcharcode\b|\b(?:atob|btoa)\s*\(|\beval\s*\(\s*(?:atob|unescape|string|name|location)|\b(?:settimeout|setinterval)\s*\(\s*(?:['\"`]|name\b|location)",
    ),
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
    (
        "symbol-only JavaScript",
        0.6,
        r"[!+\[\]()]{16,}|\(\s*!\s*\[\s*\]\s*\+\s*\[\s*\]\s*\)",
        ("[]", "[ ]"),
    ),
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
    (
        "call without parentheses",
        0.6,
        r"\.\s*(?:call|apply|bind)\s*`|\breflect\s*\.\s*(?:apply|construct|get|set|defineproperty)\b",
    ),
    ("IE import", 0.6, r"<\?\s*import\b|implementation\s*="),
    ("JavaScript function", 0.5, r"\bnew\s+function\s*\(|\bfunction\s*\(\s*\)\s*\{"),
)

# --- Path traversal and local file inclusion ------------------------------------------------------
LFI: Rules = (
    ("PHP stream wrapper", 0.85, r"\bphp://(?:filter|input|fd|memory|temp|stdin|stdout)"),
    ("file URL", 0.8, r"\bfile:/{1,3}(?:[a-z]:|/|\.|~|%)"),
    (
        "archive or glob wrapper",
        0.7,
        r"\b(?:zip|phar|glob|compress\.zlib|compress\.bzip2|rar|ogg|ssh2\.\w+)://",
    ),
    ("XML external entity", 0.8, r"<!entity\s+(?:%\s*)?\S+\s+(?:system|public)\b"),
)

# --- Command injection and code execution ---------------------------------------------------------
SHELL: Rules = (
    ("command substitution", 0.8, r"\$\(\s*/[^)]*\)|`\s*/[^`]*`|\$\(\("),
    ("path to a program", 0.6, r"(?:^|[\s/;|&=(])(?:usr/|usr/local/)?s?bin/[a-z0-9_+-]{2,}"),
    ("shell function definition", 0.85, r"\(\s*\)\s*\{", ("{",)),
    ("process substitution", 0.7, r"[<>]\(\s*[a-z/.]"),
    ("arithmetic expansion", 0.5, r"\$\[[^\]]{0,40}\]"),
    ("history expansion", 0.35, r"(?:^|[\s;&|])!(?:!|-?\d+)(?=\s|$|!)"),
    ("parameter expansion", 0.6, r"\$\{[#!]?\w+(?::?[-=+?]|//?|##?|%%?|:\d|\[)"),
    ("wildcard command", 0.55, r"(?:^|[\s;|&])[a-z]{0,8}[?*][a-z?*]{0,8}\s+[/~.]"),
    (
        "Windows system path",
        0.7,
        r"\b[a-z]:[\\/]+(?:windows|winnt)[\\/]+(?:system32|syswow64)\b|\\system32\\[\w.]+\.exe",
    ),
    (
        "wildcard path",
        0.6,
        r"(?:^|[\s;|&=(])/(?:[\w.?*\[\]-]*[?*\[][\w.?*\[\]-]*/)+|(?:^|[\s;|&=(])/(?:bin|sbin|etc|usr|dev|tmp|proc|var|opt|home|root)/(?:[\w.-]+/)*[\w.-]*[?*\[]",
    ),
    (
        "brace expansion",
        0.7,
        r"\{[^{}\s\"':]*,[^{}\s\"':]*/[^{}\s\"':]*\}|\{[^{}\s\"':]*/[^{}\s\"':]*,[^{}\s\"':]*\}",
    ),
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
    ),
    (
        "reverse shell",
        0.9,
        r"/dev/(?:tcp|udp)/|\b(?:nc|ncat|netcat)\b[^;|&]{0,40}\s-[a-z]*[ec]\b|\bbash\s+-i\b|\bsocat\b[^;|&]{0,40}\bexec:|\bmkfifo\b|\bsh\s+-i\s*[<>]",
    ),
    ("pipe into a shell", 0.85, r"\|\s*(?:/bin/|/usr/bin/)?(?:ba|z|k|da|tc|c|fi)?sh\b(?:\s|$)"),
    ("shell path", 0.75, r"/bin/(?:ba|z|k|da|tc|c|fi)?sh\b|\b(?:ba|z|k|da)?sh\s+-c\s"),
    ("output redirection", 0.55, r"\s\d?>\s*/(?:dev|tmp|var|etc)/|\b2>&1\b|>\s*/dev/null"),
    (
        "log4j lookup",
        0.95,
        r"\$\{\s*(?:jndi|env|sys|java|lower|upper|date|ctx|main|bundle|docker|k8s|log4j|spring|web|marker|map|sd|::-)\b[^}]*",
    ),
    (
        "Windows shell",
        0.85,
        r"\bcmd(?:\.exe)?\s*/[ck]\b|\b(?:powershell(?:\.exe)?|pwsh)\s+-\w",
    ),
    (
        "PowerShell download or encoded command",
        0.9,
        r"\bnew-object\s+(?:system\.)?net\.webclient|\bdownload(?:string|file|data)\s*\(|\s-e(?:nc|ncodedcommand)?\s+[a-z0-9+/=]{20,}|\b(?:iex|invoke-expression)\s*[\s(]",
    ),
    (
        "batch FOR loop",
        0.85,
        r"\bfor\s+(?:/[a-z]\s+(?:\"[^\"]*\"\s+|[^\s%]+\s+)?)*%%?[^\s%]{0,20}\s+in\s*\(.{0,200}?\)\s*do\b",
    ),
    (
        "batch IF test",
        0.75,
        r"\bif\s+(?:/i\s+)?(?:not\s+)?(?:exist|defined|errorlevel|cmdextversion)\s+\S",
    ),
    (
        "batch comparison",
        0.6,
        r"\bif\s*(?:/i\s+)?(?:not\s+)?(?:\"[^\"]*\"|[^\s=]+)\s*(?:==|\s(?:equ|neq|lss|leq|gtr|geq)\s)\s*(?:\"[^\"]*\"|\S+)(?:\s+\S|\s*\()",
    ),
    (
        "batch comparison at the end",
        0.45,
        r"\bif\s*(?:/i\s+)?(?:not\s+)?\S*%\S*\s*(?:==|\s(?:equ|neq|lss|leq|gtr|geq)\s)\s*\S+\s*$",
    ),
    (
        "Windows variable",
        0.45,
        r"%(?:comspec|systemroot|windir|errorlevel|cd|path|temp|userprofile|appdata|programfiles|computername|username|random|[a-z_]\w{0,20}:~[^%]{0,12})%",
    ),
)

# --- Code injection (PHP, Java, templates, Node.js, Python), matched on the plain decoded text ----
CODE: Rules = (
    (
        "PHP code",
        0.8,
        r"<\?(?:php\b|=|\s)\s*[^?]{0,40}?\b(?:system|exec|passthru|shell_exec|eval|assert|echo|print|include|require|phpinfo|file_\w+|fopen|base64_decode|popen)\b|<\?php\s+\$",
    ),
    (
        "PHP function call",
        0.6,
        r"\b(?:system|shell_exec|passthru|popen|proc_open|pcntl_exec|assert|eval|create_function|call_user_func(?:_array)?|preg_replace|file_get_contents|file_put_contents|readfile|show_source|highlight_file|phpinfo|base64_decode|gzinflate|str_rot13)\s*\(\s*(?:['\"$\w(]|\))",
    ),
    ("PHP superglobal", 0.6, r"\$_(?:get|post|request|cookie|server|files|env|session)\s*\["),
    (
        "Java runtime",
        0.85,
        r"\bjava\.lang\.(?:runtime|processbuilder|system|class|reflect)\b|\bgetruntime\s*\(\s*\)|\bprocessbuilder\b|\bclassloader\b|\bt\s*\(\s*java\.|#_memberaccess|@java\.lang|\bognlcontext\b|#context\[",
    ),
    (
        "template expression",
        0.7,
        r"\{\{[^}]{0,80}?(?:\d+\s*[*+\-/]\s*\d+|__class__|__globals__|__builtins__|__import__|__subclasses__|\bconfig\b|\bself\.|\brequest\.|\blipsum\b|\bcycler\b|\bjoiner\b)|\$\{\s*\d+\s*[*+]\s*\d+\s*\}|#\{\s*\d+\s*[*+]\s*\d+\s*\}|<%=?\s*[^%]{0,40}?(?:\d\s*\*\s*\d|runtime|system\.|exec\b|eval\b)",
    ),
    (
        "Node.js process",
        0.85,
        r"\brequire\s*\(\s*['\"](?:child_process|fs|net|os|vm)['\"]|\bchild_process\b|\bprocess\s*\.\s*(?:mainmodule|binding|env|exit|kill)\b|\bglobal\s*\.\s*process\b|\bconstructor\s*\.\s*constructor\s*\(|\bconstructor\s*\[\s*['\"]constructor",
    ),
    (
        "Python code",
        0.85,
        r"\b__import__\s*\(|\bos\s*\.\s*(?:system|popen|exec\w*)\s*\(|\bsubprocess\s*\.\s*\w+|__builtins__|__globals__|__subclasses__\s*\(",
    ),
    ("prototype pollution", 0.6, r"__proto__|\bconstructor\s*[.\[]\s*['\"]?prototype\b"),
    ("expect wrapper", 0.9, r"\bexpect://"),
    # A whole SMTP, POP3 or IMAP command on a line of its own, after a line break.
    (
        "mail command after a line break",
        0.6,
        r"\n\s*(?:mail\s+from\s*:|rcpt\s+to\s*:|(?:data|quit|rset|noop|starttls|capability|logout|expunge)\s*(?=\n|$)|(?:helo|ehlo|vrfy|expn|help)\s+\S+\s*(?=\n|$)|(?:retr|dele|list|top|stat|uidl)(?:\s+\d+){0,2}\s*(?=\n|$)|(?:auth|apop|user|pass)\s+\S+(?:\s+\S+)?\s*(?=\n|$)|[a-z]?\d+\s+(?:login|select|examine|fetch|store|append|copy|create|delete|rename|uid)\s)",
    ),
)

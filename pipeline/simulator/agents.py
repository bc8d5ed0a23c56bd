"""User agents and the header sets that go with them.

A client's header *names* tell browsers, SDKs and bots apart as much as its user agent does, so
each kind of client here sends the headers its real counterpart sends: Chrome its client hints and
fetch metadata, Firefox and Safari their own subsets, an SDK a handful, a phone app its own. The
scripting user agents (`python-requests`, `Go-http-client`, `axios`, `curl`) belong to legitimate
API consumers: a bad bot must not be recognisable by a scripting UA alone.
"""

from __future__ import annotations

import itertools
import random
from bisect import bisect
from typing import Any

__all__ = [
    "BROWSERS",
    "SDK_AGENTS",
    "browser_headers",
    "mobile_headers",
    "sdk_headers",
]

Headers = dict[str, Any]

TLS13 = {"version": "TLSv1.3", "cipher": "TLS_AES_128_GCM_SHA256", "client_verify": "NONE"}
TLS13_256 = {"version": "TLSv1.3", "cipher": "TLS_AES_256_GCM_SHA384", "client_verify": "NONE"}
TLS12 = {
    "version": "TLSv1.2",
    "cipher": "ECDHE-RSA-AES128-GCM-SHA256",
    "client_verify": "NONE",
}

# (family, platform, user agent, weight): late-2023 versions.
BROWSERS: tuple[tuple[str, str, str, int], ...] = (
    (
        "chrome",
        '"Windows"',
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 "
        "(KHTML, like Gecko) Chrome/119.0.0.0 Safari/537.36",
        30,
    ),
    (
        "chrome",
        '"macOS"',
        "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 "
        "(KHTML, like Gecko) Chrome/119.0.0.0 Safari/537.36",
        12,
    ),
    (
        "chrome",
        '"Android"',
        "Mozilla/5.0 (Linux; Android 10; K) AppleWebKit/537.36 (KHTML, like "
        "Gecko) Chrome/119.0.0.0 Mobile Safari/537.36",
        16,
    ),
    (
        "chrome",
        '"Linux"',
        "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like "
        "Gecko) Chrome/118.0.0.0 Safari/537.36",
        2,
    ),
    (
        "edge",
        '"Windows"',
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, "
        "like Gecko) Chrome/119.0.0.0 Safari/537.36 Edg/119.0.0.0",
        6,
    ),
    (
        "safari",
        "",
        "Mozilla/5.0 (iPhone; CPU iPhone OS 17_1_1 like Mac OS X) AppleWebKit/605.1.15 "
        "(KHTML, like Gecko) Version/17.1 Mobile/15E148 Safari/604.1",
        18,
    ),
    (
        "safari",
        "",
        "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, "
        "like Gecko) Version/17.1 Safari/605.1.15",
        7,
    ),
    (
        "firefox",
        "",
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:120.0) Gecko/20100101 Firefox/120.0",
        6,
    ),
    (
        "firefox",
        "",
        "Mozilla/5.0 (X11; Ubuntu; Linux x86_64; rv:119.0) Gecko/20100101 Firefox/119.0",
        2,
    ),
    (
        "samsung",
        '"Android"',
        "Mozilla/5.0 (Linux; Android 13; SAMSUNG SM-S911B) AppleWebKit/537.36 "
        "(KHTML, like Gecko) SamsungBrowser/23.0 Chrome/115.0.0.0 Mobile Safari/537.36",
        3,
    ),
)
_CH_UA = {
    "chrome": '"Google Chrome";v="119", "Chromium";v="119", "Not?A_Brand";v="24"',
    "edge": '"Microsoft Edge";v="119", "Chromium";v="119", "Not?A_Brand";v="24"',
    "samsung": '"Samsung Internet";v="23.0", "Chromium";v="115", "Not/A)Brand";v="99"',
}
LOCALES = (
    ("en-US,en;q=0.9", 40),
    ("en-GB,en-US;q=0.9,en;q=0.8", 12),
    ("de-DE,de;q=0.9,en-US;q=0.8,en;q=0.7", 12),
    ("fr-FR,fr;q=0.9,en-US;q=0.8,en;q=0.7", 8),
    ("es-ES,es;q=0.9", 6),
    ("en-US", 8),
    ("nl-NL,nl;q=0.9,en-US;q=0.8,en;q=0.7", 4),
    ("it-IT,it;q=0.9,en-US;q=0.8,en;q=0.7", 4),
    ("pt-BR,pt;q=0.9,en-US;q=0.8,en;q=0.7", 3),
    ("ja-JP,ja;q=0.9", 3),
)
# (user agent, weight, header style): what legitimate API consumers run.
SDK_AGENTS: tuple[tuple[str, float, str], ...] = (
    ("python-requests/2.31.0", 18, "requests"),
    ("python-requests/2.28.2", 6, "requests"),
    ("python-httpx/0.25.1", 4, "httpx"),
    ("Go-http-client/2.0", 10, "go"),
    ("Go-http-client/1.1", 5, "go"),
    ("axios/1.6.2", 8, "axios"),
    ("axios/1.6.7", 4, "axios"),
    ("node-fetch/1.0 (+https://github.com/bitinn/node-fetch)", 3, "nodefetch"),
    ("okhttp/4.12.0", 4, "okhttp"),
    ("Apache-HttpClient/4.5.14 (Java/17.0.9)", 6, "apache"),
    ("Java/11.0.21", 2, "java"),
    ("RestSharp/110.2.0.0", 3, "restsharp"),
    ("GuzzleHttp/7", 3, "guzzle"),
    ("Faraday v2.7.11", 2, "faraday"),
    ("Ruby", 1, "ruby"),
    ("curl/8.4.0", 2, "curl"),
    ("PostmanRuntime/7.35.0", 0.5, "postman"),
    ("acme-erp-connector/3.2.1 (+https://acme-erp.example/connector)", 2, "custom"),
    ("Zapier", 1, "custom"),
    ("shopsync/2.14.0 (linux; x86_64)", 2, "custom"),
)
_SDK_STYLE: dict[str, dict[str, str]] = {
    "requests": {"accept-encoding": "gzip, deflate", "accept": "*/*", "connection": "keep-alive"},
    "httpx": {"accept": "*/*", "accept-encoding": "gzip, deflate", "connection": "keep-alive"},
    "go": {"accept-encoding": "gzip"},
    "axios": {
        "accept": "application/json, text/plain, */*",
        "accept-encoding": "gzip, compress, deflate, br",
        "connection": "close",
    },
    "nodefetch": {"accept": "*/*", "accept-encoding": "gzip,deflate", "connection": "close"},
    "okhttp": {"accept-encoding": "gzip", "connection": "Keep-Alive"},
    "apache": {
        "accept-encoding": "gzip,deflate",
        "connection": "Keep-Alive",
        "accept": "application/json",
    },
    "java": {
        "accept": "text/html, image/gif, image/jpeg, *; q=.2, */*; q=.2",
        "connection": "keep-alive",
    },
    "restsharp": {
        "accept": "application/json, text/json, text/x-json, text/javascript, "
        "application/xml, text/xml",
        "accept-encoding": "gzip, deflate",
    },
    "guzzle": {"accept": "application/json"},
    "faraday": {"accept": "*/*", "accept-encoding": "gzip;q=1.0,deflate;q=0.6,identity;q=0.3"},
    "ruby": {"accept": "*/*", "accept-encoding": "gzip;q=1.0,deflate;q=0.6,identity;q=0.3"},
    "curl": {"accept": "*/*"},
    "postman": {
        "accept": "*/*",
        "accept-encoding": "gzip, deflate, br",
        "connection": "keep-alive",
        "cache-control": "no-cache",
    },
    "custom": {"accept": "application/json", "accept-encoding": "gzip"},
}
_OLD_TLS_STYLES = frozenset({"java", "restsharp"})
APP_NAME = "MyShop"
IOS_VERSIONS = (("17.1.1", 40), ("17.0.3", 15), ("16.7.2", 20), ("16.6.1", 10), ("15.8", 5))
ANDROID_DEVICES = (
    ("14", "Pixel 8"),
    ("14", "Pixel 7"),
    ("13", "SM-S911B"),
    ("13", "SM-A536B"),
    ("12", "Redmi Note 11"),
    ("13", "CPH2449"),
)
APP_VERSIONS = (("5.2.1", 60), ("5.2.0", 25), ("5.1.4", 10), ("4.9.8", 5))


_CUMULATIVE: dict[int, tuple[float, ...]] = {}


def _weighted(rng: random.Random, items: tuple[tuple[Any, ...], ...], at: int) -> tuple[Any, ...]:
    """An item drawn with the weights in its column `at` (cumulative weights kept per table)."""
    cum = _CUMULATIVE.get(id(items))
    if cum is None:
        cum = _CUMULATIVE[id(items)] = tuple(itertools.accumulate(it[at] for it in items))
    return items[bisect(cum, rng.random() * cum[-1])]


def browser_headers(rng: random.Random) -> tuple[Headers, dict[str, str]]:
    """A browser's headers for the shop SPA's API calls (fetch from shop.example, so CORS with
    Origin), without per-request referer or cookie; and its TLS session."""
    family, platform, ua, _ = _weighted(rng, BROWSERS, 3)
    locale = _weighted(rng, LOCALES, 1)[0]
    headers: Headers = {
        "user-agent": ua,
        "accept": "application/json, text/plain, */*",
        "accept-language": locale,
        "accept-encoding": "gzip, deflate, br",
        "origin": "https://shop.example",
        "sec-fetch-site": "same-site",
        "sec-fetch-mode": "cors",
        "sec-fetch-dest": "empty",
        "connection": "keep-alive",
    }
    if family in _CH_UA:
        headers["sec-ch-ua"] = _CH_UA[family]
        headers["sec-ch-ua-mobile"] = "?1" if "Mobile" in ua else "?0"
        headers["sec-ch-ua-platform"] = platform
    if family == "firefox":
        headers["te"] = "trailers"
    if rng.random() < 0.12:
        headers["dnt"] = "1"
    return headers, TLS13


def sdk_headers(
    rng: random.Random, *, old_tls: bool | None = None
) -> tuple[Headers, dict[str, str]]:
    """An API consumer's client: a scripting or SDK user agent and its header habits."""
    ua, _, style = _weighted(rng, SDK_AGENTS, 1)
    headers: Headers = {"user-agent": ua, **_SDK_STYLE[style]}
    if old_tls is None:
        old_tls = style in _OLD_TLS_STYLES and rng.random() < 0.6
    return headers, (TLS12 if old_tls else TLS13_256 if rng.random() < 0.3 else TLS13)


def mobile_headers(rng: random.Random, platform: str) -> tuple[Headers, dict[str, str]]:
    """The shop's own phone app: `MyShop/5.2.1 (iPhone; iOS 17.1.1; Scale/3.00)` on iOS, okhttp
    (or the app's own UA) on Android."""
    app = _weighted(rng, APP_VERSIONS, 1)[0]
    if platform == "ios":
        ios = _weighted(rng, IOS_VERSIONS, 1)[0]
        headers: Headers = {
            "user-agent": f"{APP_NAME}/{app} (iPhone; iOS {ios}; Scale/3.00)",
            "accept": "application/json",
            "accept-language": _weighted(rng, LOCALES, 1)[0].split(",")[0],
            "accept-encoding": "gzip, deflate, br",
            "x-app-version": app,
        }
    else:
        android, device = rng.choice(ANDROID_DEVICES)
        ua = (
            "okhttp/4.12.0"
            if rng.random() < 0.6
            else f"{APP_NAME}/{app} (Android {android}; {device})"
        )
        headers = {
            "user-agent": ua,
            "accept": "application/json",
            "accept-encoding": "gzip",
            "x-app-version": app,
            "x-app-platform": "android",
        }
    return headers, TLS13


GOOGLEBOT_UAS = (
    "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
    "Mozilla/5.0 (Linux; Android 6.0.1; Nexus 5X Build/MMB29P) AppleWebKit/537.36 (KHTML, like "
    "Gecko) Chrome/119.0.6045.199 Mobile Safari/537.36 (compatible; Googlebot/2.1; "
    "+http://www.google.com/bot.html)",
)
BINGBOT_UA = "Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)"


def crawler_headers(ua: str) -> tuple[Headers, dict[str, str]]:
    headers: Headers = {
        "user-agent": ua,
        "accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
        "accept-encoding": "gzip, deflate, br",
    }
    if "Googlebot" in ua:
        headers["from"] = "googlebot(at)googlebot.com"
    return headers, TLS13


MONITOR_UAS = {
    "uptimerobot": "Mozilla/5.0+(compatible; UptimeRobot/2.0; http://www.uptimerobot.com/)",
    "pingdom": "Pingdom.com_bot_version_1.4_(http://www.pingdom.com/)",
    "kube-probe": "kube-probe/1.28",
}

/*
 * gatewatch: the subjects of this request, spelled exactly as the pipeline spells them for the
 * same request's MessageLogging record (pipeline/ingest/apigee.py, GatewayEvent.subjects()), so
 * that the cache keys the decision-ingest proxy writes are the keys looked up here.
 *
 *   gatewatch.subject.consumer  consumer:<developer.app.name>, else consumer:hmac:<16 hex> of
 *                               client_id (needs the redaction key)
 *   gatewatch.subject.key       key:hmac:<16 hex>: HMAC-SHA256 of the credential under the
 *                               pipeline's redaction key (KVM entry, read into
 *                               private.gatewatch.redaction_key); unset without that key
 *   gatewatch.subject.ip        ip:<client.ip, canonical as Python's ipaddress prints it>
 *   gatewatch.subject.net       ip:<a.b.c.0>/24 (IPv4) or ip:<network>/64 (IPv6)
 *
 * A variable is left unset when its subject cannot be built: its lookup is skipped (fail open).
 * ES5 only (Apigee runs JavaScript on Rhino). Property skip_proxies: comma-separated API proxy
 * names for which nothing is looked up (the decision-ingest proxy itself).
 */
(function () {
  "use strict";

  // pipeline/ingest/redaction.py _SECRET_PARAM
  var SECRET_PARAM = new RegExp(
    "^(api[_-]?key|apikey|key|token|access[_-]?token|refresh[_-]?token|id[_-]?token|auth|" +
      "password|passwd|pwd|secret|client[_-]?secret|signature|sig|session|sessionid|jwt|code)$",
    "i"
  );
  // pipeline/ingest/apigee.py bounds
  var MAX_QUERY_CHARS = 4096;
  var MAX_QUERY_PARAMS = 100;
  var MAX_CONSUMER_CHARS = 255;
  var OCTET = /^(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])$/;
  var HEXTET = /^[0-9a-fA-F]{1,4}$/;

  function variable(name) {
    var value = context.getVariable(name);
    return value === null || value === undefined ? "" : String(value);
  }

  // ---- IP addresses: Python's ipaddress.ip_address() and its str() ----

  function ipv4(text) {
    var parts = text.split(".");
    if (parts.length !== 4) {
      return null;
    }
    for (var i = 0; i < 4; i++) {
      if (!OCTET.test(parts[i])) {
        return null;
      }
      parts[i] = parseInt(parts[i], 10);
    }
    return parts;
  }

  // The eight hextets of an IPv6 address (scope id removed), or null.
  function ipv6(text) {
    var parts, i, v4, skip, hi, lo, skipped, out;
    if (!text || text.length > 45) {
      return null;
    }
    parts = text.split(":");
    if (parts.length < 3) {
      return null;
    }
    if (parts[parts.length - 1].indexOf(".") >= 0) {
      v4 = ipv4(parts.pop());
      if (!v4) {
        return null;
      }
      parts.push((v4[0] * 256 + v4[1]).toString(16), (v4[2] * 256 + v4[3]).toString(16));
    }
    if (parts.length > 9) {
      return null;
    }
    skip = -1;
    for (i = 1; i < parts.length - 1; i++) {
      if (parts[i] === "") {
        if (skip >= 0) {
          return null;
        }
        skip = i;
      }
    }
    if (skip >= 0) {
      hi = skip;
      lo = parts.length - skip - 1;
      if (parts[0] === "" && --hi) {
        return null;
      }
      if (parts[parts.length - 1] === "" && --lo) {
        return null;
      }
      skipped = 8 - (hi + lo);
      if (skipped < 1) {
        return null;
      }
    } else {
      if (parts.length !== 8 || parts[0] === "" || parts[7] === "") {
        return null;
      }
      hi = 8;
      lo = 0;
      skipped = 0;
    }
    out = [];
    for (i = 0; i < hi; i++) {
      out.push(parts[i]);
    }
    for (i = 0; i < skipped; i++) {
      out.push("0");
    }
    for (i = parts.length - lo; i < parts.length; i++) {
      out.push(parts[i]);
    }
    for (i = 0; i < 8; i++) {
      if (!HEXTET.test(out[i])) {
        return null;
      }
      out[i] = parseInt(out[i], 16);
    }
    return out;
  }

  // RFC 5952 text, as Python prints it: the first longest run (>= 2) of zero hextets is "::".
  function ipv6Text(hextets) {
    var bestAt = -1, bestLen = 0, at = -1, len = 0, i, words = [];
    for (i = 0; i < 8; i++) {
      words.push(hextets[i].toString(16));
      if (hextets[i] === 0) {
        if (at < 0) {
          at = i;
        }
        len++;
        if (len > bestLen) {
          bestAt = at;
          bestLen = len;
        }
      } else {
        at = -1;
        len = 0;
      }
    }
    if (bestLen < 2) {
      return words.join(":");
    }
    return words.slice(0, bestAt).join(":") + "::" + words.slice(bestAt + bestLen).join(":");
  }

  // {ip, net} of a client address, or null when it is not an address (pipeline: _ip()).
  function address(raw) {
    var text = raw.split(",")[0].trim(), v4, scope, v6, net;
    v4 = ipv4(text);
    if (v4) {
      return { ip: v4.join("."), net: v4.slice(0, 3).join(".") + ".0/24" };
    }
    scope = text.indexOf("%");
    if (scope >= 0 && (scope === text.length - 1 || text.indexOf("%", scope + 1) >= 0)) {
      return null;
    }
    v6 = ipv6(scope >= 0 ? text.slice(0, scope) : text);
    if (!v6) {
      return null;
    }
    net = v6.slice(0, 4).concat([0, 0, 0, 0]);
    return {
      ip: ipv6Text(v6) + (scope >= 0 ? text.slice(scope) : ""),
      net: ipv6Text(net) + "/64"
    };
  }

  // ---- HMAC-SHA256 (the pipeline's Redactor.fingerprint) ----

  var K = [
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4,
    0xab1c5ed5, 0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe,
    0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f,
    0x4a7484aa, 0x5cb0a9dc, 0x76f988da, 0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7,
    0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967, 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc,
    0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85, 0xa2bfe8a1, 0xa81a664b,
    0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070, 0x19a4c116,
    0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7,
    0xc67178f2
  ];

  // UTF-8 bytes; a lone surrogate is encoded as is (Python's "surrogatepass").
  function utf8(text) {
    var out = [], i, c, d;
    for (i = 0; i < text.length; i++) {
      c = text.charCodeAt(i);
      if (c >= 0xd800 && c < 0xdc00 && i + 1 < text.length) {
        d = text.charCodeAt(i + 1);
        if (d >= 0xdc00 && d < 0xe000) {
          c = 0x10000 + ((c - 0xd800) << 10) + (d - 0xdc00);
          i++;
        }
      }
      if (c < 0x80) {
        out.push(c);
      } else if (c < 0x800) {
        out.push(0xc0 | (c >> 6), 0x80 | (c & 63));
      } else if (c < 0x10000) {
        out.push(0xe0 | (c >> 12), 0x80 | ((c >> 6) & 63), 0x80 | (c & 63));
      } else {
        out.push(0xf0 | (c >> 18), 0x80 | ((c >> 12) & 63), 0x80 | ((c >> 6) & 63),
          0x80 | (c & 63));
      }
    }
    return out;
  }

  function rotr(x, n) {
    return (x >>> n) | (x << (32 - n));
  }

  function sha256(bytes) {
    var h = [0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c,
      0x1f83d9ab, 0x5be0cd19];
    var msg = bytes.slice(0), bits = bytes.length * 8, w = [], i, j, t1, t2, a, out;
    msg.push(0x80);
    while (msg.length % 64 !== 56) {
      msg.push(0);
    }
    msg.push(0, 0, 0, Math.floor(bits / 0x100000000) & 0xff);
    msg.push((bits >>> 24) & 0xff, (bits >>> 16) & 0xff, (bits >>> 8) & 0xff, bits & 0xff);
    for (j = 0; j < msg.length; j += 64) {
      for (i = 0; i < 64; i++) {
        if (i < 16) {
          w[i] = (msg[j + 4 * i] << 24) | (msg[j + 4 * i + 1] << 16) |
            (msg[j + 4 * i + 2] << 8) | msg[j + 4 * i + 3];
        } else {
          w[i] = (w[i - 16] + (rotr(w[i - 15], 7) ^ rotr(w[i - 15], 18) ^ (w[i - 15] >>> 3)) +
            w[i - 7] + (rotr(w[i - 2], 17) ^ rotr(w[i - 2], 19) ^ (w[i - 2] >>> 10))) | 0;
        }
      }
      a = h.slice(0);
      for (i = 0; i < 64; i++) {
        t1 = (a[7] + (rotr(a[4], 6) ^ rotr(a[4], 11) ^ rotr(a[4], 25)) +
          ((a[4] & a[5]) ^ (~a[4] & a[6])) + K[i] + w[i]) | 0;
        t2 = ((rotr(a[0], 2) ^ rotr(a[0], 13) ^ rotr(a[0], 22)) +
          ((a[0] & a[1]) ^ (a[0] & a[2]) ^ (a[1] & a[2]))) | 0;
        a.pop();
        a.unshift((t1 + t2) | 0);
        a[4] = (a[4] + t1) | 0;
      }
      for (i = 0; i < 8; i++) {
        h[i] = (h[i] + a[i]) | 0;
      }
    }
    out = [];
    for (i = 0; i < 8; i++) {
      out.push((h[i] >>> 24) & 0xff, (h[i] >>> 16) & 0xff, (h[i] >>> 8) & 0xff, h[i] & 0xff);
    }
    return out;
  }

  // "hmac:" + the first 16 hex digits of HMAC-SHA256(key, secret), as Redactor.fingerprint.
  function fingerprint(key, secret) {
    var k = utf8(key), inner = [], outer = [], i, mac, hex = "";
    if (k.length > 64) {
      k = sha256(k);
    }
    for (i = 0; i < 64; i++) {
      inner.push((k[i] || 0) ^ 0x36);
      outer.push((k[i] || 0) ^ 0x5c);
    }
    mac = sha256(outer.concat(sha256(inner.concat(utf8(secret)))));
    for (i = 0; i < 8; i++) {
      hex += (mac[i] < 16 ? "0" : "") + mac[i].toString(16);
    }
    return "hmac:" + hex;
  }

  // ---- credentials ----

  // bytes.decode("utf-8", "replace"): each maximal invalid subpart becomes one U+FFFD.
  function decodeUtf8(bytes) {
    var out = "", i = 0, b, need, cp, lo, hi, j, c;
    while (i < bytes.length) {
      b = bytes[i];
      if (b < 0x80) {
        out += String.fromCharCode(b);
        i++;
        continue;
      }
      if (b >= 0xc2 && b <= 0xdf) {
        need = 1;
        cp = b & 0x1f;
      } else if (b >= 0xe0 && b <= 0xef) {
        need = 2;
        cp = b & 0x0f;
      } else if (b >= 0xf0 && b <= 0xf4) {
        need = 3;
        cp = b & 0x07;
      } else {
        out += "\ufffd";
        i++;
        continue;
      }
      lo = b === 0xe0 ? 0xa0 : b === 0xf0 ? 0x90 : 0x80;
      hi = b === 0xed ? 0x9f : b === 0xf4 ? 0x8f : 0xbf;
      for (j = 1; j <= need; j++) {
        c = bytes[i + j];
        if (c === undefined || c < lo || c > hi) {
          break;
        }
        cp = (cp << 6) | (c & 0x3f);
        lo = 0x80;
        hi = 0xbf;
      }
      if (j <= need) {
        out += "\ufffd";
        i += j;
        continue;
      }
      if (cp >= 0x10000) {
        cp -= 0x10000;
        out += String.fromCharCode(0xd800 + (cp >> 10), 0xdc00 + (cp & 0x3ff));
      } else {
        out += String.fromCharCode(cp);
      }
      i += need + 1;
    }
    return out;
  }

  // urllib.parse.unquote_plus(text, errors="replace"): each run of ASCII characters is
  // %-decoded to bytes and read as UTF-8; a "%" without two hex digits stays as it is.
  function unquotePlus(text) {
    var plain = text.replace(/\+/g, " "), out = "", i = 0, bytes;
    while (i < plain.length) {
      if (plain.charCodeAt(i) >= 0x80) {
        out += plain.charAt(i);
        i++;
        continue;
      }
      bytes = [];
      while (i < plain.length && plain.charCodeAt(i) < 0x80) {
        if (plain.charAt(i) === "%" && /^[0-9a-fA-F]{2}$/.test(plain.substr(i + 1, 2))) {
          bytes.push(parseInt(plain.substr(i + 1, 2), 16));
          i += 3;
        } else {
          bytes.push(plain.charCodeAt(i));
          i++;
        }
      }
      out += decodeUtf8(bytes);
    }
    return out;
  }

  // The first secret-named query argument with a value, as ApigeeParser._query picks it.
  function querySecret(raw) {
    var pairs = raw.slice(0, MAX_QUERY_CHARS).split("&"), seen = {}, count = 0, i, eq, name;
    var value;
    for (i = 0; i < pairs.length; i++) {
      if (pairs[i] === "") {
        continue;
      }
      eq = pairs[i].indexOf("=");
      name = unquotePlus(eq < 0 ? pairs[i] : pairs[i].slice(0, eq));
      value = eq < 0 ? "" : unquotePlus(pairs[i].slice(eq + 1));
      name = name.slice(0, 128);
      if (Object.prototype.hasOwnProperty.call(seen, "=" + name) || count >= MAX_QUERY_PARAMS) {
        continue;
      }
      seen["=" + name] = true;
      count++;
      if (SECRET_PARAM.test(name) && value !== "") {
        return value;
      }
    }
    return null;
  }

  function skipped(proxy) {
    var names = String(properties.skip_proxies || "").split(","), i;
    for (i = 0; i < names.length; i++) {
      if (names[i].trim() !== "" && names[i].trim() === proxy) {
        return true;
      }
    }
    return false;
  }

  function main() {
    var where, app, clientId, credential, query, key;
    if (skipped(variable("apiproxy.name"))) {
      return;
    }
    where = address(variable("client.ip")) || address(variable("proxy.client.ip"));
    if (where) {
      context.setVariable("gatewatch.subject.ip", "ip:" + where.ip);
      context.setVariable("gatewatch.subject.net", "ip:" + where.net);
    }

    key = variable("private.gatewatch.redaction_key");
    app = variable("developer.app.name").trim();
    clientId = variable("client_id").trim();
    if (app !== "") {
      context.setVariable("gatewatch.subject.consumer", "consumer:" +
        app.slice(0, MAX_CONSUMER_CHARS));
    } else if (clientId !== "" && key !== "") {
      context.setVariable("gatewatch.subject.consumer", "consumer:" + fingerprint(key, clientId));
    }

    // client_id once VerifyAPIKey/OAuthV2 ran; before that (flow hook) the key as the client
    // sent it, which is the same string when it is valid; then a secret query argument.
    credential = clientId || variable("request.header.x-api-key").trim() ||
      variable("request.header.apikey").trim();
    if (!credential) {
      query = variable("request.querystring") || variable("request.uri").split("?").slice(1)
        .join("?");
      credential = querySecret(query);
    }
    if (credential && key !== "") {
      context.setVariable("gatewatch.subject.key", "key:" + fingerprint(key, credential));
    }
  }

  main();
}());

/*
 * gatewatch: one verdict from the cached decisions of this request's subjects.
 *
 * A cached decision is the string the decision-ingest proxy (gatewatch-decisions,
 * AM-gatewatch-cache-value) stores:
 *
 *   gw1|<action>|<mode>|<score>|<stored_at_ms>|<ttl_s>|<detector>
 *
 * action: allow|tag|challenge|block; mode: shadow|log|challenge|enforce. Anything else (an older
 * or newer format, a damaged entry) is ignored: never block on what cannot be read.
 *
 * What a mode lets the gateway do (as the Kong plugin's decide.cap): enforce applies the action,
 * challenge caps it at a challenge, shadow and log apply nothing (the verdict is only recorded).
 * The strongest verdict wins: ranked by what will be applied, then by what was asked, so an
 * enforced tag beats a shadowed block; ties go to the most specific subject
 * (consumer, key, ip, net).
 *
 * Operator overrides arrive the same way with detector "override": a deny as a block in enforce
 * mode, an allow as an allow. An allow override wins over everything, even a deny or a block on
 * another subject of the same request (an operator allow-lists the specific inside the broad),
 * as in the Kong plugin; gatewatch.override says which override decided.
 *
 * Sets gatewatch.action (asked), gatewatch.enforced (applied), gatewatch.mode, gatewatch.subject,
 * gatewatch.score, gatewatch.detector, gatewatch.override (allow|deny, when one decided),
 * gatewatch.retry_after (seconds until the decision expires, 1..retry_after_max). A flow
 * variable gatewatch.mode_override (e.g. a FlowCallout Parameter) replaces every decision's own
 * mode, like the Kong plugin's per-route mode.
 */
(function () {
  "use strict";

  var STRENGTH = { allow: 0, tag: 1, challenge: 2, block: 3 };
  var MODES = { shadow: true, log: true, challenge: true, enforce: true };
  var SLOTS = ["consumer", "key", "ip", "net"];
  var FORMAT = "gw1";
  var OVERRIDE = "override";
  var DEFAULT_RETRY_AFTER_MAX = 60;

  function variable(name) {
    var value = context.getVariable(name);
    return value === null || value === undefined ? "" : String(value);
  }

  function known(table, name) {
    return Object.prototype.hasOwnProperty.call(table, name);
  }

  function parse(value) {
    var parts = value.split("|");
    if (parts.length < 7 || parts[0] !== FORMAT || !known(STRENGTH, parts[1]) ||
        !known(MODES, parts[2])) {
      return null;
    }
    return {
      action: parts[1],
      mode: parts[2],
      score: parts[3],
      storedAt: parseInt(parts[4], 10),
      ttl: parseInt(parts[5], 10),
      detector: parts.slice(6).join("|")
    };
  }

  function cap(action, mode) {
    if (mode === "enforce") {
      return action;
    }
    if (mode === "challenge") {
      return STRENGTH[action] > STRENGTH.challenge ? "challenge" : action;
    }
    return "allow";
  }

  function retryAfter(decision, now) {
    var max = parseInt(properties.retry_after_max, 10), wait;
    if (isNaN(max) || max < 1) {
      max = DEFAULT_RETRY_AFTER_MAX;
    }
    wait = Math.ceil((decision.storedAt + decision.ttl * 1000 - now) / 1000);
    if (isNaN(wait) || wait < 1) {
      return 1;
    }
    return Math.min(wait, max);
  }

  function main() {
    var override = variable("gatewatch.mode_override"), best = null, bestRank = -1;
    var i, decision, enforced, rank, now = Date.now(), allowed = null;
    for (i = 0; i < SLOTS.length; i++) {
      decision = parse(variable("gatewatch.cached." + SLOTS[i]));
      if (decision && decision.detector === OVERRIDE && decision.action === "allow" && !allowed) {
        allowed = decision;
        allowed.subject = variable("gatewatch.subject." + SLOTS[i]);
      }
      if (decision) {
        if (known(MODES, override)) {
          decision.mode = override;
        }
        enforced = cap(decision.action, decision.mode);
        rank = STRENGTH[enforced] * 4 + STRENGTH[decision.action];
        if (rank > bestRank) {
          bestRank = rank;
          best = decision;
          best.enforced = enforced;
          best.subject = variable("gatewatch.subject." + SLOTS[i]);
        }
      }
    }
    if (allowed) {
      best = allowed;
      best.enforced = "allow";
    }
    if (!best) {
      return;
    }
    if (best.detector === OVERRIDE) {
      context.setVariable("gatewatch.override", best.action === "allow" ? "allow" : "deny");
    }
    context.setVariable("gatewatch.action", best.action);
    context.setVariable("gatewatch.enforced", best.enforced);
    context.setVariable("gatewatch.mode", best.mode);
    context.setVariable("gatewatch.subject", best.subject);
    context.setVariable("gatewatch.score", best.score);
    context.setVariable("gatewatch.detector", best.detector);
    context.setVariable("gatewatch.retry_after", String(retryAfter(best, now)));
  }

  main();
}());

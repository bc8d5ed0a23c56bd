--- From a request's subjects to one verdict: overrides first, then the strongest decision.
--
-- Reads only the local cache. A verdict says what the decision asks (`action`), what the
-- rollout mode lets the gateway do (`enforced`), and why (`subject`, `detector`, `override`).

local cache = require "kong.plugins.gatewatch.cache"

local get_decision = cache.get_decision
local get_override = cache.get_override
local STRENGTH = cache.STRENGTH
local tonumber = tonumber

local _M = {}


--- What a mode allows the gateway to do with an action.
-- shadow and log only record what would happen; challenge never goes further than a challenge.
-- @param action string: allow|tag|challenge|block
-- @param mode string: shadow|log|challenge|enforce
-- @return the action to apply
local function cap(action, mode)
  if mode == "enforce" then
    return action
  end
  if mode == "challenge" then
    if STRENGTH[action] > STRENGTH.challenge then
      return "challenge"
    end
    return action
  end
  return "allow"
end
_M.cap = cap


local function override_verdict(subject, kind, plugin_mode)
  -- An override is the operator's own decision: only the route's rollout mode can soften it.
  local mode = plugin_mode or "enforce"
  local action = kind == "allow" and "allow" or "block"
  return {
    subject = subject,
    action = action,
    enforced = cap(action, mode),
    mode = mode,
    override = kind,
    detector = "override",
  }
end


--- The verdict for a request.
-- @param ns string: Redis prefix of the source
-- @param subjects table: array of subject strings, most specific first
-- @param n number: how many entries of `subjects` to use
-- @param plugin_mode string|nil: the route's mode, replacing each decision's own when set
-- @return verdict table, or nil when nothing is known about any subject
function _M.evaluate(ns, subjects, n, plugin_mode)
  -- Allow overrides beat everything, including a deny on another subject of the same request:
  -- operators allow-list the specific (a partner's consumer) inside the broad (its NAT range).
  local denied
  for i = 1, n do
    local kind = get_override(ns, subjects[i])
    if kind == "allow" then
      return override_verdict(subjects[i], "allow", plugin_mode)
    end
    if kind == "deny" and not denied then
      denied = subjects[i]
    end
  end
  if denied then
    return override_verdict(denied, "deny", plugin_mode)
  end

  local best, best_rank
  for i = 1, n do
    local action, mode, score, expires_ms, detector = get_decision(ns, subjects[i])
    if action and STRENGTH[action] then
      mode = plugin_mode or mode
      local enforced = cap(action, mode)
      -- Rank by what will be applied, then by what was asked, so an enforced tag beats a
      -- shadowed block, and among shadowed decisions the strongest is the one logged.
      local rank = STRENGTH[enforced] * 4 + STRENGTH[action]
      if not best or rank > best_rank then
        best_rank = rank
        best = {
          subject = subjects[i],
          action = action,
          enforced = enforced,
          mode = mode,
          score = score,
          expires_ms = expires_ms,
          detector = detector,
        }
      end
    end
  end
  return best
end


--- The value set with `kong.log.set_serialize_value("gatewatch", ...)` for http-log.
function _M.audit(verdict)
  return {
    action = verdict.action,
    enforced = verdict.enforced,
    subject = verdict.subject,
    score = tonumber(verdict.score),
    mode = verdict.mode,
    detector = verdict.detector,
    override = verdict.override,
  }
end


return _M

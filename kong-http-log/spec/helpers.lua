--- A small subset of Kong's schema validator (kong/db/schema/init.lua), enough for schema.lua.
--
-- Same messages, same error shape ({ config = { field = "msg" }, ["@entity"] = { ... } }),
-- same defaults handling (missing optional fields become ngx.null). It supports exactly the
-- features schema.lua uses; anything else raises, so a schema change cannot pass unchecked.

local stand_in = require "spec.stand_in"

local null = stand_in.ngx.ngx.null
local find = string.find
local sub = string.sub
local concat = table.concat

local MSG = {
  REQUIRED = "required field missing",
  UNKNOWN = "unknown field",
  STRING = "expected a string", NUMBER = "expected a number", INTEGER = "expected an integer",
  BOOLEAN = "expected a boolean", SET = "expected a set", RECORD = "expected a record",
  EQ = "value must be %s",
  GT = "value must be greater than %s",
  BETWEEN = "value should be between %d and %d",
  LEN_MIN = "length must be at least %d",
  MATCH = "invalid value: %s",
  CONTAINS = "expected to contain: %s",
  ONE_OF = "expected one of: %s",
  CONDITIONAL = "failed conditional validation given value of field '%s'",
}

local KNOWN = { type = true, required = true, default = true, description = true,
                referenceable = true, encrypted = true, elements = true, fields = true,
                eq = true, one_of = true, gt = true, between = true, len_min = true,
                match = true, contains = true, custom_validator = true }

local M = {}

local validate_field


local function copy(v)
  if type(v) ~= "table" then return v end
  local out = {}
  for k, x in pairs(v) do out[k] = copy(x) end
  return out
end


local function fill(fields, input)
  local out = {}
  for k, v in pairs(input) do out[k] = v end
  for _, entry in ipairs(fields) do
    local name, f = next(entry)
    local v = out[name]
    if v == nil then
      if f.default ~= nil then
        v = copy(f.default)
      elseif f.type == "record" and f.required then
        v = fill(f.fields, {})
      elseif not f.required then
        v = null
      end
    elseif f.type == "record" and type(v) == "table" then
      v = fill(f.fields, v)
    end
    out[name] = v
  end
  return out
end


local function validate_record(fields, value)
  local defs, errors = {}, {}
  for _, entry in ipairs(fields) do
    local name, f = next(entry)
    defs[name] = f
  end
  for name, f in pairs(defs) do
    local ok, err = validate_field(f, value[name])
    if not ok then errors[name] = err end
  end
  for name in pairs(value) do
    if not defs[name] then errors[name] = MSG.UNKNOWN end
  end
  if next(errors) then return nil, errors end
  return true
end


local TYPES = {
  string = function(v) return type(v) == "string" end,
  number = function(v) return type(v) == "number" end,
  integer = function(v) return type(v) == "number" and v == math.floor(v) end,
  boolean = function(v) return type(v) == "boolean" end,
  set = function(v) return type(v) == "table" end,
  record = function(v) return type(v) == "table" end,
}


validate_field = function(f, value)
  if value == nil or value == null then
    if f.required then return nil, MSG.REQUIRED end
    return true
  end
  for attr in pairs(f) do
    assert(KNOWN[attr], "schema attribute not supported by the stand-in: " .. attr)
  end
  if not TYPES[f.type](value) then return nil, MSG[f.type:upper()] end
  if f.type == "set" then
    for _, v in ipairs(value) do
      local el = setmetatable({ required = true }, { __index = f.elements })
      local ok, err = validate_field(el, v)
      if not ok then return nil, err end
    end
  elseif f.type == "record" then
    local ok, err = validate_record(f.fields, value)
    if not ok then return nil, err end
  end
  if f.eq ~= nil and value ~= f.eq then return nil, MSG.EQ:format(tostring(f.eq)) end
  if f.one_of then
    local found = false
    for _, o in ipairs(f.one_of) do found = found or value == o end
    if not found then return nil, MSG.ONE_OF:format(concat(f.one_of, ", ")) end
  end
  if f.gt and not (value > f.gt) then return nil, MSG.GT:format(tostring(f.gt)) end
  if f.between and (value < f.between[1] or value > f.between[2]) then
    return nil, MSG.BETWEEN:format(f.between[1], f.between[2])
  end
  local len_min = f.len_min or (f.type == "string" and 1 or nil)
  if len_min and #value < len_min then return nil, MSG.LEN_MIN:format(len_min) end
  if f.match and not value:match(f.match) then return nil, MSG.MATCH:format(value) end
  if f.contains then
    local found = false
    for _, v in ipairs(value) do found = found or v == f.contains end
    if not found then return nil, MSG.CONTAINS:format(f.contains) end
  end
  if f.custom_validator then return f.custom_validator(value) end
  return true
end


local function path_get(t, path)
  for part in path:gmatch("[^.]+") do
    if type(t) ~= "table" then return nil end
    t = t[part]
  end
  return t
end


local function path_set(t, path, value)
  local dot = find(path, ".", 1, true)
  if not dot then t[path] = value; return end
  local head = sub(path, 1, dot - 1)
  if type(t[head]) ~= "table" then t[head] = {} end
  path_set(t[head], sub(path, dot + 1), value)
end


local function schema_field(fields, path)
  local f = { fields = fields }
  for part in path:gmatch("[^.]+") do
    local found
    for _, entry in ipairs(f.fields) do
      local name, def = next(entry)
      if name == part then found = def end
    end
    f = assert(found, "no schema field " .. path)
  end
  return f
end


local function conditional(schema, entity, arg, errors)
  local if_def = setmetatable(copy(arg.if_match),
                              { __index = schema_field(schema.fields, arg.if_field) })
  if not validate_field(if_def, path_get(entity, arg.if_field)) then
    return true
  end
  local then_value = path_get(entity, arg.then_field)
  local then_def = setmetatable(copy(arg.then_match),
                                { __index = schema_field(schema.fields, arg.then_field) })
  local ok, err = validate_field(then_def, then_value)
  if ok and arg.then_match.required and (then_value == nil or then_value == null) then
    ok, err = nil, MSG.REQUIRED
  end
  if ok then return true end
  path_set(errors, arg.then_field, err)
  return nil, MSG.CONDITIONAL:format(arg.if_field)
end


--- Validate a plugin config the way Kong does for `POST /plugins`.
-- @param config table: the `config` given by the user
-- @param schema table: the plugin's schema.lua
-- @return the entity with defaults filled, or nil and the errors table
function M.validate_plugin_config_schema(config, schema)
  local entity = fill(schema.fields, { config = config })
  local _, errors = validate_record(schema.fields, entity)
  errors = errors or {}
  for _, check in ipairs(schema.entity_checks or {}) do
    local name, arg = next(check)
    assert(name == "conditional", "entity check not supported by the stand-in: " .. name)
    local ok, err = conditional(schema, entity, arg, errors)
    if not ok then
      errors["@entity"] = errors["@entity"] or {}
      table.insert(errors["@entity"], err)
    end
  end
  if next(errors) then return nil, errors end
  return entity
end


return M

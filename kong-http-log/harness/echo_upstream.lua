--- TEST-ONLY upstream: answers with the request it received (headers, uri) as JSON, so tests
-- can see which headers the gateway forwarded.

local json = require "dkjson"

return function()
  ngx.header["Content-Type"] = "application/json"
  ngx.say(json.encode({
    uri = ngx.var.request_uri,
    headers = ngx.req.get_headers(100),
  }))
end

--- HMAC-SHA256 through LuaJIT's FFI and the OpenSSL that nginx (and Kong) already link.
--
-- One C call per fingerprint, no allocation but the result string. Loaded only when the
-- `key` subject is enabled; plain Lua (busted) cannot load it and the key subject is skipped.

local ffi = require "ffi"

local C = ffi.C
local ffi_new = ffi.new
local ffi_string = ffi.string

-- Each declaration on its own: another library (resty.openssl in Kong) may have declared some
-- already, and LuaJIT refuses a redefinition, which would otherwise abort the whole block.
local DECLARATIONS = {
  "typedef struct evp_md_st EVP_MD;",
  "const EVP_MD *EVP_sha256(void);",
  [[unsigned char *HMAC(const EVP_MD *evp_md, const void *key, int key_len,
                        const unsigned char *d, size_t n, unsigned char *md,
                        unsigned int *md_len);]],
}
for _, decl in ipairs(DECLARATIONS) do
  pcall(ffi.cdef, decl)
end

local SHA256_LEN = 32
local out = ffi_new("unsigned char[?]", SHA256_LEN)
local out_len = ffi_new("unsigned int[1]")


--- HMAC-SHA256(key, message) as 32 raw bytes.
-- @param key string
-- @param message string
-- @return digest string, or nil and an error
return function(key, message)
  if C.HMAC(C.EVP_sha256(), key, #key, message, #message, out, out_len) == nil then
    return nil, "HMAC() failed"
  end
  return ffi_string(out, out_len[0])
end

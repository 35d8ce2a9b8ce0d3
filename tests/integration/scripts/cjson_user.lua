-- Test script: uses Debian's lua-cjson (a C module found through package.cpath).
local cjson = require "cjson"

function on_message(conn, data)
  local t = cjson.decode(data)
  t.seen = true
  conn:send(cjson.encode({ n = t.n + 1 }))
end

-- Test script: requires a module that lives next to it (not in the current directory).
local helper = require "req_helper"

function on_message(conn, data)
  conn:send(helper.greet(data))
end

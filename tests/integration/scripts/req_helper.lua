-- Module for req_main.lua, found through the script's own directory in package.path.
local M = {}

function M.greet(name)
  return "helper greets " .. name
end

return M

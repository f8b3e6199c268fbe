-- moonflow.log: mf.log.debug/info/warning/error.  Inside a run each line is
-- prefixed with the run's name.  MOONFLOW_LOG_LEVEL sets the threshold
-- (DEBUG, INFO, WARNING, ERROR, OFF; WARNING by default); a line below it
-- costs one comparison.  print inside a log_prints run is logged too.
local core = require "moonflow.core"

local M = {}
local LEVELS = { DEBUG = 10, INFO = 20, WARNING = 30, ERROR = 40 }
M.levels = LEVELS

local concat, select, tostring = table.concat, select, tostring

-- The threshold is read once: MOONFLOW_LOG_LEVEL is read when the module
-- opens, so a filtered call costs one comparison.
local threshold = core.log_level()

-- tostring that never raises (a value's __tostring may, or may return
-- something that is not a string).
local function describe(value)
  local ok, text = pcall(tostring, value)
  if ok and type(text) == "string" then return text end
  return "(error object: " .. type(value) .. ")"
end
M.describe = describe

local function logger(level)
  return function(...)
    if level < threshold then return end
    local n = select("#", ...)
    local parts = {}
    for i = 1, n do parts[i] = describe((select(i, ...))) end
    core.log(level, concat(parts, " "))
  end
end

-- print inside a log_prints run: an INFO line, shown at the default level
-- too (Prefect shows it); a level set in MOONFLOW_LOG_LEVEL above INFO
-- hides it.
local level_set = (os.getenv("MOONFLOW_LOG_LEVEL") or "") ~= ""
function M.print(...)
  if level_set and LEVELS.INFO < threshold then return end
  local n = select("#", ...)
  local parts = {}
  for i = 1, n do parts[i] = tostring((select(i, ...))) end
  core.log(LEVELS.INFO, concat(parts, " "), true)
end

M.debug = logger(LEVELS.DEBUG)
M.info = logger(LEVELS.INFO)
M.warning = logger(LEVELS.WARNING)
M.error = logger(LEVELS.ERROR)

return M

-- moonflow.control: the Lua parts of a run's control.  The engine owns the
-- life of a run -- attempts, retry delays and the retry condition, timeouts,
-- the points where hooks run, cancellation (bindings/runner.c gives it the
-- Lua callbacks) -- so what is left here is what runs inside the run: the
-- hooks themselves, and the name a task_run_name gives a run.
local core = require "moonflow.core"
local log = require "moonflow.log"

local M = {}

local format, unpack = string.format, table.unpack

local describe = log.describe
M.describe = describe

-- Runs the hooks of one point in turn, inside the run (they may wait): one
-- that raises is logged, and the others still run.
function M.run_hooks(hooks, task, fut, state, kind)
  for _, hook in ipairs(hooks) do
    local ok, err = pcall(hook, task, fut, state)
    if not ok then
      local error_text = require("moonflow.show").error_text -- (show needs this module)
      log.error(format("%s hook failed: %s", kind, error_text(err)))
    end
  end
end

-- Names given to functions that stand for another (a Task that came
-- from another Lua state: moonflow.runners).
local given_names = setmetatable({}, { __mode = "k" })
function M.set_parameter_names(fn, names) given_names[fn] = names end

-- The parameter names of fn, for "{param}" templates.
local function parameter_names(fn)
  if given_names[fn] then return given_names[fn] end
  local names = {}
  for i = 1, debug.getinfo(fn, "u").nparams do
    names[i] = debug.getlocal(fn, i)
  end
  return names
end
M.parameter_names = parameter_names

local function run_name(template, fn, ...)
  if type(template) == "function" then
    local name = core.call_callback(template, ...)
    if type(name) ~= "string" then
      error(core.error("UsageError", format(
        "task_run_name function returned %s, not a string", type(name))), 0)
    end
    return name
  end
  local args, values = table.pack(...), {}
  for i, name in ipairs(parameter_names(fn)) do values[name] = args[i] end
  return (template:gsub("{([%w_]+)}", function(key)
    local value = values[key]
    if value == nil then return "{" .. key .. "}" end
    return describe(value)
  end))
end

-- Names the current run from its arguments, by the template.
function M.name_run(template, fn, ...)
  local name = run_name(template, fn, ...)
  if name:find("\0", 1, true) then -- the engine keeps C strings
    error(core.error("UsageError",
      "task_run_name gave a name with a NUL byte"), 0)
  end
  core.rename(core.current(), name)
end

-- The bodies named_body made: { template, fn } (a runner that copies
-- names the run itself, then sends fn alone).
M.named_bodies = setmetatable({}, { __mode = "k" })

-- The body of a task with task_run_name: the run is named once, by its
-- first attempt, from its (resolved) arguments; fn is the user's function.
function M.named_body(body, template, fn)
  local named = function(...)
    if core.attempt() == 1 then M.name_run(template, fn, ...) end
    return body(...)
  end
  M.named_bodies[named] = { template = template, fn = fn }
  return named
end

return M

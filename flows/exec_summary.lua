-- exec_summary: run programs as mapped tasks (no shell unless asked for)
-- and summarise how each ended.
local mf = require "moonflow"

local commands = {
  { "true" },
  { "echo", "hello from echo" },
  { "false" },
  { "/bin/sh", "-c", "echo to stderr >&2; exit 3" },
  { "/bin/sh", "-c", "kill -TERM $$" },
  { "sleep", "5" },                      -- stopped by its timeout
  { "no-such-program" },                 -- cannot start
}

local run = mf.task({ name = "run" }, function(argv)
  local ok, r = pcall(mf.exec, argv, { timeout = 1 })
  if not ok then return { argv = argv, error = r.code } end
  return { argv = argv, code = r.code, signal = r.signal,
           out = (r.stdout .. r.stderr):gsub("\n$", "") }
end)

local summary = { ok = 0, failed = 0, killed = 0, errors = 0 }
for _, r in ipairs(run:map(mf.quote(commands)):result()) do
  local what = table.concat(r.argv, " ")
  if r.error then
    summary.errors = summary.errors + 1
    print(("%-40s error %s"):format(what, r.error))
  elseif r.signal ~= 0 then
    summary.killed = summary.killed + 1
    print(("%-40s killed by signal %d"):format(what, r.signal))
  else
    summary[r.code == 0 and "ok" or "failed"] = summary[r.code == 0 and "ok" or "failed"] + 1
    print(("%-40s exit %d%s"):format(what, r.code, r.out ~= "" and ("  (" .. r.out .. ")") or ""))
  end
end
print(("%d ok, %d failed, %d killed, %d could not run"):format(
  summary.ok, summary.failed, summary.killed, summary.errors))

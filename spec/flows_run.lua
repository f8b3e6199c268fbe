-- spec/flows_run.lua: runs every example in flows/ with the moonflow program
-- and compares what it prints with flows/expected/<name>.txt.  An expected
-- file whose first line is "# lines in any order" is compared line by line
-- regardless of order (an example that prints results as they complete).
-- usage: moonflow spec/flows_run.lua path/to/moonflow
local program = assert(arg[1], "usage: flows_run.lua MOONFLOW")
local failed, count = 0, 0
local listing = io.popen("ls flows/*.lua")
for path in listing:lines() do
  local name = path:match("([^/]+)%.lua$")
  local expected_file = io.open("flows/expected/" .. name .. ".txt")
  count = count + 1
  if not expected_file then
    print("FAIL " .. name .. ": flows/expected/" .. name .. ".txt is missing")
    failed = failed + 1
  else
    local expected = expected_file:read("a")
    expected_file:close()
    -- Log lines carry the time of day: examples run with the log off.
    local pipe = io.popen("MOONFLOW_LOG_LEVEL=OFF " .. program .. " " .. path .. " 2>&1")
    local output = pipe:read("a")
    local ok, _, code = pipe:close()
    local any_order = "# lines in any order\n"
    if expected:sub(1, #any_order) == any_order then
      local function sorted(text)
        local lines = {}
        for line in text:gmatch("[^\n]*\n") do lines[#lines + 1] = line end
        table.sort(lines)
        return table.concat(lines)
      end
      expected = sorted(expected:sub(#any_order + 1))
      output = sorted(output)
    end
    if output ~= expected or not ok then
      failed = failed + 1
      print(string.format("FAIL %s (exit %s)\n-- expected:\n%s-- got:\n%s", name,
        tostring(code), expected, output))
    else
      print("ok   " .. name)
    end
  end
end
listing:close()
print(string.format("%d passed, %d failed", count - failed, failed))
if failed > 0 or count == 0 then error("example flows failed", 0) end

-- wordcount: count the words of every file in a directory, one mapped run
-- per file (read line by line: a big file never sits in memory), then
-- reduce the counts.  moonflow flows/wordcount.lua [DIR]; without DIR it
-- writes a few files into a temporary directory first.
local mf = require "moonflow"

local dir = arg and arg[1]
local made
if not dir then
  dir = os.tmpname() -- a unique name, made into a directory
  os.remove(dir)
  mf.fs.mkdir(dir)
  made = dir
  mf.fs.write(dir .. "/a.txt", "the quick brown fox\njumps over the lazy dog\n")
  mf.fs.write(dir .. "/b.txt", "the dog sleeps\nthe fox does not\n")
  mf.fs.write(dir .. "/c.txt", "a fox, a dog, and the moon\n")
end

local count = mf.task({ name = "count" }, function(path)
  local words = {}
  for line in mf.fs.lines(path) do
    for word in line:lower():gmatch("%a+") do words[word] = (words[word] or 0) + 1 end
  end
  return words
end)

local files = {}
for _, name in ipairs(mf.fs.list(dir)) do
  local path = dir .. "/" .. name
  if mf.fs.stat(path).type == "file" then files[#files + 1] = path end
end

local total = {}
for _, words in ipairs(count:map(files):result()) do
  for word, n in pairs(words) do total[word] = (total[word] or 0) + n end
end

local ranked = {}
for word, n in pairs(total) do ranked[#ranked + 1] = { word = word, n = n } end
table.sort(ranked, function(a, b)
  if a.n ~= b.n then return a.n > b.n end
  return a.word < b.word
end)
print(("%d files, %d distinct words"):format(#files, #ranked))
for i = 1, math.min(5, #ranked) do
  print(("%-6s %d"):format(ranked[i].word, ranked[i].n))
end
if made then mf.fs.remove(made, { recursive = true }) end

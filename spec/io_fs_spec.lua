-- I/O inside runs: mf.fs.* (api.md, "I/O inside runs").  Whole files on
-- libuv's thread pool, lines in chunks, listings, stat, mkdir, remove,
-- rename; every failure an IOError naming the path.
package.path = "spec/?.lua;" .. package.path
local h = require "helper"
local peers = require "peers.peers"
local mf, lu = h.mf, h.lu

local SANITIZED = (os.getenv("LD_PRELOAD") or os.getenv("MF_SUBPROCESS_PRELOAD") or "")
  :find("asan") ~= nil

local function io_error(code, fn, ...)
  local err = h.raises_kind("IOError", fn, ...)
  lu.assertEquals(err.code, code, tostring(err))
  return err
end

local function sh(cmd)
  assert(os.execute(cmd), cmd)
end

TestFs = {}

function TestFs:setUp()
  self.dir = peers.tmpdir()
end

function TestFs:tearDown()
  peers.cleanup()
end

function TestFs:test_write_then_read_round_trips_any_bytes()
  local bytes = {}
  for i = 0, 255 do bytes[#bytes + 1] = string.char(i) end
  local data = table.concat(bytes):rep(4096) -- 1 MB with zeros and all bytes
  local path = self.dir .. "/blob"
  lu.assertNil(mf.fs.write(path, data))
  lu.assertEquals(mf.fs.read(path), data)
  mf.fs.write(path, "")
  lu.assertEquals(mf.fs.read(path), "")
end

function TestFs:test_write_replaces_atomically_and_keeps_the_mode()
  local path = self.dir .. "/f"
  mf.fs.write(path, "old")
  sh("chmod 640 " .. path)
  local a, b = ("a"):rep(1 << 20), ("b"):rep(1 << 20)
  -- Readers never see a mix or a part while writers replace the file.
  local writer = mf.task(function()
    for i = 1, 20 do mf.fs.write(path, i % 2 == 0 and a or b) end
  end)
  local reader = mf.task(function()
    local seen = {}
    for _ = 1, 40 do
      local s = mf.fs.read(path)
      seen[#seen + 1] = (s == "old" or s == a or s == b) and "whole" or ("torn " .. #s)
    end
    return seen
  end)
  local w, r = writer:submit(), reader:submit()
  w:result()
  for _, v in ipairs(r:result()) do lu.assertEquals(v, "whole") end
  lu.assertEquals(mf.fs.stat(path).mode, tonumber("640", 8))
  lu.assertEquals(mf.fs.list(self.dir), { "f" }) -- no temporary left
end

function TestFs:test_append_creates_a_missing_file_then_appends()
  local path = self.dir .. "/log"
  mf.fs.append(path, "one\n")
  mf.fs.append(path, "two\n")
  lu.assertEquals(mf.fs.read(path), "one\ntwo\n")
end

function TestFs:test_lines_gives_each_line_without_its_end()
  local path = self.dir .. "/lines"
  mf.fs.write(path, "a\n\nb\r\nlast")
  local got = {}
  for line in mf.fs.lines(path) do got[#got + 1] = line end
  lu.assertEquals(got, { "a", "", "b\r", "last" })
  mf.fs.write(path, "")
  for _ in mf.fs.lines(path) do lu.fail("an empty file has no line") end
end

function TestFs:test_lines_across_chunk_boundaries()
  local path = self.dir .. "/long"
  local expected = {}
  for i = 1, 3000 do expected[i] = ("%d:"):format(i) .. ("x"):rep(i % 97) end
  expected[#expected + 1] = ("y"):rep(200000) -- a line longer than a chunk
  mf.fs.write(path, table.concat(expected, "\n") .. "\n")
  local got = {}
  for line in mf.fs.lines(path) do got[#got + 1] = line end
  lu.assertEquals(#got, #expected)
  lu.assertEquals(got, expected)
end

function TestFs:test_breaking_out_of_lines_closes_the_file()
  local path = self.dir .. "/lines"
  mf.fs.write(path, ("line\n"):rep(100))
  local before = peers.fd_count(mf)
  for _ = 1, 20 do
    for line in mf.fs.lines(path) do
      lu.assertEquals(line, "line")
      break
    end
  end
  lu.assertEquals(peers.fd_count(mf), before)
end

function TestFs:test_lines_of_a_50_mb_file_in_bounded_memory()
  local path = self.dir .. "/big"
  local chunk = {}
  for i = 1, 10000 do chunk[i] = ("%08d "):format(i) .. ("z"):rep(91) end
  chunk = table.concat(chunk, "\n") .. "\n" -- 1 MB of 100-byte lines
  for _ = 1, 50 do mf.fs.append(path, chunk) end
  local size = 50 * #chunk
  lu.assertEquals(mf.fs.stat(path).size, size)
  chunk = nil
  collectgarbage()
  local base = collectgarbage("count")
  local peak, count, bytes = 0, 0, 0
  for line in mf.fs.lines(path) do
    count = count + 1
    bytes = bytes + #line + 1
    if count % 5000 == 0 then peak = math.max(peak, collectgarbage("count")) end
  end
  lu.assertEquals(count, 500000)
  lu.assertEquals(bytes, size)
  -- Lua's heap never held more than a few MB of it (the file is 50 MB).
  lu.assertTrue(peak - base < 16 * 1024, ("peak %.0f KB over base"):format(peak - base))
end

function TestFs:test_list_is_sorted_by_bytes_and_keeps_dotfiles()
  for _, name in ipairs { "b", "a", ".hidden", "B", "10", "9" } do
    mf.fs.write(self.dir .. "/" .. name, name)
  end
  mf.fs.mkdir(self.dir .. "/sub")
  lu.assertEquals(mf.fs.list(self.dir), { ".hidden", "10", "9", "B", "a", "b", "sub" })
  lu.assertEquals(mf.fs.list(self.dir .. "/sub"), {})
end

function TestFs:test_stat_gives_type_size_mtime_mode_and_nil_when_missing()
  local file, dir = self.dir .. "/f", self.dir .. "/d"
  mf.fs.write(file, "12345")
  mf.fs.mkdir(dir)
  sh("chmod 604 " .. file .. " && ln -s f " .. self.dir .. "/link && mkfifo " .. self.dir .. "/fifo")
  local st = mf.fs.stat(file)
  lu.assertEquals(st.type, "file")
  lu.assertEquals(st.size, 5)
  lu.assertEquals(st.mode, tonumber("604", 8))
  lu.assertTrue(math.abs(st.mtime - os.time()) < 3600)
  lu.assertEquals(mf.fs.stat(dir).type, "directory")
  lu.assertEquals(mf.fs.stat(self.dir .. "/link").type, "link") -- not followed
  lu.assertEquals(mf.fs.stat(self.dir .. "/fifo").type, "other")
  lu.assertNil(mf.fs.stat(self.dir .. "/missing"))
  lu.assertNil(mf.fs.stat(file .. "/below-a-file"))
end

function TestFs:test_mkdir_with_parents_accepts_an_existing_directory()
  local deep = self.dir .. "/a/b/c"
  io_error("ENOENT", mf.fs.mkdir, deep)
  mf.fs.mkdir(deep, { parents = true })
  lu.assertEquals(mf.fs.stat(deep).type, "directory")
  mf.fs.mkdir(deep, { parents = true })
  io_error("EEXIST", mf.fs.mkdir, deep)
  mf.fs.write(self.dir .. "/file", "x")
  io_error("EEXIST", mf.fs.mkdir, self.dir .. "/file", { parents = true })
end

function TestFs:test_remove_recursive_never_follows_links_out_of_the_tree()
  local outside = self.dir .. "/outside"
  mf.fs.mkdir(outside)
  mf.fs.write(outside .. "/keep", "precious")
  local tree = self.dir .. "/tree"
  mf.fs.mkdir(tree .. "/sub/deeper", { parents = true })
  mf.fs.write(tree .. "/sub/deeper/f", "x")
  sh("ln -s " .. outside .. " " .. tree .. "/sub/to-outside")
  sh("ln -s " .. outside .. "/keep " .. tree .. "/file-link")
  io_error("ENOTEMPTY", mf.fs.remove, tree)
  mf.fs.remove(tree, { recursive = true })
  lu.assertNil(mf.fs.stat(tree))
  lu.assertEquals(mf.fs.read(outside .. "/keep"), "precious")
  io_error("ENOENT", mf.fs.remove, tree)
  io_error("ENOENT", mf.fs.remove, tree, { recursive = true })
  mf.fs.write(self.dir .. "/single", "x")
  mf.fs.remove(self.dir .. "/single")
  lu.assertNil(mf.fs.stat(self.dir .. "/single"))
end

function TestFs:test_rename()
  mf.fs.write(self.dir .. "/from", "moved")
  mf.fs.rename(self.dir .. "/from", self.dir .. "/to")
  lu.assertNil(mf.fs.stat(self.dir .. "/from"))
  lu.assertEquals(mf.fs.read(self.dir .. "/to"), "moved")
  io_error("ENOENT", mf.fs.rename, self.dir .. "/from", self.dir .. "/again")
end

function TestFs:test_failures_are_io_errors_naming_the_path()
  local missing = self.dir .. "/missing"
  local err = io_error("ENOENT", mf.fs.read, missing)
  lu.assertStrContains(err.message, missing)
  lu.assertStrContains(tostring(err), "IOError: ")
  io_error("EISDIR", mf.fs.read, self.dir)
  io_error("EISDIR", mf.fs.lines, self.dir)
  io_error("ENOENT", mf.fs.lines, missing)
  io_error("ENOENT", mf.fs.list, missing)
  io_error("ENOTDIR", mf.fs.list, "/etc/hostname")
  io_error("ENOENT", mf.fs.write, self.dir .. "/no/such/dir/f", "x")
end

function TestFs:test_a_permission_error_is_EACCES()
  -- root passes permission bits: a read-only kernel directory refuses it too.
  local is_root = io.popen("id -u"):read("l") == "0"
  local target
  if is_root then
    target = "/sys/kernel/mf-io-spec"
  else
    local locked = self.dir .. "/locked"
    mf.fs.mkdir(locked)
    sh("chmod 500 " .. locked)
    target = locked .. "/f"
  end
  local err = io_error("EACCES", mf.fs.write, target, "x")
  lu.assertStrContains(err.message, target)
  io_error("EACCES", mf.fs.append, target, "x")
end

function TestFs:test_wrong_arguments_are_usage_errors()
  h.raises_kind("UsageError", mf.fs.read, nil)
  h.raises_kind("UsageError", mf.fs.read, "")
  h.raises_kind("UsageError", mf.fs.read, "a\0b")
  h.raises_kind("UsageError", mf.fs.write, self.dir .. "/f", {})
  h.raises_kind("UsageError", mf.fs.mkdir, self.dir .. "/d", "parents")
  h.raises_kind("UsageError", mf.fs.rename, self.dir .. "/a", 42)
end

function TestFs:test_many_files_concurrently_in_mapped_runs()
  local paths = {}
  for i = 1, 40 do
    paths[i] = ("%s/f%02d"):format(self.dir, i)
    mf.fs.write(paths[i], ("%d\n"):format(i):rep(i))
  end
  local count = mf.task(function(path)
    local n = 0
    for _ in mf.fs.lines(path) do n = n + 1 end
    return n + #mf.fs.read(path) * 0
  end)
  local got = count:map(paths):result()
  for i = 1, 40 do lu.assertEquals(got[i], i) end
end

function TestFs:test_waiting_in_a_done_callback_is_a_usage_error()
  local path = self.dir .. "/f"
  mf.fs.write(path, "x")
  local outcome
  local fut = mf.task(function() return 1 end):submit()
  fut:add_done_callback(function()
    local ok, err = pcall(mf.fs.read, path)
    outcome = ok and "read" or err.kind
  end)
  fut:wait()
  mf.sleep(0) -- the callback runs from the scheduler
  lu.assertEquals(outcome, "UsageError")
end

function TestFs:test_a_cancelled_run_leaves_no_descriptor_open()
  local path = self.dir .. "/f"
  mf.fs.write(path, ("line\n"):rep(1000))
  local before = peers.fd_count(mf)
  local started, go = mf.promise()
  local reader = mf.task(function()
    for _ in mf.fs.lines(path) do
      go(true)
      mf.sleep(60) -- parked with the file open
    end
  end)
  local fut = reader:submit()
  started:result()
  lu.assertTrue(fut:cancel())
  lu.assertEquals(fut:state().type, "CANCELLED")
  lu.assertEquals(peers.fd_count(mf), before)
end

h.run()

-- moonflow.io: I/O inside runs (api.md, "I/O inside runs").  The calls are
-- in C (core.io: bindings/io*.c); this file names them as the API does.
local core = require "moonflow.core"
local cio = core.io

local M = {}

M.exec = cio.exec
M.promise = cio.promise
M.dns = { resolve = cio.resolve }
M.fs = {
  read = cio.fs_read, write = cio.fs_write, append = cio.fs_append,
  lines = cio.fs_lines, list = cio.fs_list, stat = cio.fs_stat,
  mkdir = cio.fs_mkdir, remove = cio.fs_remove, rename = cio.fs_rename,
}

local function usage(fmt, ...)
  error(core.error("UsageError", string.format(fmt, ...)), 0)
end

-- {====== Servers ======

-- The task that handles each connection: the handler itself when it is a
-- Task, else a task of it named after the server ("127.0.0.1:8080").  A
-- connection lives on this process's loop and cannot be copied to a
-- worker: the handler's runs are coroutines here, whatever the default
-- runner (mf.configure's task_runner), unless its Task names a runner.
local function handler_task(handler, name)
  local mf = require "moonflow.init"
  local here = mf.runners.coroutines()
  if not core.is_task(handler) then
    return mf.task({ name = name, runner = here }, handler)
  end
  local _, _, opts, is_flow = core.task_info(handler)
  if is_flow or opts.runner ~= nil then return handler end
  return handler:with({ runner = here })
end

local function check_handler(handler, what)
  if not core.is_task(handler) and type(handler) ~= "function" then
    usage("%s: handler must be a function or a Task, got %s", what,
      type(handler))
  end
end

-- Each accepted connection is handed to a new run of the handler, and
-- belongs to that run (closed when it ends).
local function serve(listen, what, handler, where, port)
  check_handler(handler, what)
  local task
  local function on_accept(conn)
    cio.conn_attach(conn, task:submit(conn))
  end
  local server
  if port == nil then server = listen(where, on_accept)
  else server = listen(where, port, on_accept) end
  task = handler_task(handler, server.name)
  return server
end

M.tcp = {
  connect = cio.tcp_connect,
  listen = function(host, port, handler)
    return serve(cio.tcp_listen, "mf.tcp.listen", handler, host, port)
  end,
}
M.unix = {
  connect = cio.unix_connect,
  listen = function(path, handler)
    return serve(cio.unix_listen, "mf.unix.listen", handler, path, nil)
  end,
}

-- }======

-- {====== HTTP ======

M.http = { request = cio.http_request, get = cio.http_get, post = cio.http_post }

-- }======

return M

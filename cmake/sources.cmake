# sources.cmake -- the one list of each part's sources, with absolute paths,
# for every target that compiles them (the libraries, the module, the
# program, and the engine built again under ThreadSanitizer in spec/c/).
set(MF_ENGINE_SOURCES
  engine/engine.c engine/heap.c engine/life.c engine/limits.c engine/park.c engine/run.c
  engine/sched.c engine/timers.c engine/tree.c engine/wait.c)
set(MF_BINDING_SOURCES
  bindings/args.c bindings/codec.c bindings/collect.c bindings/codec_decode.c
  bindings/codec_encode.c bindings/codec_fn.c
  bindings/control.c bindings/curl_api.c bindings/embed.c bindings/errors.c
  bindings/cache.c bindings/flow.c bindings/future.c bindings/group.c bindings/io.c
  bindings/io_conn.c bindings/io_dns.c bindings/io_exec.c bindings/io_fs.c
  bindings/io_http.c bindings/io_promise.c bindings/io_spawn.c
  bindings/io_tcp.c bindings/lua_heap.c bindings/luv.c bindings/module.c bindings/noted_boxes.c
  bindings/origin.c
  bindings/preempt.c bindings/run_set.c bindings/runner.c bindings/runners.c
  bindings/runners_msg.c bindings/runners_procs.c bindings/runners_threads.c
  bindings/state.c bindings/store.c bindings/store_checkpoint.c bindings/store_lua.c
  bindings/store_prune.c bindings/store_read.c bindings/store_writer.c bindings/task.c
  bindings/wait.c bindings/worker.c)
set(MF_PROGRAM_SOURCES bindings/main.c bindings/progress.c bindings/repl.c)
# The installed headers.
set(MF_PUBLIC_HEADERS engine/moonflow.h bindings/moonflow_lua.h)

get_filename_component(MF_ROOT "${CMAKE_CURRENT_LIST_DIR}/.." ABSOLUTE)
foreach(list MF_ENGINE_SOURCES MF_BINDING_SOURCES MF_PROGRAM_SOURCES
             MF_PUBLIC_HEADERS)
  list(TRANSFORM ${list} PREPEND "${MF_ROOT}/")
endforeach()

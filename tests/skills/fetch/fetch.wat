;; Calls palyra_http.fetch with the request in its data segment and prints the host's JSON answer.
;; Tests substitute REQUEST (and its length) before compiling.
(module
  (import "palyra_http" "fetch" (func $fetch (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 2)
  (data (i32.const 1024) "REQUEST")
  (func (export "_start")
    (local $n i32)
    (local.set $n (call $fetch (i32.const 1024) (i32.const REQUEST_LEN) (i32.const 8192) (i32.const 50000)))
    (if (i32.gt_u (local.get $n) (i32.const 50000)) (then (local.set $n (i32.const 50000))))
    (i32.store (i32.const 0) (i32.const 8192))
    (i32.store (i32.const 4) (local.get $n))
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))))

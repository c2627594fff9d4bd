;; release-announcer: the webhook example's release announcement skill
;; A demo skill for examples/webhook-automation: it wraps its JSON input (prompt, trigger, input) as
;; {"announcement": "...", "request": <input>} on stdout. Compiled to announce.wasm with wat2wasm (any WebAssembly text
;; tool); tests/test_examples.py checks the shipped .wasm is this file compiled.
(module
  (import "wasi_snapshot_preview1" "fd_read" (func $fd_read (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $proc_exit (param i32)))
  (memory (export "memory") 2)
  ;; 0..8 iovec, 8 nread/nwritten, 64.. prefix, 4032.. suffix, 4096.. input buffer
  (data (i32.const 64) "{\"announcement\":\"A new release was published (demo skill: the release payload is in the request)\",\"request\":")
  (data (i32.const 4032) "}")
  (func $write (param $ptr i32) (param $len i32)
    (i32.store (i32.const 0) (local.get $ptr))
    (i32.store (i32.const 4) (local.get $len))
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8))))
  (func (export "_start")
    (local $total i32) (local $n i32)
    (block $done
      (loop $again
        (i32.store (i32.const 0) (i32.add (i32.const 4096) (local.get $total)))
        (i32.store (i32.const 4) (i32.sub (i32.const 120000) (local.get $total)))
        (if (call $fd_read (i32.const 0) (i32.const 0) (i32.const 1) (i32.const 8))
          (then (call $proc_exit (i32.const 2))))
        (local.set $n (i32.load (i32.const 8)))
        (br_if $done (i32.eqz (local.get $n)))
        (local.set $total (i32.add (local.get $total) (local.get $n)))
        (br $again)))
    (call $write (i32.const 64) (i32.const 108))
    (call $write (i32.const 4096) (local.get $total))
    (call $write (i32.const 4032) (i32.const 1))))

"""Reproducer, without this project's code, of the test suite's segfault (docs/stability.md).

OpenVINO's CPU plugin (2026.4, AMX CPU) puts its own alternate signal stack on the thread that compiles / runs a
model and unmaps it when the model is released. ``main-build``: the model runs on the main thread and is
released on another: the main thread's sigaltstack then points at unmapped memory and the next signal with a
Python handler kills the process (rc 139, no traceback). ``thread-build``: the other way round, harmless.
``python scripts/ov_sigaltstack_repro.py main-build; echo $?``
"""
import ctypes, gc, os, signal, sys, threading, numpy as np, faulthandler
faulthandler.enable()
libc = ctypes.CDLL(None, use_errno=True)
class stack_t(ctypes.Structure):
    _fields_ = [("ss_sp", ctypes.c_void_p), ("ss_flags", ctypes.c_int), ("ss_size", ctypes.c_size_t)]
def alt():
    st = stack_t(); libc.sigaltstack(None, ctypes.byref(st)); return st.ss_sp or 0, st.ss_size, st.ss_flags
def region(a):
    for line in open("/proc/self/maps"):
        r = line.split()[0]; lo, hi = (int(x, 16) for x in r.split("-"))
        if lo <= a < hi: return line.strip()[:120]
    return "UNMAPPED"
mode = sys.argv[1]
sys.modules["openvino_telemetry"] = None
import openvino as ov
from openvino import opset13 as ops
def build():
    x = ops.parameter([1, 64], np.float32); w = ops.constant(np.ones((64, 64), np.float32))
    m = ov.Model([ops.relu(ops.matmul(x, w, False, False))], [x])
    c = ov.Core(); cm = c.compile_model(m, "CPU"); r = cm.create_infer_request(); r.infer({0: np.ones((1, 64), np.float32)})
    return [c, cm, r]
print("main start       ", hex(alt()[0]), alt()[1])
box = {}
if mode == "main-build":
    box["o"] = build()
    a = alt(); print("main after build ", hex(a[0]), a[1], region(a[0]))
    t = threading.Thread(target=lambda: box.clear()); t.start(); t.join(); gc.collect()
else:  # build on a thread (as the app's worker does), release on main
    t = threading.Thread(target=lambda: box.update(o=build())); t.start(); t.join()
    a = alt(); print("main after thread build", hex(a[0]), a[1], region(a[0]))
    box.clear(); gc.collect()
a = alt(); print("main after release", hex(a[0]), a[1], region(a[0]), flush=True)
hits = []
signal.signal(signal.SIGUSR1, lambda *_: hits.append(1))
for i in range(3):
    os.kill(os.getpid(), signal.SIGUSR1)
x = [bytes(100) for _ in range(100000)]  # allocate: a corrupted heap shows now
print("SIGUSR1 handled:", hits, flush=True)

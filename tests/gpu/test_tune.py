"""The node-wide autotuner end to end on a GPU.

- ``ligerctl tune`` against a daemon tunes rms_norm_fwd and swiglu_fwd at a few shapes and writes the
  tuning DB under the daemon's cache dir (``<cache>/tuning/<gpu>.tunedb``); ``ligerctl tune --show``
  lists it.
- A second process (local dispatch: ``ligerd._C`` in a fresh interpreter, same cache dir) plans
  with the stored config (``ligerd._C.plan_info`` says which config and that it came from the DB),
  and its outputs match the float64 reference, and the default config's outputs (bitwise for the
  element-wise GLU; within the RMSNorm tolerance, whose row reduction order changes with the
  block shape).
- Configs written into the DB by hand (non-default positions per thread, persistent grids, other
  RMSNorm row groups) are used and stay exact; one the op refuses is ignored (default used,
  logged), not an error.
- With ``-m measurement`` and ``LIGERD_TUNE_REPORT=<dir>`` it also tunes LLaMA-3-8B's row-wise shapes (16384 tokens,
  hidden 4096, FFN 14336, bf16) and writes the ``ligerctl tune`` table there (the gains quoted in
  the report).

Run by tests/gpu/run.sh (LIGERD_BIN=<build>/server/ligerd; ligerctl next to it in <build>/client).
"""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
import re
import shutil
import subprocess
import sys
import textwrap

import pytest
from ligerd.testing.gpu import require_cuda, require_ligerd_bin

torch = require_cuda()
LIGERD_BIN = require_ligerd_bin()
LIGERCTL = os.environ.get("LIGERCTL_BIN") or str(pathlib.Path(LIGERD_BIN).parents[1] / "client" / "ligerctl")
if not os.access(LIGERCTL, os.X_OK):
    pytest.skip(f"no ligerctl at {LIGERCTL}", allow_module_level=True)

from ligerd.testing.gpu import Daemon  # noqa: E402  (imports ligerd)

HERE = pathlib.Path(__file__).resolve().parent
# Shapes tuned by the daemon in these tests (small enough to tune in seconds).
TUNED = ["rms_norm_fwd:bf16:4096x4096", "rms_norm_fwd:bf16:1000x2880",
         "swiglu_fwd:bf16:4096x14336", "swiglu_fwd:f16:777x2880"]


@pytest.fixture(scope="module")
def daemon():
    # cache_dir=None: a fresh cache dir inside the daemon's directory, so the DB starts empty
    d = Daemon(LIGERD_BIN, cache_dir=None, prefix="ligerd-tune-test-")
    yield {"socket": d.socket, "cache": d.cache, "root": d.dir}
    d.stop()


def ligerctl(d, *args, timeout=600):
    return subprocess.run([LIGERCTL, f"--socket={d['socket']}", "tune", *args], capture_output=True,
                          text=True, timeout=timeout)


def db_files(cache):
    return sorted(pathlib.Path(cache, "tuning").glob("*.tunedb"))


def read_db(path):
    """{(op, dtype, rows_bucket, cols): config dict} from the DB text (tuning_db.h's format)."""
    out = {}
    for line in pathlib.Path(path).read_text().splitlines():
        f = line.split(" ")
        if f[0] != "entry":
            continue
        out[(f[1], f[2], int(f[3]), int(f[4]))] = {
            "threads_per_row": int(f[5]), "rows_per_block": int(f[6]), "iters": int(f[7]),
            "vectorized": f[8] == "1", "grid": int(f[9])}
    return out


def add_entries(path, entries):
    """Adds raw entry lines to a DB file and re-signs it (what a tune would store)."""
    text = pathlib.Path(path).read_text()
    body = text[: text.rindex("sha256 ")]
    lines = body.splitlines()
    assert lines[-1] == "end"
    body = "\n".join(lines[:-1] + entries + ["end"]) + "\n"
    pathlib.Path(path).write_text(body + "sha256 " + hashlib.sha256(body.encode()).hexdigest() + "\n")


# The second process: local dispatch in a fresh interpreter on the daemon's cache dir. For each
# case it reports plan_info and the max error against a float64 reference and against the default
# config's output (LIGERD_TUNING_DB=off run), computed in the child.
CHILD = textwrap.dedent(r"""
    import hashlib, json, os, sys
    sys.path.insert(0, sys.argv[2])
    import torch
    import ligerd._C as C
    from ligerd.testing.reference import rms_norm as ref
    C.set_cache_dir(sys.argv[1])
    cases = json.loads(sys.argv[3])
    out = []
    torch.manual_seed(0)
    dt = {"bf16": torch.bfloat16, "f16": torch.float16, "f32": torch.float32}
    for op, dtype, rows, cols in cases:
        t = dt[dtype]
        g = torch.Generator(device="cuda").manual_seed(rows * 131 + cols)
        def rnd(*s):
            return torch.randn(*s, device="cuda", dtype=torch.float32, generator=g).to(t)
        if op.startswith("rms_norm_fwd"):
            x, w = rnd(rows, cols), rnd(cols)
            y = torch.full_like(x, float("nan")); r = torch.full((rows,), float("nan"), device="cuda")
            args, scal, outs = [x, w, y, r], [1e-6, 0.0, 0.0], [y, r]
            fr = ref.forward(x, w, 1e-6, 0.0, ref.LLAMA)
            refs = [fr.y, fr.rstd]
        elif op.startswith("rms_norm_bwd"):
            x, w, dy = rnd(rows, cols), rnd(cols), rnd(rows, cols)
            fr = ref.forward(x, w, 1e-6, 0.0, ref.LLAMA)
            r = fr.rstd.float().contiguous()
            dx = torch.full_like(x, float("nan")); dw = torch.full_like(w, float("nan"))
            args, scal, outs = [dy, x, w, r, dx, dw], [0.0, 0.0], [dx, dw]
            br = ref.backward(dy, x, w, 1e-6, 0.0, ref.LLAMA)
            refs = [br.dx, br.dw]
        else:
            a, b = rnd(rows, cols), rnd(rows, cols)
            a64, b64 = a.double(), b.double()
            if op.startswith("swiglu"):
                f = a64 * torch.sigmoid(a64); s = torch.sigmoid(a64); fp = s * (1 + a64 * (1 - s))
            else:
                k0, k1 = 0.7978845608028654, 0.044715
                th = torch.tanh(k0 * (a64 + k1 * a64 ** 3)); f = 0.5 * a64 * (1 + th)
                fp = 0.5 * (1 + th) + 0.5 * a64 * (1 - th * th) * k0 * (1 + 3 * k1 * a64 * a64)
            if op.endswith("_fwd"):
                c = torch.full_like(a, float("nan"))
                args, scal, outs, refs = [a, b, c], [], [c], [f * b64]
            else:
                dc = rnd(rows, cols)
                da = torch.full_like(a, float("nan")); db = torch.full_like(a, float("nan"))
                args, scal, outs = [dc, a, b, da, db], [], [da, db]
                refs = [dc.double() * b64 * fp, dc.double() * f]
        info = C.plan_info(op, args, scal)
        C.launch(op, args, scal)
        torch.cuda.synchronize()
        errs = []
        for o, rf in zip(outs, refs):
            rf = getattr(rf, "value", rf)
            rf = rf.double()
            scale = rf.abs().max().item() + 1e-30
            errs.append(((o.double() - rf).abs().max().item() / scale, bool(torch.isfinite(o).all())))
        out.append({"op": op, "info": info, "errs": errs,
                    "digest": [hashlib.sha256(o.float().cpu().numpy().tobytes()).hexdigest() for o in outs]})
    print("RESULT " + json.dumps(out))
""")


def run_child(cache, cases, tuning=True):
    env = dict(os.environ)
    env["LIGERD_TUNING_DB"] = "on" if tuning else "off"
    env["LIGERD_DISPATCH"] = "local"
    p = subprocess.run([sys.executable, "-c", CHILD, cache, str(HERE), json.dumps(cases)],
                       capture_output=True, text=True, timeout=600, env=env)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    line = [l for l in p.stdout.splitlines() if l.startswith("RESULT ")][-1]
    return json.loads(line[len("RESULT "):]), p.stderr


def private_copy(d, name):
    """A copy of the daemon's cache dir (compiled kernels and tuning DB) to edit freely."""
    dst = os.path.join(d["root"], name)
    shutil.copytree(d["cache"], dst, ignore=shutil.ignore_patterns("*.lock", "locks"))
    os.chmod(dst, 0o700)
    os.chmod(os.path.join(dst, "tuning"), 0o700)
    return dst


def bucket(rows):
    b = 1
    while b < rows:
        b *= 2
    return b


# Relative max error (of max |ref|) allowed per dtype: one rounding of the output to the dtype
# (bf16 2^-8, fp16 2^-11) plus fp32 arithmetic and, for 16-bit GLU, the fast exp/division
# (~2 ulp fp32): 2 units of the output dtype cover it with room; RMSNorm's llama mode rounds the
# normalised x once more before the weight multiply (another unit).
TOL = {"bf16": 2 * 2.0 ** -8, "f16": 2 * 2.0 ** -11}
TOL_RMS = {"bf16": 3 * 2.0 ** -8, "f16": 3 * 2.0 ** -11}


def test_tune_writes_the_db_and_show_lists_it(daemon):
    p = ligerctl(daemon, *TUNED, "--trials=3")
    assert p.returncode == 0, p.stdout + p.stderr
    assert "[1/4]" in p.stderr and "timing" in p.stderr, p.stderr[-2000:]  # progress
    rows = [l for l in p.stdout.splitlines() if re.match(r"^(rms_norm_fwd|swiglu_fwd) ", l)]
    assert len(rows) == 4, p.stdout
    for l in rows:
        f = l.split()
        default_ms, tuned_ms = float(f[3]), float(f[4])
        assert 0 < tuned_ms <= default_ms, l
    files = db_files(daemon["cache"])
    assert len(files) == 1, files
    assert torch.cuda.get_device_properties(0).name.split()[0] in files[0].name
    db = read_db(files[0])
    assert ("rms_norm_fwd", "bf16", 4096, 4096) in db
    assert ("rms_norm_fwd", "bf16", 1024, 2880) in db  # 1000 rows -> the 1024 bucket
    assert ("swiglu_fwd", "bf16", 4096, 14336) in db
    assert ("swiglu_fwd", "f16", 1024, 2880) in db
    show = ligerctl(daemon, "--show")
    assert show.returncode == 0, show.stderr
    assert "4 entries" in show.stdout and "swiglu_fwd" in show.stdout, show.stdout


def test_second_process_uses_the_tuned_config_and_stays_exact(daemon):
    files = db_files(daemon["cache"])
    assert files, "run after test_tune_writes_the_db_and_show_lists_it"
    db = read_db(files[0])
    cases = [["rms_norm_fwd", "bf16", 4096, 4096], ["rms_norm_fwd", "bf16", 1000, 2880],
             ["swiglu_fwd", "bf16", 4096, 14336], ["swiglu_fwd", "f16", 777, 2880],
             ["rms_norm_fwd", "bf16", 3000, 4096]]  # same bucket as 4096x4096
    tuned, _ = run_child(daemon["cache"], cases, tuning=True)
    default, _ = run_child(daemon["cache"], cases, tuning=False)
    for (op, dtype, rows, cols), t, d in zip(cases, tuned, default):
        want = db[(op, dtype, bucket(rows), cols)]
        assert t["info"]["tuned"], (op, rows, cols, t["info"])
        assert t["info"]["config"] == want, (op, rows, cols, t["info"]["config"], want)
        assert t["info"]["tuning_db"] == str(files[0])
        assert not d["info"]["tuned"]
        tol = (TOL_RMS if op.startswith("rms") else TOL)[dtype]
        for err, finite in t["errs"]:
            assert finite and err <= tol, (op, rows, cols, t["info"]["config_text"], err, tol)
        if op.startswith("swiglu"):  # element-wise: any launch shape gives the same bits
            assert t["digest"] == d["digest"], (op, t["info"]["config_text"], d["info"]["config_text"])


def test_hand_written_configs_are_used_and_exact_rejected_ones_ignored(daemon):
    files = db_files(daemon["cache"])
    assert files
    # A private copy of the DB: non-default configs for buckets the tune did not touch.
    cache = private_copy(daemon, "cache2")
    path = pathlib.Path(cache, "tuning", files[0].name)
    t0 = "1.0 0.9 0 1 1700000000"
    add_entries(path, [
        f"entry swiglu_fwd bf16 2048 5120 512 1 4 1 264 {t0}",    # 4 positions, persistent grid
        f"entry swiglu_bwd bf16 2048 5120 128 1 1 1 0 {t0}",      # 1 position, one-shot
        f"entry geglu_bwd f16 1024 8192 1024 1 4 1 132 {t0}",     # 4 positions, 1 block per SM
        f"entry geglu_fwd bf16 512 4096 256 1 1 1 0 {t0}",
        f"entry rms_norm_fwd bf16 2048 4096 128 4 4 1 0 {t0}",    # 128 x 4 vectors, 4 rows per block
        f"entry rms_norm_bwd bf16 2048 4096 512 1 1 1 132 {t0}",  # 1 vector per thread, 132 partials
        f"entry swiglu_fwd bf16 256 4096 256 1 3 1 0 {t0}",       # iters 3: refused by the op
    ])
    cases = [["swiglu_fwd", "bf16", 2000, 5120], ["swiglu_bwd", "bf16", 1500, 5120],
             ["geglu_bwd", "f16", 1000, 8192], ["geglu_fwd", "bf16", 300, 4096],
             ["rms_norm_fwd", "bf16", 2048, 4096], ["rms_norm_bwd", "bf16", 1999, 4096],
             ["swiglu_fwd", "bf16", 200, 4096]]
    tuned, log = run_child(cache, cases, tuning=True)
    default, _ = run_child(cache, cases, tuning=False)
    db = read_db(path)
    for (op, dtype, rows, cols), t, d in zip(cases, tuned, default):
        tol = (TOL_RMS if op.startswith("rms") else TOL)[dtype]
        for err, finite in t["errs"]:
            assert finite and err <= tol, (op, rows, cols, t["info"]["config_text"], err, tol)
        if op.startswith(("swiglu", "geglu")):
            assert t["digest"] == d["digest"], (op, t["info"]["config_text"])
        if (op, rows) == ("swiglu_fwd", 200):
            assert not t["info"]["tuned"], t["info"]  # refused -> the default, no error
            assert "ignoring tuned config" in log and "iters 3" in log, log[-2000:]
        else:
            assert t["info"]["tuned"], (op, t["info"])
            assert t["info"]["config"] == db[(op, dtype, bucket(rows), cols)], (op, t["info"])
    kernels = {t["op"] + str(i): t["info"]["launches"][0]["kernel"] for i, t in enumerate(tuned)}
    assert kernels["swiglu_fwd0"] == "glu_fwd_v4" and kernels["swiglu_bwd1"] == "glu_bwd_v1", kernels


def test_corrupt_db_is_rebuilt_not_trusted(daemon):
    files = db_files(daemon["cache"])
    assert files
    cache = private_copy(daemon, "cache3")
    path = pathlib.Path(cache, "tuning", files[0].name)
    text = files[0].read_text().replace("entry rms_norm_fwd bf16 4096 4096", "entry rms_norm_fwd bf16 4096 4095", 1)
    path.write_text(text)  # edited without re-signing
    tuned, log = run_child(cache, [["rms_norm_fwd", "bf16", 4096, 4096]], tuning=True)
    assert not tuned[0]["info"]["tuned"]
    assert "checksum" in log, log[-2000:]
    assert list(pathlib.Path(cache, "tuning").glob("*.corrupt-*")), "moved aside"


@pytest.mark.measurement
def test_llama3_8b_gains(daemon):
    """Tunes the LLaMA-3-8B shapes and keeps the report in $LIGERD_TUNE_REPORT (a directory): a
    measurement, run on request with `-m measurement` (tests/gpu/pytest.ini deselects it)."""
    if not os.environ.get("LIGERD_TUNE_REPORT"):
        pytest.fail("set LIGERD_TUNE_REPORT=<dir> for the report of this measurement")
    p = ligerctl(daemon, "--model=llama3-8b", "geglu_fwd:bf16:16384x14336", "geglu_bwd:bf16:16384x14336",
                 timeout=900)
    out = pathlib.Path(os.environ["LIGERD_TUNE_REPORT"])
    out.mkdir(parents=True, exist_ok=True)
    (out / "tune_llama3_8b.txt").write_text(p.stdout + "\n--- progress ---\n" + p.stderr)
    assert p.returncode == 0, p.stdout + p.stderr[-3000:]
    for f in db_files(daemon["cache"]):  # for a benchmark run with the tuned configs afterwards
        shutil.copy(f, out / f.name)
    print(p.stdout)

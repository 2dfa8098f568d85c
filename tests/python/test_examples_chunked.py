"""The ligerd.chunked_loss examples (examples/align_dpo.py, distill_jsd.py, grpo_step.py) on the CPU:
each runs as a subprocess with tiny sizes (and its other losses in this process), through ligerd's float64 reference executor (what the
examples do on a machine without a GPU), and must exit 0 with every training step printed and its
one-step check against the unfused torch loss passed, line by line; the chunk is also forced small
(many chunks, the two-pass path). In-process: the check really fails (exit 1, "TOO FAR") when the
unfused loss it compares with is off by 1%, and the command lines' defaults and errors. The GPU runs
(ligerd's kernels, peak memory) are the lead's: see the README's commands."""

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch", reason="torch is not installed")
pytest.importorskip("transformers", reason="transformers is not installed")

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
PKG = ROOT / "python_client"


def run_example(script, *argv, timeout=300):
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(PKG)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    env.pop("LIGERD_CHUNKED_LOSS_CHUNK", None)  # the examples' --chunk sets it
    p = subprocess.run([sys.executable, str(EXAMPLES / script), "--device", "cpu", *argv],
                       capture_output=True, text=True, timeout=timeout, env=env, cwd=str(ROOT))
    return p.returncode, p.stdout + p.stderr


def assert_ran(rc, out, step_lines, check_rows):
    assert rc == 0, out
    assert "reference executor" in out, out            # says what runs where
    assert len(re.findall(step_lines, out, re.M)) > 0, out
    rows = re.findall(r"^    (\S[^\n]*?)\s{2,}.*ligerd ([0-9.e+-]+)\s+torch ([0-9.e+-]+)\s+limit ([0-9.e+-]+)\s+(\S+)$",
                      out, re.M)
    assert len(rows) == check_rows, out
    for name, e, eb, lim, verdict in rows:
        assert verdict == "ok" and float(e) <= float(lim), f"{name}: {e} > {lim}\n{out}"
    assert "one-step check: passed" in out, out
    assert "TOO FAR" not in out and "Traceback" not in out, out


# --------------------------------------------------------------------------------------------
# Each example as a subprocess (as a user runs it), then its variants in this process (importing
# torch and transformers takes most of a subprocess's time)

# loss -> rows of its check: loss, Liger's aux outputs, d hidden, d lm_head.weight
ALIGN_ROWS = {"dpo": 1 + 7 + 2, "orpo": 1 + 9 + 2, "cpo": 1 + 7 + 2, "simpo": 1 + 7 + 2, "kto": 1 + 6 + 2}
ALIGN_STEP = r"^step\s+\d+/2\s+loss [0-9.]+\s+reward margin [-+][0-9.]+"
DISTILL_STEP = r"^step\s+\d+/2\s+loss [0-9.]+\s+soft \(\w+\) [0-9.]+\s+hard \(CE\) [0-9.]+"
GRPO_STEP = r"^batch\s+\d+/2 update \d\s+reward [0-9.]+\s+loss [-+][0-9.]+\s+kl"


def test_align_example_runs_and_matches_torch():
    rc, out = run_example("align_dpo.py", "--steps", "2")
    assert_ran(rc, out, ALIGN_STEP, ALIGN_ROWS["dpo"])
    assert len(re.findall(ALIGN_STEP, out, re.M)) == 2, out
    assert "LigerFusedLinearDPOLoss" in out, out


def test_align_example_kto_with_small_chunks():
    """5-token chunks: every sequence spans several chunks (the two-pass path of the
    selected-token sweep), odd lengths, a bigger vocabulary than the default CPU one."""
    rc, out = run_example("align_dpo.py", "--steps", "2", "--loss", "kto", "--chunk", "5", "--vocab", "257",
                          "--pairs", "3", "--prompt-len", "5", "--completion-len", "11")
    assert_ran(rc, out, ALIGN_STEP, ALIGN_ROWS["kto"])


def test_distill_example_runs_and_matches_torch():
    rc, out = run_example("distill_jsd.py", "--steps", "2", "--teacher-steps", "2", "--chunk", "7")
    assert_ran(rc, out, DISTILL_STEP, 5)
    assert len(re.findall(DISTILL_STEP, out, re.M)) == 2, out
    assert "teacher step" in out and "teacher: hidden 128" in out, out


def test_grpo_example_runs_and_matches_torch():
    # A 12-token vocabulary: end-of-sequence tokens are sampled, so the completion masks have zeros.
    rc, out = run_example("grpo_step.py", "--steps", "2", "--loss-type", "grpo", "--vocab", "12",
                          "--completion-len", "12")
    assert_ran(rc, out, GRPO_STEP, 5)
    assert len(re.findall(GRPO_STEP, out, re.M)) == 4, out   # 2 batches x 2 updates


def run_inprocess(name, argv, monkeypatch, capsys):
    mod = _load(name, monkeypatch)
    rc = mod.main(["--device", "cpu", *argv])
    return rc, capsys.readouterr().out


@pytest.mark.parametrize("loss", ["orpo", "cpo", "simpo"])
def test_align_example_other_losses(loss, monkeypatch, capsys):
    rc, out = run_inprocess("align_dpo", ["--steps", "2", "--loss", loss], monkeypatch, capsys)
    assert_ran(rc, out, ALIGN_STEP, ALIGN_ROWS[loss])


@pytest.mark.parametrize("argv", [["--loss", "cosine"], ["--loss", "jsd", "--temperature", "1", "--beta", "0.3"]],
                         ids=["cosine", "jsd-T1"])
def test_distill_example_variants(argv, monkeypatch, capsys):
    rc, out = run_inprocess("distill_jsd", ["--steps", "2", "--teacher-steps", "1", *argv], monkeypatch, capsys)
    assert_ran(rc, out, DISTILL_STEP, 5)


@pytest.mark.parametrize("argv", [["--loss-type", "dapo"], ["--loss-type", "dr_grpo", "--iterations", "1"]],
                         ids=["dapo", "dr_grpo-1-iteration"])
def test_grpo_example_variants(argv, monkeypatch, capsys):
    rc, out = run_inprocess("grpo_step", ["--steps", "2", *argv], monkeypatch, capsys)
    assert_ran(rc, out, GRPO_STEP, 5)


# --------------------------------------------------------------------------------------------
# In-process: the check can fail; command lines

def _load(name, monkeypatch):
    monkeypatch.syspath_prepend(str(EXAMPLES))
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    from ligerd import _backend
    # setup() installs the reference executor; restore the real launcher (None) afterwards.
    monkeypatch.setattr(_backend, "_test_launcher", None)
    monkeypatch.setenv("LIGERD_CHUNKED_LOSS_CHUNK", "")   # restored (unset) afterwards if --chunk sets it
    monkeypatch.delenv("LIGERD_CHUNKED_LOSS_CHUNK")
    return mod


def test_the_check_fails_when_the_torch_loss_differs(monkeypatch, capsys):
    mod = _load("align_dpo", monkeypatch)
    orig = mod.unfused_loss

    def off_by_one_percent(args, *a, **k):
        loss, aux = orig(args, *a, **k)
        return loss * 1.01, aux

    monkeypatch.setattr(mod, "unfused_loss", off_by_one_percent)
    assert mod.main(["--device", "cpu", "--steps", "1"]) == 1
    out = capsys.readouterr().out
    assert re.search(r"^    loss .*TOO FAR$", out, re.M) and "one-step check: FAILED" in out, out


def test_the_distill_check_fails_on_a_wrong_temperature(monkeypatch, capsys):
    mod = _load("distill_jsd", monkeypatch)
    orig = mod.unfused_loss

    def wrong_temperature(args, *a):
        import copy
        bad = copy.copy(args)
        bad.temperature = args.temperature * 1.05
        return orig(bad, *a)

    monkeypatch.setattr(mod, "unfused_loss", wrong_temperature)
    assert mod.main(["--device", "cpu", "--steps", "1", "--teacher-steps", "1"]) == 1
    assert "one-step check: FAILED" in capsys.readouterr().out


def test_the_grpo_check_fails_on_wrong_advantages(monkeypatch, capsys):
    mod = _load("grpo_step", monkeypatch)
    orig = mod.unfused_loss
    monkeypatch.setattr(mod, "unfused_loss", lambda args, x, W, ids, m, adv, *r: orig(args, x, W, ids, m, adv * 1.01, *r))
    assert mod.main(["--device", "cpu", "--steps", "1"]) == 1
    assert "one-step check: FAILED" in capsys.readouterr().out


@pytest.mark.parametrize("name", ["align_dpo", "distill_jsd", "grpo_step"])
def test_defaults_without_a_gpu_and_bad_arguments(name, monkeypatch):
    mod = _load(name, monkeypatch)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    a = mod.parse_args([])
    assert (a.device, a.size, a.vocab, a.dtype) == ("cpu", "tiny", 128, torch.float32)
    assert a.chunk is None and a.dispatch == "auto"
    for argv in (["--device", "cuda"], ["--steps", "0"], ["--vocab", "4"], ["--chunk", "0"]):
        with pytest.raises(SystemExit) as e:
            mod.parse_args(argv)
        assert e.value.code == 2


def test_gpu_defaults(monkeypatch):
    """On a GPU machine the examples default to bf16, the small model and a 32000 vocabulary."""
    mod = _load("align_dpo", monkeypatch)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    a = mod.parse_args([])
    assert (a.device, a.size, a.vocab, a.dtype, a.loss) == ("cuda", "small", 32000, torch.bfloat16, "dpo")
    assert (a.prompt_len, a.completion_len, a.pairs) == (64, 192, 4)

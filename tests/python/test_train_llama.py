"""The training demo (examples/train_llama.py) on the CPU: command line, text and tokenizers, data
order, the no-GPU exit, the report (table, CSV, JSON, PNG) with fake results, and real training
steps of the HF path on a tiny model (the GPU runs, HF eager vs ligerd, are the lead's to run)."""

import importlib.util
import json
import math
import os
import subprocess
import sys
import types
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "examples" / "train_llama.py"


def _load():
    spec = importlib.util.spec_from_file_location("train_llama", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    sys.modules["train_llama"] = mod
    spec.loader.exec_module(mod)
    return mod


tl = _load()


def _have(name):
    try:
        __import__(name)
        return True
    except ImportError:
        return False


needs_torch = pytest.mark.skipif(not _have("torch"), reason="torch is not installed")
needs_hf = pytest.mark.skipif(not (_have("torch") and _have("transformers")),
                              reason="torch and transformers are needed")


# --------------------------------------------------------------------------------------------
# Command line

def test_defaults_are_the_demo():
    a = tl.parse_args([])
    assert (a.steps, a.batch, a.seq, a.model_size) == (150, 8, 1024, "small")
    assert (a.dispatch, a.only, a.device, a.tokenizer) == ("auto", "both", "cuda", "bpe")
    assert a.out == os.path.join("out", "train_llama")
    assert a.warmup == 10 and a.ligerd_patch == "ligerd.transformers:apply_liger_kernel_to_llama"
    assert tl.runs_for("both") == ["hf", "ligerd"]
    assert tl.runs_for("ligerd") == ["ligerd"]
    s = tl.SIZES["small"]
    assert (s["hidden"], s["layers"], s["heads"], s["kv_heads"], s["ffn"]) == (1024, 8, 16, 4, 2816)
    for dims in tl.SIZES.values():
        assert dims["hidden"] % dims["heads"] == 0 and dims["heads"] % dims["kv_heads"] == 0


def test_options_parse():
    a = tl.parse_args(["--steps", "20", "--batch", "2", "--seq", "128", "--model-size", "tiny",
                       "--dispatch", "remote", "--only", "hf", "--out", "x", "--tokenizer", "byte"])
    assert (a.steps, a.batch, a.seq, a.model_size, a.dispatch, a.only, a.out) == \
        (20, 2, 128, "tiny", "remote", "hf", "x")
    assert a.warmup == 4  # steps // 5 when below 10
    assert tl.parse_args(["--steps", "3"]).warmup == 0


@pytest.mark.parametrize("argv", [["--steps", "0"], ["--batch", "-1"], ["--model-size", "huge"],
                                  ["--dispatch", "gpu"], ["--only", "liger"],
                                  ["--steps", "5", "--warmup", "5"], ["--vocab", "100"]])
def test_bad_options_exit_2(argv, capsys):
    with pytest.raises(SystemExit) as e:
        tl.parse_args(argv)
    assert e.value.code == 2
    assert "error" in capsys.readouterr().err


def test_help_names_the_text_and_the_exit_codes(capsys):
    with pytest.raises(SystemExit) as e:
        tl.parse_args(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "pydoc_data/topics.py" in out and "--model-size" in out and "Exit status" in out
    assert "--worker" not in out  # internal flags stay hidden


def test_no_gpu_exits_2_with_a_clear_message(tmp_path):
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="")
    p = subprocess.run([sys.executable, str(SCRIPT), "--out", str(tmp_path / "o")], env=env,
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 2, p.stderr
    assert "train_llama: cannot run:" in p.stderr
    assert ("no CUDA GPU" in p.stderr) or ("PyTorch is not installed" in p.stderr)
    assert not (tmp_path / "o").exists()  # nothing written, nothing trained


# --------------------------------------------------------------------------------------------
# Text, tokenizers, data order

def test_default_text_is_the_python_reference_manual():
    docs, source = tl.load_documents()
    assert len(docs) > 50 and sum(map(len, docs)) > 300_000
    assert "reference manual" in source and "pydoc_data/topics.py" in source
    text = "\n".join(docs)
    assert "statement" in text and "expression" in text  # English prose about Python
    assert docs == tl.load_documents()[0]  # fixed order


def test_text_file_option(tmp_path):
    f = tmp_path / "t.txt"
    f.write_text("first document\n\n\nsecond one\n\n\n\n")
    docs, source = tl.load_documents(str(f))
    assert [d.strip() for d in docs] == ["first document", "second one"]
    assert str(f) in source


def test_byte_tokenizer_round_trip():
    tok = tl.make_tokenizer("byte", [], 0)
    s = "def f(x):\n    return x ** 2  # ünïcode"
    ids = tok.encode(s)
    assert max(ids) < 256 and tok.decode(ids) == s
    stream = tl.encode_documents(tok, ["ab", "c"])
    assert stream == [97, 98, 256, 99, 256] and tok.vocab_size == 257


@pytest.mark.skipif(not _have("tokenizers"), reason="tokenizers is not installed")
def test_bpe_is_trained_on_the_text_cached_and_round_trips(tmp_path):
    docs, _ = tl.load_documents()
    docs = docs[:20]
    tok = tl.make_tokenizer("bpe", docs, 600, tmp_path)
    assert 256 < tok.vocab_size <= 600 and tok.eos_id is not None
    cached = list(tmp_path.glob("bpe-*-600.json"))
    assert len(cached) == 1
    sample = docs[3][:2000]
    ids = tok.encode(sample)
    assert tok.decode(ids) == sample
    assert len(ids) < len(sample.encode()) / 2  # it learned merges: fewer tokens than bytes
    again = tl.make_tokenizer("bpe", docs, 600, tmp_path)  # from the cache
    assert again.encode(sample) == ids
    stream = tl.encode_documents(tok, docs[:2])
    assert stream.count(tok.eos_id) == 2 and stream[-1] == tok.eos_id


def test_padded_vocab():
    assert tl.padded_vocab(257) == 384 and tl.padded_vocab(8192) == 8192 and tl.padded_vocab(1) == 128


@needs_torch
def test_batches_are_fixed_by_the_seed_and_in_range():
    import torch
    a = tl.batch_starts(1000, 64, 4, 7, seed=3)
    b = tl.batch_starts(1000, 64, 4, 7, seed=3)
    assert a.shape == (7, 4) and torch.equal(a, b)
    assert not torch.equal(a, tl.batch_starts(1000, 64, 4, 7, seed=4))
    assert int(a.min()) >= 0 and int(a.max()) <= 1000 - 64
    tokens = torch.arange(1000)
    x = tl.window_batch(tokens, a[0], 64)
    assert x.shape == (4, 64) and torch.equal(x[1], torch.arange(int(a[0, 1]), int(a[0, 1]) + 64))
    with pytest.raises(ValueError, match="fewer than one sequence"):
        tl.batch_starts(10, 64, 1, 1, 0)


def test_learning_rate_schedule():
    lrs = [tl.lr_at(s, 100, 1e-3, 10) for s in range(100)]
    assert lrs[0] == pytest.approx(1e-4) and lrs[9] == pytest.approx(1e-3)
    assert max(lrs) == pytest.approx(1e-3) and lrs[-1] == pytest.approx(1e-4, rel=0.01)
    assert all(x >= y for x, y in zip(lrs[10:], lrs[11:]))  # cosine decay never rises


# --------------------------------------------------------------------------------------------
# The report, with fake results

def _res(run, tok_s, mem_gib, losses, ok=True, error=""):
    return tl.RunResult(run=run, label=tl.RUNS[run], ok=ok, error=error, steps=len(losses), batch=8,
                        seq=1024, params=100_000_000, tokens_per_s=tok_s,
                        step_ms=8 * 1024 / tok_s * 1e3 if ok else float("nan"),
                        peak_mem_bytes=int(mem_gib * 2**30), losses=losses if ok else None,
                        dispatch="local (LIGERD_DISPATCH=local)" if run == "ligerd" else "",
                        device="fake GPU")


def test_loss_helpers():
    assert tl.max_loss_diff([1.0, 2.0, 3.0], [1.0, 2.5, 2.9]) == (pytest.approx(0.5), 2)
    assert tl.max_loss_diff([1.0, 2.0], [1.0, 2.0]) == (0.0, 0)
    d, at = tl.max_loss_diff([1.0, 2.0], [1.0, float("nan")])
    assert math.isnan(d) and at == 2  # a NaN is the largest difference there is
    assert tl.final_loss([5.0] * 5 + [1.0] * 10) == 1.0
    assert tl.final_loss([4.0, 2.0], last=10) == 3.0


def test_table_side_by_side():
    hf = _res("hf", 100_000.0, 20.0, [10.0, 8.0, 6.0])
    lg = _res("ligerd", 125_000.0, 12.0, [10.0, 8.01, 5.97])
    table = tl.report_table([hf, lg])
    lines = table.splitlines()
    assert "HF eager" in lines[0] and "ligerd" in lines[0] and "ligerd / HF" in lines[0]
    row = {l.split("  ")[0].strip(): l for l in lines[2:]}
    assert "100,000" in row["tokens/s"] and "125,000" in row["tokens/s"] and "1.25x" in row["tokens/s"]
    assert "20.00 GiB" in row["peak GPU memory"] and "12.00 GiB" in row["peak GPU memory"]
    assert "0.60x" in row["peak GPU memory"]
    assert "0.0300 at step 3" in row["max |loss difference|"]
    assert "ligerd dispatch: local" in table


def test_table_when_a_run_failed():
    hf = _res("hf", 100_000.0, 20.0, [10.0, 8.0])
    lg = _res("ligerd", float("nan"), 0, [], ok=False, error="ImportError: no ligerd._C")
    table = tl.report_table([hf, lg])
    assert "failed" in table and "ligerd failed: ImportError: no ligerd._C" in table
    assert "ligerd / HF" not in table
    assert "HF eager" in tl.report_table([hf]) and "ligerd" not in tl.report_table([hf]).splitlines()[0]


def test_outputs_csv_json_png(tmp_path):
    hf = _res("hf", 100_000.0, 20.0, [10.0, 8.0, 6.0])
    lg = _res("ligerd", 125_000.0, 12.0, [10.0, 8.01, 5.97])
    written = tl.write_outputs([hf, lg], tmp_path, {"title": "t", "model": "m"})
    lines = (tmp_path / "losses.csv").read_text().splitlines()
    assert lines[0] == "step,hf,ligerd" and lines[3] == "3,6.000000,5.970000" and len(lines) == 4
    data = json.loads((tmp_path / "results.json").read_text())
    assert data["max_abs_loss_diff"] == {"value": pytest.approx(0.03), "step": 3}
    assert [r["run"] for r in data["runs"]] == ["hf", "ligerd"] and data["meta"]["model"] == "m"
    if _have("matplotlib"):
        png = tmp_path / "train_llama.png"
        assert png in written and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# --------------------------------------------------------------------------------------------
# Real training steps on the CPU (the HF path; a stand-in patch for the ligerd path)

def _cpu_args(**kw):
    a = tl.parse_args(["--device", "cpu", "--model-size", "tiny", "--steps", "4", "--batch", "2",
                       "--seq", "32", "--tokenizer", "byte"])
    for k, v in kw.items():
        setattr(a, k, v)
    return a


@needs_hf
def test_cpu_training_steps_hf_path_learn_and_repeat():
    import torch
    tok = tl.ByteTokenizer()
    docs, _ = tl.load_documents()
    tokens = torch.tensor(tl.encode_documents(tok, docs[:10]))
    args = _cpu_args(lr=3e-3)
    a = tl.train_run("hf", tokens, tl.padded_vocab(tok.vocab_size), args, progress=False)
    assert a.ok and len(a.losses) == 4 and all(math.isfinite(x) for x in a.losses)
    assert abs(a.losses[0] - math.log(384)) < 0.5  # random init: about ln(vocab)
    assert a.losses[-1] < a.losses[0]               # AdamW steps lower the loss
    assert a.params > 0 and a.tokens_per_s > 0 and a.peak_mem_bytes == 0 and a.device == "cpu"
    order = []
    b = tl.train_run("ligerd", tokens, tl.padded_vocab(tok.vocab_size), args,
                     patch=lambda: order.append("patched"), progress=False)
    assert order == ["patched"]
    assert b.losses == a.losses  # same seed, weights and data order: the same run


@needs_torch
def test_worker_reports_a_failing_ligerd_patch(tmp_path, monkeypatch):
    import torch
    mod = types.ModuleType("broken_ligerd_patch")

    def apply():
        raise ImportError("ligerd.transformers has no apply_liger_kernel_to_llama yet")
    mod.apply = apply
    monkeypatch.setitem(sys.modules, "broken_ligerd_patch", mod)
    tokens_file = tmp_path / "tokens.pt"
    torch.save({"tokens": torch.arange(500) % 256, "vocab_size": 384}, tokens_file)
    args = _cpu_args(worker="ligerd", tokens_file=str(tokens_file), result=str(tmp_path / "r.json"),
                     ligerd_patch="broken_ligerd_patch:apply")
    assert tl.worker_main(args) == 1
    r = json.loads((tmp_path / "r.json").read_text())
    assert r["ok"] is False and "no apply_liger_kernel_to_llama yet" in r["error"]


@needs_hf
def test_command_line_end_to_end_on_cpu(tmp_path):
    """The whole script as the README runs it (children, table, files), on the CPU, with a stand-in
    ligerd patch that only records that it ran: both runs must then agree exactly."""
    (tmp_path / "fake_patch.py").write_text(
        "import os\n"
        "def apply():\n"
        "    open(os.environ['FAKE_PATCH_MARK'], 'w').write('called')\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")]),
               FAKE_PATCH_MARK=str(tmp_path / "mark"))
    out = tmp_path / "out"
    p = subprocess.run([sys.executable, str(SCRIPT), "--device", "cpu", "--model-size", "tiny",
                        "--steps", "3", "--batch", "2", "--seq", "16", "--tokenizer", "byte",
                        "--ligerd-patch", "fake_patch:apply", "--out", str(out), "--dispatch", "local"],
                       env=env, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stdout + p.stderr
    assert (tmp_path / "mark").read_text() == "called"
    assert "reference manual" in p.stdout and "ligerd / HF" in p.stdout
    assert "0 (equal at every step)" in p.stdout
    data = json.loads((out / "results.json").read_text())
    assert [r["ok"] for r in data["runs"]] == [True, True]
    assert data["runs"][0]["losses"] == data["runs"][1]["losses"]
    assert (out / "losses.csv").read_text().count("\n") == 4

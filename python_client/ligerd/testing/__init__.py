"""Test support for ligerd, shared by its CPU and GPU suites and usable by anyone checking ligerd
against references (as ``torch.testing`` is for torch):

- ``reference``: float64 references of the ops, with the kernels' rounding points and per-element
  error scales (``reference.rms_norm``, ``reference.layer_norm``);
- ``ref_executor``: a float64 stand-in for the executor, so everything but the CUDA kernels runs on
  a machine without a GPU (``ref_executor.install(monkeypatch)``);
- ``hf_standins``: CPU stand-ins for the Hugging Face patching tests;
- ``convergence``: the mini-model training harness of the convergence tests;
- ``gpu``: helpers of the GPU suite (tolerances, NaN poisoning, a private daemon);
- ``tiny_models``: tiny models of every patched type, and one patched kernel's tiny model against
  transformers' (``assert_patch_matches``);
- ``tiny_vision``, ``rope_vision_cases``: tiny vision towers of the types whose attention calls
  ``apply_rotary_pos_emb_vision``, and that function's inputs and comparison with ligerd's;
- ``compile_check``: torch.compile(fullgraph) against eager for the CPU wiring tests;
- ``fake_daemon``: a stand-in ``ligerd`` binary that serves only health checks.
- ``dashboard``, ``dashboard_record``: the dashboard in headless Chromium (flags, chart checks), and
  recording its data where no browser runs, to replay it with scripts/dashboard_replay.py.

Importing ``ligerd.testing`` imports nothing heavy; each module imports what it needs.
"""

"""What a training step captured by hand (``torch.cuda.graph``) must build before the capture: the
inputs a transformers decoder would otherwise build on the host inside every forward.

A decoder's forward builds its attention mask (``masking_utils.create_causal_mask``) and position
ids at every call. Some of that is host work a CUDA graph capture cannot take: transformers 5.17's
eager mask copies a CPU scalar to the GPU (``torch.tensor(0.0, device=...)`` in ``eager_mask``:
"Cannot copy between CPU and CUDA tensors during CUDA graph capture unless the CPU tensor is
pinned"), and outside a capture its packed-sequence check (``find_packed_sequence_indices``) reads
a value back to the host. A 4-D mask given to the forward is used as it is (both 5.17 and 5.25
return it untouched: "already prepared"), and with it no mask is built and no packing is looked
for. So the mask is built here once, outside the capture, by transformers' own
``create_causal_mask`` for the position ids the forward would make itself, and both go to every
captured call: the values are the ones the forward builds, so the captured step computes what the
eager one does (tests/gpu/test_compile.py::train_cuda_graph; tests/python/test_cuda_graph_inputs.py
checks that a forward given them builds no mask, on the installed transformers).
"""

from __future__ import annotations

import torch


def static_forward_inputs(model, input_ids: torch.Tensor) -> dict:
    """``{"attention_mask": [B, 1, S, S], "position_ids": [1, S]}`` for a causal LM's forward on
    ``input_ids`` [B, S] (no cache, no padding): pass them to every captured call. The tensors
    must stay alive (and unchanged) while the graph is replayed."""
    from transformers import masking_utils
    if input_ids.dim() != 2:
        raise ValueError(f"static_forward_inputs: input_ids must be [batch, seq], got shape {tuple(input_ids.shape)}")
    config = model.config
    batch, seq = input_ids.shape
    dev = input_ids.device
    # What LlamaModel.forward (and the other decoders) make when position_ids is None.
    position_ids = torch.arange(seq, device=dev).unsqueeze(0)
    # Only the shape, dtype and device of the embeddings are read.
    embeds = torch.empty(batch, seq, config.hidden_size, dtype=model.dtype, device=dev)
    # Positional: the cache argument is `past_key_values` in 5.17 and `cache` in 5.25.
    mask = masking_utils.create_causal_mask(config, embeds, None, None, position_ids)
    if not isinstance(mask, torch.Tensor) or mask.dim() != 4:
        raise ValueError(
            f"static_forward_inputs: transformers built no 4-D mask for attention implementation "
            f"{getattr(config, '_attn_implementation', None)!r} (got {type(mask).__name__}); a forward "
            f"given no mask would build one (on the host) inside the capture. Use eager attention.")
    return {"attention_mask": mask, "position_ids": position_ids}


def reset_capture_state(stream: "torch.cuda.Stream") -> None:
    """After a failed capture, capture one trivial graph on ``stream`` so that the CUDA generator
    leaves its capturing state: a capture that dies before capture_end leaves the default
    generator marked as capturing, and every later RNG call on the device (torch.randn for the
    next test's inputs) then raises "Offset increment outside graph capture encountered
    unexpectedly"."""
    torch.cuda.synchronize()
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g, stream=stream):
        torch.empty(1, device="cuda").add_(1)
    stream.synchronize()
    del g

"""``AutoLigerKernelForCausalLM``: ``AutoModelForCausalLM`` that patches the model's family onto
ligerd before building it (Liger-Kernel's ``transformers/auto_model.py``).

    model = AutoLigerKernelForCausalLM.from_pretrained(path, torch_dtype=torch.bfloat16, rope=False)
    model = AutoLigerKernelForCausalLM.from_config(config)

Keyword arguments the family's ``apply_liger_kernel_to_*`` takes (``rope``, ``swiglu``,
``fused_linear_cross_entropy``, ...) go to it; the rest go to transformers. A model type without a
ligerd patch raises ``ConfigError`` naming the supported ones.
"""

from __future__ import annotations

from transformers import AutoConfig, AutoModelForCausalLM

from ligerd.transformers.monkey_patch import (_apply_liger_kernel, apply_fn_for,
                                              check_transformers_version, split_apply_kwargs)

# AutoConfig.from_pretrained keyword arguments that locate/authorise the checkpoint (passed to
# both the config lookup and the model load).
_HUB_KWARGS = ("cache_dir", "force_download", "local_files_only", "proxies", "revision",
               "subfolder", "token", "trust_remote_code")


class AutoLigerKernelForCausalLM(AutoModelForCausalLM):

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *model_args, **kwargs):
        check_transformers_version()
        hub = {k: kwargs[k] for k in _HUB_KWARGS if k in kwargs}
        config = kwargs.get("config")
        if config is None or isinstance(config, str):
            config = AutoConfig.from_pretrained(config or pretrained_model_name_or_path, **hub)
        fn = apply_fn_for(config.model_type)
        apply_kwargs, rest = split_apply_kwargs(fn, kwargs)
        _apply_liger_kernel(config.model_type, **apply_kwargs)
        return super().from_pretrained(pretrained_model_name_or_path, *model_args, **rest)

    @classmethod
    def from_config(cls, config, **kwargs):
        check_transformers_version()
        fn = apply_fn_for(config.model_type)
        apply_kwargs, rest = split_apply_kwargs(fn, kwargs)
        _apply_liger_kernel(config.model_type, **apply_kwargs)
        return super().from_config(config, **rest)


__all__ = ["AutoLigerKernelForCausalLM"]

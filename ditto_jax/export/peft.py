"""`ditto-jax export --format peft`: a LoRA run's adapters as a PEFT adapter directory.

    adapter_model.safetensors   base_model.model.model.layers.{i}.self_attn.q_proj.lora_A.weight [r, in]
                                ... .lora_B.weight [out, r]  (torch Linear layout: our [in, r] / [r, out] transposed)
    adapter_config.json         peft_type LORA, r, lora_alpha, target_modules, base_model_name_or_path

`PeftModel.from_pretrained(base, out)` on the transformers base gives the
adapted model (for a QLoRA run: adapters trained against the quantized base,
applied to the unquantized one).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from safetensors.numpy import save_file

from ditto_jax.atomic_io import atomic_path
from ditto_jax.lora import TARGETS, load_adapters
from ditto_jax.model import adapter_names

_NUMPY = {"float32": np.float32, "float16": np.float16}


def export_peft(step_dir: Path, out: Path, *, dtype: str) -> Path:
    spec, adapters, base, cfg = load_adapters(step_dir)
    tensors = {}
    for target in spec.targets:
        name, module = TARGETS[target]
        a_name, b_name = adapter_names(name)
        a = np.asarray(adapters["layers"][a_name], np.float32)
        b = np.asarray(adapters["layers"][b_name], np.float32)
        for i in range(cfg.num_layers):
            prefix = f"base_model.model.model.layers.{i}.{module}"
            tensors[f"{prefix}.lora_A.weight"] = np.ascontiguousarray(a[i].T)
            tensors[f"{prefix}.lora_B.weight"] = np.ascontiguousarray(b[i].T)
    if dtype == "bfloat16":
        import ml_dtypes

        tensors = {k: v.astype(ml_dtypes.bfloat16) for k, v in tensors.items()}
    else:
        tensors = {k: v.astype(_NUMPY[dtype]) for k, v in tensors.items()}
    config = {
        "peft_type": "LORA", "task_type": "CAUSAL_LM", "r": spec.rank, "lora_alpha": spec.alpha, "lora_dropout": 0.0,
        "target_modules": sorted(TARGETS[t][1].rsplit(".", 1)[1] for t in spec.targets), "bias": "none",
        "fan_in_fan_out": False, "inference_mode": True, "base_model_name_or_path": base["model"],
    }
    with atomic_path(out) as partial:
        partial.mkdir(parents=True, exist_ok=True)
        save_file(tensors, str(partial / "adapter_model.safetensors"), metadata={"format": "pt"})
        (partial / "adapter_config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    return out

"""Write random-weight gpt-oss checkpoints for GPU runs, since no weights can be downloaded.

The layout is the one ``FastLanguageModel.from_pretrained("unsloth/gpt-oss-20b",
load_in_4bit=True)`` really loads (Unsloth maps that name to its pre-quantized
``unsloth/gpt-oss-20b-unsloth-bnb-4bit``): MoE experts stored per expert as bitsandbytes
NF4 ``Linear4bit`` (``mlp.experts.gate_up_projs.<e>`` / ``down_projs.<e>``), the router
kept in bf16 as ``mlp.router.linear``, attention projections in NF4, and a bitsandbytes
``quantization_config`` in config.json. Unsloth keys its 4-bit expert path on exactly that
(a checkpoint with fused experts would take a different, slower path), so a benchmark on
any other layout would not measure what users run.

The tokenizer is the test fixtures' harmony tokenizer; the model keeps gpt-oss-20b's
vocabulary size, so the embedding and LM head have their real cost.

    python bench/gpu/random_gptoss.py --preset gpt-oss-20b --out /scratch/models/gpt-oss-20b-random

Needs a CUDA GPU with torch, transformers 5.x and bitsandbytes.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

# Unsloth rewrites model names ending in these suffixes, local paths included.
_FORBIDDEN_SUFFIXES = ("-bnb-4bit", "-unsloth-bnb-4bit", "-bf16")
# Modules bitsandbytes must leave in 16-bit (Unsloth's own skip list for gpt-oss).
SKIP_MODULES = ["lm_head", "router", "embed_tokens"]

# gpt-oss widths; "small" keeps every width a multiple of the NF4 block size (64).
SMALL = {
    "num_hidden_layers": 2,
    "hidden_size": 256,
    "intermediate_size": 256,
    "num_local_experts": 8,
    "num_experts_per_tok": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 64,
}


class PerExpertExperts(nn.Module):
    """State-dict twin of Unsloth's bnb-4bit gpt-oss experts: one Linear per expert, so
    bitsandbytes can quantize them. Its forward is only used to check the model."""

    def __init__(self, config: Any) -> None:
        super().__init__()
        hidden, inner = config.hidden_size, config.intermediate_size
        self.num_experts = config.num_local_experts
        self.alpha, self.limit = 1.702, getattr(config, "swiglu_limit", 7.0)
        self.gate_up_projs = nn.ModuleList(
            [nn.Linear(hidden, 2 * inner) for _ in range(self.num_experts)]
        )
        self.down_projs = nn.ModuleList([nn.Linear(inner, hidden) for _ in range(self.num_experts)])
        # transformers' weight initializer touches the fused names; empty and not saved.
        for name in ("gate_up_proj", "gate_up_proj_bias", "down_proj", "down_proj_bias"):
            self.register_buffer(name, torch.empty(0), persistent=False)

    def forward(
        self, hidden: torch.Tensor, router_indices: Any = None, routing_weights: Any = None
    ):
        out = torch.zeros_like(hidden)
        for expert in range(self.num_experts):
            token, slot = torch.where(router_indices == expert)
            if token.numel() == 0:
                continue
            gate_up = self.gate_up_projs[expert](hidden[token])
            gate = gate_up[..., ::2].clamp(max=self.limit)
            up = gate_up[..., 1::2].clamp(-self.limit, self.limit)
            glu = (up + 1) * (gate * torch.sigmoid(gate * self.alpha))
            weight = routing_weights[token, slot, None]
            out.index_add_(0, token, (self.down_projs[expert](glu) * weight).to(out.dtype))
        return out


class _RouterParams(nn.Module):
    # Not an nn.Linear, so bitsandbytes never quantizes the router.
    def __init__(self, hidden: int, experts: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(experts, hidden))
        self.bias = nn.Parameter(torch.zeros(experts))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight, self.bias)


class LinearRouter(nn.Module):
    """Router stored as ``mlp.router.linear.{weight,bias}``, as Unsloth's layout has it."""

    def __init__(self, config: Any) -> None:
        super().__init__()
        self.top_k = config.num_experts_per_tok
        self.hidden_dim = config.hidden_size
        self.linear = _RouterParams(config.hidden_size, config.num_local_experts)

    # transformers' weight initializer looks for these.
    @property
    def weight(self) -> nn.Parameter:
        return self.linear.weight

    @property
    def bias(self) -> nn.Parameter:
        return self.linear.bias

    def forward(self, x: torch.Tensor):
        logits = self.linear(x.reshape(-1, self.hidden_dim))
        top, index = torch.topk(logits, self.top_k, dim=-1)
        return logits, torch.softmax(top, dim=1, dtype=top.dtype), index


@torch.no_grad()
def _randomize(model: nn.Module, seed: int) -> None:
    torch.manual_seed(seed)
    for name, param in model.named_parameters():
        if name.endswith("norm.weight"):
            param.fill_(1.0)
        else:
            param.normal_(0.0, 0.02)


@torch.no_grad()
def _quantize_linears(model: nn.Module, device: str) -> int:
    import bitsandbytes as bnb

    count = 0
    for name, module in list(model.named_modules()):
        if type(module) is not nn.Linear or any(skip in name for skip in SKIP_MODULES):
            continue
        quantized = bnb.nn.Linear4bit(
            module.in_features,
            module.out_features,
            bias=module.bias is not None,
            compute_dtype=torch.bfloat16,
            compress_statistics=True,
            quant_type="nf4",
            quant_storage=torch.uint8,
            device="meta",
        )
        quantized.weight = bnb.nn.Params4bit(
            module.weight.data,
            requires_grad=False,
            compress_statistics=True,
            quant_type="nf4",
            blocksize=64,
            quant_storage=torch.uint8,
        )
        if module.bias is not None:
            quantized.bias = nn.Parameter(module.bias.data, requires_grad=False)
        model.set_submodule(name, quantized.to(device))  # .to(cuda) quantizes
        count += 1
    return count


def _quantization_config() -> dict[str, Any]:
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=torch.bfloat16,
        bnb_4bit_quant_storage=torch.uint8,
        llm_int8_skip_modules=SKIP_MODULES,
    ).to_dict()


def write(out: Path, preset: str, *, seed: int = 0, device: str = "cuda") -> dict[str, Any]:
    """Write the checkpoint; returns what was written (for the benchmark's record)."""
    import transformers.models.gpt_oss.modeling_gpt_oss as modeling
    from transformers import AutoModelForCausalLM

    from finetune_trainer.fixtures.tiny_model import generation_config, model_config
    from finetune_trainer.fixtures.tiny_tokenizer import write_tiny_tokenizer

    out = out.resolve()
    if str(out).lower().endswith(_FORBIDDEN_SUFFIXES):
        raise SystemExit(f"{out}: Unsloth rewrites names ending in {_FORBIDDEN_SUFFIXES}")
    out.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    tokenizer = write_tiny_tokenizer(out)
    if preset == "small":
        config = model_config("tiny", tokenizer=tokenizer, **SMALL)
    else:
        config = model_config(preset, tokenizer=tokenizer)  # type: ignore[arg-type]
    config.architectures = ["GptOssForCausalLM"]
    originals = modeling.GptOssExperts, modeling.GptOssTopKRouter
    modeling.GptOssExperts, modeling.GptOssTopKRouter = PerExpertExperts, LinearRouter
    try:
        with torch.device(device):
            model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    finally:
        modeling.GptOssExperts, modeling.GptOssTopKRouter = originals
    _randomize(model, seed)
    params = sum(p.numel() for p in model.parameters())
    quantized = _quantize_linears(model, device)
    model.config.quantization_config = _quantization_config()
    model.generation_config = generation_config(tokenizer)
    model.save_pretrained(str(out), max_shard_size="5GB")
    size = sum(f.stat().st_size for f in out.iterdir() if f.is_file())
    record = {
        "preset": preset,
        "path": str(out),
        "parameters": params,
        "quantized_linears": quantized,
        "bytes_on_disk": size,
        "seconds": round(time.monotonic() - started, 1),
    }
    del model
    torch.cuda.empty_cache()
    return record


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", choices=["small", "gpt-oss-20b-2layer", "gpt-oss-20b"])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    import json

    print(json.dumps(write(args.out, args.preset, seed=args.seed)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

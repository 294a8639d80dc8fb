"""A rough GPU memory estimate for LoRA/QLoRA training, from the model's ``config.json``.

It is a planning aid, not a promise: real use depends on kernels, the allocator and
fragmentation. The formula (all terms in bytes, B = micro-batch, S = max_seq_length,
H = hidden size, L = layers, V = vocabulary, E = experts, k = experts per token,
I = expert/MLP intermediate size, r = LoRA rank):

- **weights**: parameters counted from the config, experts included (a MoE model keeps
  every expert in memory, not only the active ones). With 4-bit (bitsandbytes NF4) the
  projection matrices cost 0.5 byte + 1/64 * 2 bytes of block scales per parameter; the
  embeddings, LM head, norms, biases and router stay 16-bit (2 bytes). 16-bit weights cost
  2 bytes, 32-bit 4. An input embedding kept in host memory (``model.offloadEmbedding``,
  not tied to the LM head) costs the GPU nothing.
- **LoRA**: r * (in + out) per adapted matrix (times E for expert matrices), stored in
  float32 (4) with float32 gradients (4) and optimizer state: 2 bytes for 8-bit AdamW,
  8 bytes for 32-bit AdamW, 4 for Adafactor/SGD as an upper bound.
- **activations**: with checkpointing each layer keeps its input, B*S*H*2 per layer; the
  "unsloth" mode offloads those to CPU RAM, leaving about 2 layers' worth on the GPU. One
  layer is recomputed at a time during backward; per token it holds 2*(12*H + 4*q) bytes
  of hidden states and attention projections (memory-efficient attention: no S^2 term),
  plus the MLP's: 2*3*I for a dense model; for a MoE, per routed expert, the gate/up
  and down outputs in float32 with a float32 temporary each and the 16-bit routed input
  and activation, k*(16*I + 10*H) -- Unsloth's 4-bit gpt-oss experts keep their outputs
  in float32 while training. Without checkpointing every layer keeps that working set
  (x L).
- **dequantized experts**: 4-bit MoE experts run as one grouped matmul over the layer's
  experts dequantized to 16-bit, E*3*I*H*2 for the layer being computed.
- **logits**: with Unsloth's fused loss the logits exist one chunk of 512 rows at a time,
  in float32: min(T, 512)*V*4, whatever the batch; without it (T = B*S tokens) all of
  them, T*V*6 (16-bit logits plus their float32 loss computation) -- the dominant term at
  long context with a 200k vocabulary.
- **overhead**: CUDA context, workspace and allocator slack, a flat 1 GiB + 5%.

Measured on an H200 (``bench/README.md``), gpt-oss-20b in 4-bit at seq 1024, the
training peak over the loaded model grows by 0.40 GiB per 1024-token row from 2.06 GiB
at no rows; the formula gives 0.41 GiB per row from 4.5 GiB, about 2.4 GiB above the
measurement at each micro-batch measured (1, 4 and 16 rows), as a plan should be.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from finetune_api.config import TrainerConfig

    from .sources import ModelSource

log = logging.getLogger(__name__)

GIB = 1024**3
# Rows of logits Unsloth's fused loss computes at a time (unsloth_zoo's fused linear
# cross-entropy): the buffer does not grow with the batch.
LOSS_CHUNK_ROWS = 512

_GATE_UP_NAMES = ("gate_up_proj", "gate_proj", "up_proj")


@dataclass(frozen=True)
class ModelShape:
    """The sizes that decide memory, read from a Hugging Face ``config.json``."""

    model_type: str
    vocab_size: int
    hidden_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    intermediate_size: int
    num_experts: int  # 0 for a dense model
    experts_per_token: int
    tie_word_embeddings: bool

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> ModelShape:
        text = config.get("text_config") or config
        hidden = int(text["hidden_size"])
        heads = int(text.get("num_attention_heads", 1))
        experts = int(
            text.get("num_local_experts")
            or text.get("num_experts")
            or text.get("n_routed_experts")
            or 0
        )
        intermediate = int(
            (text.get("moe_intermediate_size") if experts else None)
            or text.get("intermediate_size")
            or 4 * hidden
        )
        return cls(
            model_type=str(config.get("model_type", "unknown")),
            vocab_size=int(text["vocab_size"]),
            hidden_size=hidden,
            num_layers=int(text["num_hidden_layers"]),
            num_heads=heads,
            num_kv_heads=int(text.get("num_key_value_heads") or heads),
            head_dim=int(text.get("head_dim") or hidden // heads),
            intermediate_size=intermediate,
            num_experts=experts,
            experts_per_token=int(
                text.get("num_experts_per_tok") or text.get("experts_per_token") or 0
            ),
            tie_word_embeddings=bool(config.get("tie_word_embeddings", False)),
        )

    # --- parameter counts --------------------------------------------------------------------
    @property
    def q_width(self) -> int:
        return self.num_heads * self.head_dim

    @property
    def kv_width(self) -> int:
        return self.num_kv_heads * self.head_dim

    def attention_matrices(self) -> dict[str, tuple[int, int]]:
        """(in, out) of each attention projection in one layer."""
        h = self.hidden_size
        return {
            "q_proj": (h, self.q_width),
            "k_proj": (h, self.kv_width),
            "v_proj": (h, self.kv_width),
            "o_proj": (self.q_width, h),
        }

    def mlp_matrices(self) -> dict[str, tuple[int, int]]:
        """(in, out) of each MLP projection in one layer, per expert for a MoE model."""
        h, i = self.hidden_size, self.intermediate_size
        if self.num_experts:
            return {"gate_up_proj": (h, 2 * i), "down_proj": (i, h)}
        return {"gate_proj": (h, i), "up_proj": (h, i), "down_proj": (i, h)}

    @property
    def copies_per_mlp(self) -> int:
        return max(1, self.num_experts)

    def mlp_params(self) -> int:
        """Parameters of one layer's MLP, of one expert of a MoE model."""
        return sum(i * o for i, o in self.mlp_matrices().values())

    def projection_params(self) -> int:
        """Parameters of the matrices bitsandbytes quantizes (attention + MLP/experts)."""
        per_layer = sum(i * o for i, o in self.attention_matrices().values())
        per_layer += self.copies_per_mlp * self.mlp_params()
        return per_layer * self.num_layers

    def other_params(self) -> int:
        """Embeddings, LM head, norms, biases, router: kept in 16-bit."""
        h = self.hidden_size
        embeddings = self.vocab_size * h * (1 if self.tie_word_embeddings else 2)
        per_layer = 2 * h  # two norms
        per_layer += self.q_width + 2 * self.kv_width + h  # attention biases (upper bound)
        if self.num_experts:
            per_layer += self.num_experts * (h + 1)  # router
            per_layer += self.num_experts * (2 * self.intermediate_size + h)  # expert biases
        return embeddings + per_layer * self.num_layers + h

    def total_params(self) -> int:
        return self.projection_params() + self.other_params()

    def active_params(self) -> int:
        """Parameters used per token (only the routed experts of a MoE model)."""
        if not self.num_experts:
            return self.total_params()
        idle = self.num_experts - self.experts_per_token
        return self.total_params() - self.mlp_params() * self.num_layers * idle

    def lora_params(self, rank: int, target_modules: list[str]) -> int:
        """Trainable LoRA parameters for ``target_modules`` (names as in the config)."""
        wanted = set(target_modules)
        per_layer = 0
        for name, (i, o) in self.attention_matrices().items():
            if name in wanted:
                per_layer += rank * (i + o)
        for name, (i, o) in self.mlp_matrices().items():
            aliases = _GATE_UP_NAMES if name == "gate_up_proj" else (name,)
            if wanted.intersection(aliases):
                per_layer += self.copies_per_mlp * rank * (i + o)
        return per_layer * self.num_layers


_OPTIMIZER_BYTES = {
    "adamw_8bit": 2,
    "paged_adamw_8bit": 2,
    "adamw_torch": 8,
    "adamw_torch_fused": 8,
    "paged_adamw_32bit": 8,
    "adafactor": 4,
    "sgd": 4,
}


@dataclass(frozen=True)
class MemoryEstimate:
    weights: int
    lora: int
    activations: int
    dequantized_experts: int
    logits: int
    overhead: int
    lora_params: int
    total_params: int

    @property
    def total(self) -> int:
        return (
            self.weights
            + self.lora
            + self.activations
            + self.dequantized_experts
            + self.logits
            + self.overhead
        )

    def as_gib(self) -> dict[str, float]:
        return {
            "weights": round(self.weights / GIB, 2),
            "lora_and_optimizer": round(self.lora / GIB, 2),
            "activations": round(self.activations / GIB, 2),
            "dequantized_experts": round(self.dequantized_experts / GIB, 2),
            "logits": round(self.logits / GIB, 2),
            "overhead": round(self.overhead / GIB, 2),
            "total": round(self.total / GIB, 2),
        }


def estimate_memory(
    shape: ModelShape,
    *,
    seq_length: int,
    micro_batch: int,
    load_in_4bit: bool,
    weight_bytes: int = 2,
    lora_rank: int,
    target_modules: list[str],
    optimizer: str,
    gradient_checkpointing: str,
    chunked_loss: bool = True,
    offload_embedding: bool = False,
) -> MemoryEstimate:
    """Apply the formula in this module's docstring."""
    if load_in_4bit:
        weights = int(shape.projection_params() * (0.5 + 2 / 64)) + shape.other_params() * 2
    else:
        weights = shape.total_params() * weight_bytes
    if offload_embedding and not shape.tie_word_embeddings:
        weights -= shape.vocab_size * shape.hidden_size * (2 if load_in_4bit else weight_bytes)
    lora_params = shape.lora_params(lora_rank, target_modules)
    lora = lora_params * (4 + 4 + _OPTIMIZER_BYTES.get(optimizer, 8))

    tokens = micro_batch * seq_length
    h, i = shape.hidden_size, shape.intermediate_size
    per_token = 2 * (12 * h + 4 * shape.q_width)
    if shape.num_experts:
        per_token += shape.experts_per_token * (16 * i + 10 * h)
    else:
        per_token += 2 * 3 * i
    layer_working_set = tokens * per_token
    layer_input = tokens * h * 2
    if gradient_checkpointing == "unsloth":
        activations = 2 * layer_input + layer_working_set
    elif gradient_checkpointing == "on":
        activations = shape.num_layers * layer_input + layer_working_set
    else:
        activations = shape.num_layers * layer_working_set
    dequantized = 0
    if load_in_4bit and shape.num_experts:
        dequantized = shape.num_experts * shape.mlp_params() * 2
    if chunked_loss:
        logits = min(tokens, LOSS_CHUNK_ROWS) * shape.vocab_size * 4
    else:
        logits = tokens * shape.vocab_size * 6
    subtotal = weights + lora + activations + dequantized + logits
    overhead = int(GIB + 0.05 * subtotal)
    return MemoryEstimate(
        weights=weights,
        lora=lora,
        activations=activations,
        dequantized_experts=dequantized,
        logits=logits,
        overhead=overhead,
        lora_params=lora_params,
        total_params=shape.total_params(),
    )


def estimate_for(
    config: TrainerConfig,
    shape: ModelShape,
    micro_batch: int | None = None,
    gradient_checkpointing: str | None = None,
    offload_embedding: bool | None = None,
) -> MemoryEstimate:
    """The estimate for a trainer config: what ``--dry-run`` prints (at the configured
    settings) and what memory_plan.py weighs each candidate ``micro_batch`` and
    ``gradient_checkpointing`` and ``offload_embedding`` with. Either left out is the
    config's, or the smallest footprint where the config leaves it to the plan."""
    least_checkpointing, least_offload = smallest_footprint(config)
    return estimate_memory(
        shape,
        seq_length=config.model.max_seq_length,
        micro_batch=micro_batch or config.training.per_device_train_batch_size,
        load_in_4bit=config.model.load_in_4bit,
        lora_rank=config.lora.rank,
        target_modules=list(config.lora.target_modules),
        optimizer=config.training.optimizer,
        gradient_checkpointing=gradient_checkpointing or least_checkpointing,
        offload_embedding=least_offload if offload_embedding is None else offload_embedding,
    )


def smallest_footprint(config: TrainerConfig) -> tuple[str, bool]:
    """The gradient checkpointing and embedding placement that need the least memory among
    those the config allows: for settings left to the memory plan (checkpointing auto,
    offloadEmbedding unset), checkpointing on and the embedding in host memory. The plan
    sizes the micro-batch with these, and ``--dry-run`` estimates them."""
    checkpointing = config.training.gradient_checkpointing
    offload = config.model.offload_embedding
    return (
        "unsloth" if checkpointing == "auto" else checkpointing,
        True if offload is None else offload,
    )


def read_model_config(source: ModelSource, token: str | None) -> dict[str, Any] | None:
    """The model's ``config.json``, which the estimate reads the model's shape from: from
    its directory, or fetched alone from the Hub (a few KB). None when it cannot be had (no
    network, for example)."""
    if source.is_local:
        path = Path(source.name_or_path) / "config.json"
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None
    try:
        from huggingface_hub import hf_hub_download

        path = Path(
            hf_hub_download(
                source.name_or_path, "config.json", revision=source.revision, token=token
            )
        )
        loaded: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
        return loaded
    except Exception as exc:  # network, auth, or a gated repo: the estimate is optional
        from .remote_errors import details

        log.warning(
            "could not read %s's config.json for the memory estimate: %s",
            source.name_or_path,
            details(exc),
        )
        return None

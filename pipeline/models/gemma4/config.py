"""Gemma 4 text-model hyper-parameters and the per-layer facts derived from them.

Source: transformers 5.24 ``models/gemma4/configuration_gemma4.py`` (``Gemma4TextConfig``: field
names, defaults, ``layer_types`` default pattern, ``kv_sharing_modes``, the per-layer overrides of
``head_dim`` by ``global_head_dim`` and of ``num_key_value_heads`` by
``num_global_key_value_heads`` on full-attention layers) and ``modeling_gemma4.py``.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from ..layer_types import FULL, SLIDING, check_activation, check_layer_types, periodic_layer_types


@dataclasses.dataclass
class Gemma4Config:
    """Hyper-parameters of a Gemma 4 text model (names as in ``Gemma4TextConfig``).

    Per-type RoPE: ``rope_theta_sliding`` (default RoPE over ``head_dim``) and ``rope_theta_full``
    with ``partial_rotary_factor`` (proportional RoPE over ``global_head_dim``).  Optional
    features are off at their zero values: per-layer embeddings (``hidden_size_per_layer_input``
    0), KV sharing (``num_kv_shared_layers`` 0), mixture of experts (``enable_moe_block``).
    """

    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    layer_types: list[str]
    global_head_dim: int = 512
    num_global_key_value_heads: int | None = None
    sliding_window: int = 512
    rms_norm_eps: float = 1e-6
    rope_theta_sliding: float = 10_000.0
    rope_theta_full: float = 1_000_000.0
    partial_rotary_factor: float = 0.25
    rope_factor_full: float = 1.0
    final_logit_softcapping: float | None = None
    hidden_activation: str = "gelu_pytorch_tanh"
    hidden_size_per_layer_input: int = 0
    vocab_size_per_layer_input: int = 0
    attention_k_eq_v: bool = False
    num_kv_shared_layers: int = 0
    use_double_wide_mlp: bool = False
    enable_moe_block: bool = False
    num_experts: int = 0
    top_k_experts: int = 0
    moe_intermediate_size: int = 0
    context_window_size: int = 131072
    prefill_chunk_size: int = 2048
    max_batch_size: int = 1
    bos_token_id: int = 2
    eos_token_id: list[int] = dataclasses.field(default_factory=lambda: [1, 106])
    pad_token_id: int = 0

    model_type = "gemma4_text"

    def __post_init__(self):
        check_layer_types(self.layer_types, self.num_hidden_layers)
        if self.layer_types[-1] != FULL:
            raise ValueError(f"the last layer must be {FULL}, got {self.layer_types[-1]}")
        check_activation(self.hidden_activation)
        if self.enable_moe_block and not (self.num_experts and self.top_k_experts and self.moe_intermediate_size):
            raise ValueError("enable_moe_block needs num_experts, top_k_experts and moe_intermediate_size")
        for kv in {self.layer_kv_heads(i) for i in range(self.num_hidden_layers)}:
            if self.num_attention_heads % kv or self.cache_kv_heads % kv:
                raise ValueError(f"num_attention_heads {self.num_attention_heads} and the cache's "
                                 f"{self.cache_kv_heads} KV heads must be multiples of every layer's KV head "
                                 f"count ({kv})")
        self.kv_sharing_modes()  # validates the sharing pattern

    # --- per-layer facts ----------------------------------------------------------------
    def is_sliding(self, layer: int) -> bool:
        """Whether ``layer`` uses sliding-window attention."""
        return self.layer_types[layer] == SLIDING

    def layer_head_dim(self, layer: int) -> int:
        """``head_dim`` on sliding layers, ``global_head_dim`` on full layers."""
        return self.head_dim if self.is_sliding(layer) else self.global_head_dim

    def layer_kv_heads(self, layer: int) -> int:
        """KV heads of ``layer``: ``num_global_key_value_heads`` on full layers of k_eq_v models."""
        if not self.is_sliding(layer) and self.attention_k_eq_v and self.num_global_key_value_heads:
            return self.num_global_key_value_heads
        return self.num_key_value_heads

    def layer_has_v_proj(self, layer: int) -> bool:
        """False on full layers of ``attention_k_eq_v`` models, whose values are the keys."""
        return not (self.attention_k_eq_v and not self.is_sliding(layer))

    def kv_sharing_modes(self) -> list[str | None]:
        """Per layer: ``None`` (own K/V), ``"store"`` (the last non-shared layer of its type, whose
        K/V later layers and MTP drafters reuse) or ``"reuse"`` (one of the last
        ``num_kv_shared_layers`` layers, which attend to the store layer's K/V of their type).

        Raises:
            ValueError: a layer type among the shared layers has no earlier non-shared layer.
        """
        n = self.num_hidden_layers
        first_shared = n - self.num_kv_shared_layers
        modes: list[str | None] = [None if i < first_shared else "reuse" for i in range(n)]
        for kind in sorted(set(self.layer_types)):
            owners = [i for i in range(first_shared) if self.layer_types[i] == kind]
            if not owners:
                raise ValueError(f"num_kv_shared_layers={self.num_kv_shared_layers} leaves no {kind} layer "
                                 f"to share from")
            modes[owners[-1]] = "store"
        return modes

    def store_layer(self, kind: str) -> int:
        """Index of the layer whose K/V layers of type ``kind`` share and MTP drafters read."""
        modes = self.kv_sharing_modes()
        return max(i for i in range(self.num_hidden_layers) if modes[i] == "store" and self.layer_types[i] == kind)

    def layer_intermediate_size(self, layer: int) -> int:
        """MLP width: doubled on KV-shared layers of ``use_double_wide_mlp`` models."""
        wide = self.use_double_wide_mlp and self.kv_sharing_modes()[layer] == "reuse"
        return self.intermediate_size * (2 if wide else 1)

    @property
    def rotary_pairs_full(self) -> int:
        """Rotating frequency pairs of full layers' proportional RoPE: ``int(factor * d // 2)``."""
        return int(self.partial_rotary_factor * self.global_head_dim // 2)

    @property
    def cache_head_dim(self) -> int:
        """Head dimension of the shared paged KV cache: the largest layer's (others zero-padded)."""
        return max(self.layer_head_dim(i) for i in range(self.num_hidden_layers))

    @property
    def cache_kv_heads(self) -> int:
        """KV heads of the shared paged KV cache: the largest layer's (others repeated)."""
        return max(self.layer_kv_heads(i) for i in range(self.num_hidden_layers))

    # --- sources ------------------------------------------------------------------------
    @classmethod
    def from_hf(cls, cfg: dict[str, Any], **overrides: Any) -> Gemma4Config:
        """Read a transformers ``config.json`` dict (``gemma4_text``, or ``gemma4`` with ``text_config``).

        Raises:
            KeyError: a required key is missing.
            ValueError: an unsupported value (attention bias, bidirectional text attention, a RoPE
                type other than default/proportional).
        """
        values = cls.hf_values(cfg)
        values.update(overrides)
        return cls(**values)

    @staticmethod
    def hf_values(cfg: dict[str, Any]) -> dict[str, Any]:
        """The dataclass fields read from a transformers config dict (see :meth:`from_hf`)."""
        if "text_config" in cfg:
            cfg = cfg["text_config"]
        if cfg.get("attention_bias"):
            raise ValueError("attention_bias=true is not supported (Gemma 4 has none)")
        if cfg.get("use_bidirectional_attention") == "all":
            raise ValueError("use_bidirectional_attention='all' (an encoder) is not supported")
        n_layers = cfg["num_hidden_layers"]
        layer_types = list(cfg.get("layer_types") or periodic_layer_types(n_layers, 6))
        layer_types[-1] = FULL  # transformers forces it too
        rope = cfg.get("rope_parameters") or {}
        sliding_rope = rope.get(SLIDING, {"rope_type": "default", "rope_theta": 10_000.0})
        full_rope = rope.get(FULL, {"rope_type": "proportional", "partial_rotary_factor": 0.25,
                                    "rope_theta": 1_000_000.0})
        for kind, params in ((SLIDING, sliding_rope), (FULL, full_rope)):
            if params.get("rope_type", "default") not in ("default", "proportional"):
                raise ValueError(f"rope_parameters.{kind}.rope_type {params['rope_type']!r} is not supported")
        full_partial = (full_rope.get("partial_rotary_factor", 1.0)
                        if full_rope.get("rope_type") == "proportional" else 1.0)
        global_head_dim = cfg.get("global_head_dim") or 512
        global_kv_heads = cfg.get("num_global_key_value_heads")
        per_layer = cfg.get("per_layer_config") or {}  # newer files: overrides per full layer
        overrides_full = {tuple(sorted(v.items())) for k, v in per_layer.items() if layer_types[int(k)] == FULL}
        if len(overrides_full) > 1:
            raise ValueError(f"per_layer_config differs between full-attention layers: {sorted(overrides_full)}")
        if overrides_full:
            full = dict(next(iter(overrides_full)))
            global_head_dim = full.get("head_dim", global_head_dim)
            global_kv_heads = full.get("num_key_value_heads", global_kv_heads)
        eos = cfg.get("eos_token_id", [1, 106])
        ple = cfg.get("hidden_size_per_layer_input") or 0
        values = dict(
            vocab_size=cfg["vocab_size"],
            hidden_size=cfg["hidden_size"],
            intermediate_size=cfg["intermediate_size"],
            num_hidden_layers=n_layers,
            num_attention_heads=cfg["num_attention_heads"],
            num_key_value_heads=cfg["num_key_value_heads"],
            head_dim=cfg.get("head_dim", 256),
            layer_types=layer_types,
            global_head_dim=global_head_dim,
            num_global_key_value_heads=global_kv_heads,
            sliding_window=cfg.get("sliding_window", 512),
            rms_norm_eps=cfg.get("rms_norm_eps", 1e-6),
            rope_theta_sliding=float(sliding_rope.get("rope_theta", 10_000.0)),
            rope_theta_full=float(full_rope.get("rope_theta", 1_000_000.0)),
            partial_rotary_factor=float(full_partial),
            rope_factor_full=float(full_rope.get("factor", 1.0)),
            final_logit_softcapping=cfg.get("final_logit_softcapping"),
            hidden_activation=cfg.get("hidden_activation", "gelu_pytorch_tanh"),
            hidden_size_per_layer_input=ple,
            vocab_size_per_layer_input=(cfg.get("vocab_size_per_layer_input") or 0) if ple else 0,
            attention_k_eq_v=bool(cfg.get("attention_k_eq_v", False)),
            num_kv_shared_layers=cfg.get("num_kv_shared_layers") or 0,
            use_double_wide_mlp=bool(cfg.get("use_double_wide_mlp", False)),
            enable_moe_block=bool(cfg.get("enable_moe_block", False)),
            num_experts=cfg.get("num_experts") or 0,
            top_k_experts=cfg.get("top_k_experts") or 0,
            moe_intermediate_size=cfg.get("moe_intermediate_size") or 0,
            context_window_size=cfg.get("max_position_embeddings", 131072),
            bos_token_id=cfg.get("bos_token_id", 2),
            eos_token_id=eos if isinstance(eos, list) else [eos],
            pad_token_id=cfg.get("pad_token_id", 0),
        )
        return values

    def to_dict(self) -> dict[str, Any]:
        """The config as plain JSON-able data (written to ``mlc-chat-config.json``)."""
        return dataclasses.asdict(self)

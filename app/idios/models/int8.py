"""Dynamic int8 quantisation of a loaded network, in place (IDIOS_QUANTIZE=int8); CPU only.

Imports torch at module level: only model `load` methods import this module.

Weights of every `nn.Linear` become int8 with one scale per output channel, embedding tables
one scale per row; activations are quantised on the fly, per tensor, at each forward. The float32
weights are dropped, so the model takes about a third of the memory, and int8 matrix products
are faster than float32 ones on CPUs with AVX2.

`nn.MultiheadAttention` keeps its input projection as a bare parameter, out of reach of
`quantize_dynamic`; `unfuse_attention` first swaps each self-attention module for `SelfAttention`,
whose projections are plain `nn.Linear`s, so the attention weights are quantised too.

Activations are quantised per tensor, so a vector depends slightly on the other images of its
batch (cosine above 0.999 between an image embedded alone and in a batch of 16); the same batch
gives the same vectors in every process. `torch.ao.quantization` is deprecated upstream in
favour of torchao; it still ships with the pinned torch.
"""

from __future__ import annotations

import logging
import warnings

import torch
import torch.nn.functional as F
from torch import nn
from torch.ao.quantization import float_qparams_weight_only_qconfig, per_channel_dynamic_qconfig, quantize_dynamic

from idios.heap import release_memory

log = logging.getLogger("idios.models")


class SelfAttention(nn.Module):
    """`nn.MultiheadAttention` restricted to self-attention, with `nn.Linear` projections.

    Same weights and same call signature (`query, key, value, need_weights, attn_mask`, returning
    `(output, None)`); the `key` and `value` must be the `query` itself.
    """

    def __init__(self, attention: nn.MultiheadAttention) -> None:
        super().__init__()
        if not attention._qkv_same_embed_dim or attention.in_proj_weight is None:
            raise ValueError("only attention with one packed input projection can be unfused")
        dim = attention.embed_dim
        self.num_heads = attention.num_heads
        self.batch_first = attention.batch_first
        self.in_proj = nn.Linear(dim, 3 * dim, bias=attention.in_proj_bias is not None)
        self.in_proj.weight = attention.in_proj_weight  # shared, not copied
        if attention.in_proj_bias is not None:
            self.in_proj.bias = attention.in_proj_bias
        self.out_proj = nn.Linear(dim, dim, bias=attention.out_proj.bias is not None)
        self.out_proj.weight = attention.out_proj.weight
        if attention.out_proj.bias is not None:
            self.out_proj.bias = attention.out_proj.bias

    def forward(
        self,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        need_weights: bool = False,
        attn_mask: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, None]:
        if key is not query or value is not query or need_weights:
            raise ValueError("SelfAttention computes self-attention without weights only")
        x = query if self.batch_first else query.transpose(0, 1)
        batch, length, dim = x.shape
        heads = self.num_heads
        q, k, v = self.in_proj(x).view(batch, length, 3, heads, dim // heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
        out = self.out_proj(out.transpose(1, 2).reshape(batch, length, dim))
        return (out if self.batch_first else out.transpose(0, 1)), None


def unfuse_attention(model: nn.Module) -> int:
    """Replace every `nn.MultiheadAttention` in `model` by an equivalent `SelfAttention`; returns how many."""
    swaps = [
        (parent, name, child)
        for parent in model.modules()
        for name, child in parent.named_children()
        if isinstance(child, nn.MultiheadAttention)
    ]
    for parent, name, child in swaps:
        setattr(parent, name, SelfAttention(child))
    return len(swaps)


def quantize_int8(model: nn.Module) -> nn.Module:
    """Quantise `model`'s Linear and Embedding weights to int8, in place, and give the float32 memory back."""
    unfuse_attention(model)
    with warnings.catch_warnings():
        # torch 2.10+ warns once per layer that quantised tensor creation is deprecated (pytorch#184982).
        warnings.filterwarnings("ignore", message=r".*quantize_per_(tensor|channel).*deprecated", category=UserWarning)
        warnings.filterwarnings("ignore", message=r"torch\.ao\.quantization is deprecated", category=DeprecationWarning)
        quantize_dynamic(
            model,
            {nn.Linear: per_channel_dynamic_qconfig, nn.Embedding: float_qparams_weight_only_qconfig},
            inplace=True,
        )
    for module in model.modules():
        if isinstance(module, torch.ao.nn.quantized.dynamic.Linear):
            # open_clip reads its blocks' weight dtype to cast the text input; this is its hook for int8 layers.
            module.int8_original_dtype = torch.float32  # type: ignore[assignment]  # Module stores any value
    release_memory()
    return model

"""LoRA confined to a mask: W = W0 + s * (M ⊙ B A), the update of Q-resafe's Eq. 2.

peft's LoRA adds a dense B A; Q-resafe may only change the safety-critical entries (the SNIP top-tau
mask M, re-selected every K steps), so the delta is masked inside the forward pass: gradients reach A
and B only through selected entries, and merging adds exactly M ⊙ (s B A) to the weight, leaving
every other entry of W0 as it was.

When the mask is re-selected (every K steps), the delta learnt so far is frozen and LoRA restarts from
B = 0 under the new mask, so earlier updates persist and the base W0 (the DPO reference) never changes.
``mask_map="rowcol"`` is the spec's MapMask option (b): a LoRA row of B / column of A is free when its
row / column of M has any selected entry (a superset of M).
``full=True`` replaces the low-rank factors by a dense delta over every entry (no mask): full-parameter
fine-tuning of the layer with W0 kept as the reference, merged and saved exactly like a LoRA delta.

Cost: the masked product is never kept for the backward pass. A full mask (tau = 1: the DPO / SFT
baselines) runs as plain low-rank LoRA; otherwise ``_MaskedLinear`` builds W0 + s (M ⊙ B A) by row
blocks in the forward pass and again in the backward pass, so a step costs about what a plain LoRA
step does and holds one block of the weight beyond it (bench/patch_memory.py measures both). What stays
resident is kept small on layers larger than one block (``COMPACT_ABOVE`` entries, e.g. every layer of a
7B model): the mask bit-packed (one bit per weight entry, not a byte), and a frozen earlier delta as its
factors and packed mask (``_Frozen``), rebuilt block by block with the current one, instead of a dense
fp32 out x in matrix per layer (at 7B width that alone would be twice the bf16 model). Smaller layers
keep a bool mask and one dense frozen sum: there the rebuild would cost more time than it saves memory.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn

_BITS = (1, 2, 4, 8, 16, 32, 64, 128)
COMPACT_ABOVE = 1 << 22  # weight entries (one 16 MB fp32 block): larger layers keep packed masks, factored deltas


def pack_mask(mask: torch.Tensor) -> torch.Tensor:
    """(out, in) bool -> (out, ceil(in / 8)) uint8, bit k of byte j = entry 8 j + k."""
    columns = mask.shape[1]
    padded = F.pad(mask.to(torch.uint8), (0, (-columns) % 8)).view(mask.shape[0], -1, 8)
    bits = torch.tensor(_BITS, dtype=torch.uint8, device=mask.device)
    return (padded * bits).sum(-1, dtype=torch.uint8)  # distinct bits: the sum is their OR


def unpack_mask(packed: torch.Tensor, columns: int, start: int = 0, stop: int | None = None) -> torch.Tensor:
    """Rows ``start:stop`` of the bool mask ``pack_mask`` packed (``columns`` = its width); a bool
    (unpacked) mask is sliced as it is."""
    rows = packed[start:stop]
    if rows.dtype == torch.bool:
        return rows
    bits = torch.tensor(_BITS, dtype=torch.uint8, device=packed.device)
    return (rows.unsqueeze(-1) & bits).ne(0).view(rows.shape[0], -1)[:, :columns]


class _Frozen:
    """The delta learnt under an earlier mask, s * (M ⊙ B A) (or rowcol's s (B r)(A c)): dense on small
    layers, else kept as its factors and packed mask; ``block`` gives rows of it in fp32."""

    def __init__(self, adapter: MaskedLoRALinear):
        self.dense = None if adapter.compact else adapter.lora_delta().detach().clone()
        if self.dense is not None:
            return
        self.lora_A = adapter.lora_A.detach().clone()
        self.lora_B = adapter.lora_B.detach().clone()
        self.scale, self.columns = adapter.scale, adapter.base.in_features
        if adapter.mask_map == "rowcol":
            mask = adapter.mask
            self.bits, self.rows, self.cols = None, mask.any(dim=1, keepdim=True), mask.any(dim=0, keepdim=True)
        else:
            self.bits, self.rows, self.cols = adapter.mask_bits.clone(), None, None

    def absorb(self, adapter: MaskedLoRALinear) -> bool:
        """Add the adapter's current delta to a dense one (small layers keep a single sum)."""
        if self.dense is None:
            return False
        self.dense += adapter.lora_delta().detach()
        return True

    def block(self, start: int, stop: int) -> torch.Tensor:
        if self.dense is not None:
            return self.dense[start:stop]
        if self.bits is None:
            return self.scale * (self.lora_B[start:stop] * self.rows[start:stop]) @ (self.lora_A * self.cols)
        mask = unpack_mask(self.bits, self.columns, start, stop)
        return (self.lora_B[start:stop] @ self.lora_A).mul_(mask).mul_(self.scale)


def _rows_per_block(in_features: int, entries: int = 1 << 22) -> int:
    """Rows of an out x in weight that fit ``entries`` (16 MB of fp32): the transient a block costs."""
    return max(1, entries // max(1, in_features))


class _MaskedLinear(torch.autograd.Function):
    """y = x W^T with W = [W0 +] s (M ⊙ B A) [+ frozen deltas], computed by row blocks of W in both passes.

    Autograd would keep the dense masked product of every layer for the backward pass (an out x in
    tensor per layer: the model's size again, per step); here only x, A, B and the packed mask are kept
    and each block of W is rebuilt when needed, so the extra memory is one block. The gradients are Eq. 2's exactly:
    dL/d(BA) = s M ⊙ (g^T x), dB = that A^T, dA = B^T that; dW0 = g^T x when W0 requires a gradient (SNIP).
    """

    @staticmethod
    def forward(ctx, x, weight, lora_A, lora_B, mask_bits, frozen, scale, rows):
        flat = x.reshape(-1, x.shape[-1])
        out_features = mask_bits.shape[0]
        parts = []
        for start in range(0, out_features, rows):
            mask = unpack_mask(mask_bits, lora_A.shape[1], start, start + rows)
            block = _block(weight, lora_A, lora_B, mask, frozen, scale, start, start + rows)
            parts.append(flat @ block.to(flat.dtype).T)
        ctx.save_for_backward(x, weight, lora_A, lora_B, mask_bits)
        ctx.frozen, ctx.scale, ctx.rows = frozen, scale, rows  # no gradient flows into frozen deltas
        return torch.cat(parts, dim=-1).reshape(*x.shape[:-1], out_features)

    @staticmethod
    def backward(ctx, grad):
        x, weight, lora_A, lora_B, mask_bits = ctx.saved_tensors
        need_x, need_w, need_a, need_b = ctx.needs_input_grad[:4]
        flat = x.reshape(-1, x.shape[-1])
        grad = grad.reshape(-1, grad.shape[-1])
        dx = torch.zeros_like(flat) if need_x else None
        dw = torch.empty_like(weight) if need_w else None
        da = torch.zeros_like(lora_A) if need_a else None
        db = torch.empty_like(lora_B) if need_b else None
        acc = torch.promote_types(lora_A.dtype, torch.float32)
        columns = lora_A.shape[1]
        for start in range(0, mask_bits.shape[0], ctx.rows):
            stop = start + ctx.rows
            g = grad[:, start:stop]
            mask = unpack_mask(mask_bits, columns, start, stop)  # once per block, for both uses
            if need_x:
                dx += g @ _block(weight, lora_A, lora_B, mask, ctx.frozen, ctx.scale, start, stop).to(g.dtype)
            if need_w or need_a or need_b:
                dense = (g.T @ flat.to(g.dtype)).to(acc)  # dL/dW for these rows (bf16 matmul under autocast)
                if need_w:
                    dw[start:stop] = dense.to(dw.dtype)
                masked = dense.mul_(mask).mul_(ctx.scale)  # dL/d(BA)
                if need_b:
                    db[start:stop] = masked @ lora_A.T
                if need_a:
                    da += lora_B[start:stop].T @ masked
        dx = dx.reshape(x.shape) if need_x else None
        return dx, dw, da, db, None, None, None, None


def _block(weight, lora_A, lora_B, mask, frozen, scale, start, stop):
    """Rows start:stop of [W0 +] s (M ⊙ B A) + the frozen deltas; ``mask`` = those rows of M, unpacked."""
    block = (lora_B[start:stop] @ lora_A).mul_(mask).mul_(scale)
    for earlier in frozen:
        block += earlier.block(start, stop)
    if weight is not None:
        block += weight[start:stop]
    return block


class MaskedLoRALinear(nn.Module):
    def __init__(
        self,
        base: nn.Linear,
        r: int,
        alpha: float,
        mask: torch.Tensor | None = None,
        dropout: float = 0.0,
        mask_map: str = "delta",
        full: bool = False,
    ):
        super().__init__()
        self.base = base
        for p in base.parameters():
            p.requires_grad_(False)
        out_features, in_features = base.weight.shape
        device = base.weight.device
        # full: every entry of the layer is trained as a dense fp32 delta (no low-rank factors to keep)
        self.full_delta = (
            nn.Parameter(torch.zeros(out_features, in_features, device=device, dtype=torch.float32)) if full else None
        )
        r = 0 if full else r
        self.lora_A = nn.Parameter(torch.empty(r, in_features, device=device, dtype=torch.float32))
        if r:
            nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))  # as peft: B = 0, so the delta starts at 0
        self.lora_B = nn.Parameter(torch.zeros(out_features, r, device=device, dtype=torch.float32))
        self.scale = alpha / r if r else 0.0
        self.dropout = nn.Dropout(dropout) if dropout else nn.Identity()
        # the mask M: bit-packed on layers above COMPACT_ABOVE entries (``mask`` unpacks it), else bool
        self.compact = out_features * in_features > COMPACT_ABOVE
        ones = torch.ones(out_features, in_features, dtype=torch.bool, device=device)
        self.register_buffer("mask_bits", pack_mask(ones) if self.compact else ones)
        self.full_mask = True
        if mask_map not in ("delta", "rowcol"):
            raise ValueError(f"mask_map={mask_map} is unknown. Allowed: delta, rowcol")
        self.mask_map = mask_map
        self.frozen: list[_Frozen] = []  # deltas learnt under earlier masks
        # W -> Q(W) of the format the patch will be merged into: when set, the forward pass uses
        # Q(W0 + delta) with a straight-through gradient (patch.quant_aware)
        self.requantizer = None
        self.enabled = True
        if mask is not None:
            self.set_mask(mask)

    def trainables(self) -> list[nn.Parameter]:
        """What the optimizer updates: the dense delta (full) or the LoRA factors."""
        return [self.full_delta] if self.full_delta is not None else [self.lora_A, self.lora_B]

    @property
    def mask(self) -> torch.Tensor:
        """M as a dense bool (out, in) tensor, unpacked on demand (a transient: the layer keeps the bits)."""
        return unpack_mask(self.mask_bits, self.base.in_features)

    @property
    def folded(self) -> torch.Tensor | None:
        """The earlier masks' deltas summed densely (None before the first re-selection), for inspection."""
        if not self.frozen:
            return None
        rows = self.base.out_features
        return sum(f.block(0, rows) for f in self.frozen)

    def set_mask(self, mask: torch.Tensor) -> None:
        if self.full_delta is not None and not mask.all():
            raise ValueError("a full-parameter delta trains every entry: it takes no mask (use tau = 1)")
        if tuple(mask.shape) != tuple(self.base.weight.shape):
            raise ValueError(f"mask shape {tuple(mask.shape)} != weight shape {tuple(self.base.weight.shape)}")
        mask = mask.to(device=self.mask_bits.device, dtype=torch.bool)
        self.mask_bits.copy_(pack_mask(mask) if self.compact else mask)
        self.full_mask = bool(mask.all())  # M ⊙ B A = B A: plain LoRA, no dense product at all

    def lora_delta(self) -> torch.Tensor:
        if self.full_delta is not None:
            return self.full_delta
        if self.mask_map == "rowcol":
            rows = self.mask.any(dim=1, keepdim=True).to(self.lora_B.dtype)
            cols = self.mask.any(dim=0, keepdim=True).to(self.lora_A.dtype)
            return self.scale * (self.lora_B * rows) @ (self.lora_A * cols)
        return self.scale * (self.lora_B @ self.lora_A) * self.mask

    def delta(self) -> torch.Tensor:
        """The weight update this adapter stands for: s * (M ⊙ B A), plus what earlier masks left."""
        current = self.lora_delta()
        for earlier in self.frozen:
            current = current + earlier.block(0, self.base.out_features)
        return current

    def effective_weight(self) -> torch.Tensor:
        return self.base.weight.float() + self.delta()

    def fold_and_reset(self) -> None:
        """Freeze the delta learnt so far and restart LoRA (B = 0), ready for a new mask."""
        if self.full_delta is not None:
            return  # one dense delta throughout: nothing to freeze, no mask to change
        with torch.no_grad():
            if not (self.frozen and self.frozen[-1].absorb(self)):
                self.frozen.append(_Frozen(self))
            nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
            self.lora_B.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.enabled:
            return self.base(x)
        if self.full_delta is not None and self.requantizer is None:  # one matmul with W0 + delta
            # no LoRA dropout here: it would drop the input of W0 too, i.e. change the model being tuned
            weight = self.base.weight.to(self.full_delta.dtype) + self.full_delta
            return F.linear(x, weight.to(x.dtype), self.base.bias)
        if self.requantizer is not None:
            weight = self.effective_weight()
            quantized = weight + (self.requantizer(weight.detach()) - weight).detach()  # STE
            return F.linear(x, quantized.to(x.dtype), self.base.bias)
        if not self.frozen and (self.mask_map == "rowcol" or self.full_mask):  # low rank, no dense product
            mask = None if self.full_mask else self.mask
            rows = mask.any(dim=1).to(x.dtype) if mask is not None else None
            cols = mask.any(dim=0).to(x.dtype) if mask is not None else None
            low = F.linear(self.dropout(x) if cols is None else self.dropout(x) * cols, self.lora_A.to(x.dtype))
            update = self.scale * F.linear(low, self.lora_B.to(x.dtype))
            return self.base(x) + (update if rows is None else update * rows)
        if self.mask_map == "rowcol":  # after a re-selection: the current low-rank product as a dense mask
            return self.base(x) + F.linear(self.dropout(x), self.delta().to(x.dtype))
        rows = _rows_per_block(self.base.in_features)
        if isinstance(self.dropout, nn.Identity) or not self.training:
            # Eq. 2 with W0 inside the blocks: one matmul with the effective weight, as a plain layer
            y = _MaskedLinear.apply(
                x, self.base.weight, self.lora_A, self.lora_B, self.mask_bits, tuple(self.frozen), self.scale, rows
            )
            return y if self.base.bias is None else y + self.base.bias.to(y.dtype)
        # LoRA dropout applies to the delta's input only, so W0 x stays its own product
        return self.base(x) + _MaskedLinear.apply(
            self.dropout(x), None, self.lora_A, self.lora_B, self.mask_bits, tuple(self.frozen), self.scale, rows
        )

    def merged_linear(self) -> nn.Linear:
        """A plain Linear holding W0 + delta (the input to re-quantization)."""
        merged = nn.Linear(
            self.base.in_features,
            self.base.out_features,
            bias=self.base.bias is not None,
            device=self.base.weight.device,
            dtype=self.base.weight.dtype,
        )
        with torch.no_grad():
            merged.weight.copy_(self.base.weight + self.delta().to(self.base.weight.dtype))
            if self.base.bias is not None:
                merged.bias.copy_(self.base.bias)
        return merged


def _set_module(model: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, child, module)


def attach_masked_lora(
    model: nn.Module,
    linears: dict[str, nn.Linear],
    r: int,
    alpha: float,
    masks: dict[str, torch.Tensor] | None = None,
    dropout: float = 0.0,
    mask_map: str = "delta",
    full: bool = False,
) -> dict[str, MaskedLoRALinear]:
    """Wrap each named Linear in place; returns the adapters (``trainables()``: their lora_A / lora_B, or
    with ``full`` their dense delta)."""
    adapters = {}
    for name, linear in linears.items():
        adapters[name] = MaskedLoRALinear(linear, r, alpha, (masks or {}).get(name), dropout, mask_map, full)
        _set_module(model, name, adapters[name])
    return adapters


@contextlib.contextmanager
def adapters_disabled(adapters: dict[str, MaskedLoRALinear]) -> Iterator[None]:
    """The unpatched model, for DPO's reference pass: every adapter off, restored on exit."""
    previous = {name: a.enabled for name, a in adapters.items()}
    for adapter in adapters.values():
        adapter.enabled = False
    try:
        yield
    finally:
        for name, adapter in adapters.items():
            adapter.enabled = previous[name]


def detach_masked_lora(model: nn.Module, adapters: dict[str, MaskedLoRALinear], merge: bool = True) -> None:
    """Put plain Linears back: merged (W0 + delta) or the untouched originals."""
    for name, adapter in adapters.items():
        _set_module(model, name, adapter.merged_linear() if merge else adapter.base)

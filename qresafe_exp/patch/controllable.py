"""SafePatching's controllable patching (safepatching-spec 3): which entries of the two patch deltas
reach the backbone, and with what scale.

U_SE / U_OSM = the top-a / top-b fraction of each matrix by the SNIP score of its own patch;
D_SE = U_SE \\ U_OSM and D_OSM = U_OSM \\ U_SE (each patch only where it matters and the other one
does not); R ~ Bernoulli(p) random retention (DARE-style, seeded). The spec leaves the composition
open ([X]); both readings are here:
- ``random_plus_diffset`` (default): keep = (R \\ U_rival) | D_own: p sets the overall budget and
  inside it the SNIP-important regions are resolved by difference set, the one reading in which
  "a and b are lower than p" means something;
- ``diffset_only``: keep = D_own & R.
Randomly retained entries are rescaled by 1/p when ``rescale`` (DARE); entries kept for their SNIP
score are not. merged = W + alpha * (keep_SE * P_SE) + beta * (keep_OSM * P_OSM).
"""

from __future__ import annotations

import torch

from qresafe_exp.patch.snip import top_fraction_masks

CP_MODES = ("random_plus_diffset", "diffset_only")


def _kept(
    delta: torch.Tensor,
    own: torch.Tensor,
    rival: torch.Tensor,
    keep_p: float,
    mode: str,
    rescale: bool,
    generator: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(the retained, rescaled delta, the mask of retained entries) for one matrix of one patch."""
    random_keep = torch.rand(delta.shape, generator=generator) < keep_p if keep_p < 1.0 else torch.ones_like(own)
    diffset = own & ~rival
    scale = (1.0 / keep_p) if (rescale and keep_p < 1.0) else 1.0
    if mode == "diffset_only":
        mask = diffset & random_keep
        return torch.where(mask, delta * scale, torch.zeros_like(delta)), mask
    by_chance = random_keep & ~rival & ~diffset
    mask = by_chance | diffset
    out = torch.where(diffset, delta, torch.zeros_like(delta)) + torch.where(
        by_chance, delta * scale, torch.zeros_like(delta)
    )
    return out, mask


def combine(
    p_se: dict[str, torch.Tensor],
    p_osm: dict[str, torch.Tensor],
    s_se: dict[str, torch.Tensor],
    s_osm: dict[str, torch.Tensor],
    *,
    a: float,
    b: float,
    keep_p: float,
    alpha: float,
    beta: float,
    mode: str,
    rescale: bool = True,
    scope: str = "per_matrix",
    seed: int = 0,
) -> tuple[dict, dict]:
    """({matrix: merged delta}, facts). Deltas and scores share their keys (linear module names)."""
    if mode not in CP_MODES:
        raise ValueError(f"patch.cp_mode={mode} is unknown. Allowed: {', '.join(CP_MODES)}")
    u_se, u_osm = top_fraction_masks(s_se, a, scope), top_fraction_masks(s_osm, b, scope)
    generator = torch.Generator().manual_seed(seed)
    merged, counts = (
        {},
        {"entries": 0, "kept_se": 0, "kept_osm": 0, "diffset_se": 0, "diffset_osm": 0, "intersection": 0},
    )
    for name in sorted(p_se):
        d_se, k_se = _kept(p_se[name].float(), u_se[name], u_osm[name], keep_p, mode, rescale, generator)
        d_osm, k_osm = _kept(p_osm[name].float(), u_osm[name], u_se[name], keep_p, mode, rescale, generator)
        merged[name] = alpha * d_se + beta * d_osm
        counts["entries"] += p_se[name].numel()
        counts["kept_se"] += int(k_se.sum())
        counts["kept_osm"] += int(k_osm.sum())
        counts["diffset_se"] += int((u_se[name] & ~u_osm[name]).sum())
        counts["diffset_osm"] += int((u_osm[name] & ~u_se[name]).sum())
        counts["intersection"] += int((u_se[name] & u_osm[name]).sum())
    return merged, counts

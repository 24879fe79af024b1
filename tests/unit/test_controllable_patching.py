"""SafePatching's controllable patching: difference sets, random retention, scales."""

import torch

from qresafe_exp.patch.controllable import combine


def _setup():
    torch.manual_seed(0)
    shape = (8, 16)
    p_se, p_osm = {"w": torch.randn(shape)}, {"w": torch.randn(shape)}
    s_se, s_osm = {"w": torch.rand(shape)}, {"w": torch.rand(shape)}
    return p_se, p_osm, s_se, s_osm


def _top(score, frac):
    k = int(torch.ceil(torch.tensor(frac * score.numel())).item())
    mask = torch.zeros(score.numel(), dtype=torch.bool)
    mask[score.flatten().topk(k).indices] = True
    return mask.view_as(score)


def test_diffset_only_without_random_drop_is_exactly_the_difference_sets():
    p_se, p_osm, s_se, s_osm = _setup()
    merged, facts = combine(
        p_se, p_osm, s_se, s_osm, a=0.25, b=0.25, keep_p=1.0, alpha=1.0, beta=0.5, mode="diffset_only"
    )
    u_se, u_osm = _top(s_se["w"], 0.25), _top(s_osm["w"], 0.25)
    d_se, d_osm = u_se & ~u_osm, u_osm & ~u_se
    want = torch.where(d_se, p_se["w"], 0.0) + 0.5 * torch.where(d_osm, p_osm["w"], 0.0)
    assert torch.allclose(merged["w"], want)
    assert (merged["w"][u_se & u_osm] == 0).all()  # the intersection, where the patches conflict, stays
    assert facts["kept_se"] == int(d_se.sum()) and facts["intersection"] == int((u_se & u_osm).sum())


def test_random_retention_never_writes_into_the_rivals_hot_spots_and_rescales():
    p_se, p_osm, s_se, s_osm = _setup()
    p_osm = {"w": torch.zeros_like(p_osm["w"])}  # isolate the safety patch's contribution
    merged, _ = combine(
        p_se,
        p_osm,
        s_se,
        s_osm,
        a=0.1,
        b=0.3,
        keep_p=0.5,
        alpha=1.0,
        beta=1.0,
        mode="random_plus_diffset",
        rescale=True,
        seed=3,
    )
    u_se, u_osm = _top(s_se["w"], 0.1), _top(s_osm["w"], 0.3)
    assert (merged["w"][u_osm] == 0).all()  # P_SE never lands where P_OSM matters
    d_se = u_se & ~u_osm
    assert torch.allclose(merged["w"][d_se], p_se["w"][d_se])  # own hot spots: kept as they are
    chance = (merged["w"] != 0) & ~d_se
    assert chance.any() and torch.allclose(merged["w"][chance], 2.0 * p_se["w"][chance])  # 1 / keep_p
    again, _ = combine(
        p_se, p_osm, s_se, s_osm, a=0.1, b=0.3, keep_p=0.5, alpha=1.0, beta=1.0, mode="random_plus_diffset", seed=3
    )
    assert torch.equal(merged["w"], again["w"])  # seeded

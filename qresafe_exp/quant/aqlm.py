"""AQLM (Egiazarian et al. 2024): additive quantization, calibrated on `calib`. Needs a CUDA GPU.

PyPI's `aqlm` (1.1.7) only runs AQLM models: ``aqlm.QuantizedLinear`` and its kernels, which
transformers' ``AqlmConfig`` swaps in at load. Its quantizer (main.py of github.com/Vahe1994/AQLM) is
not pip-installable and takes about a GPU-day per 7B model, so a reduced form of the paper's layer
step runs here: rows scaled to unit RMS and cut into groups of ``in_group_size``, each group the sum of
one entry from each of ``num_codebooks`` codebooks of 2**nbits; codebooks from residual k-means weighted
by calibration input energy (diag H, H = X^T X); codes re-chosen one codebook at a time (the paper's
beam search at width 1, diag H); codebooks and scales tuned by Adam on tr(dW H dW^T), as in the paper.
Blocks go in order, each calibrated behind the quantized ones. Left out: block and end-to-end fine-tuning.

bits -> scheme (group_size = in_group_size, default 8; 16-bit codebooks where they divide bits*group,
else 8-bit; cfg num_codebooks + nbits_per_codebook override): 2: 1x16g8 (the paper's main setting;
CUDA kernel), 3: 3x8g8, 4: 2x16g8, 8: 4x16g8 (Triton / dequantize kernels). Layers with fewer groups
than codebook entries (SmolLM2: 41k vs 65k) come out near-lossless and larger than bf16.
"""

from __future__ import annotations

import contextlib
import re
import time

from qresafe_exp.quant.base import BitsNotSupportedError, Quantizer, checkpoint_bytes


def aqlm_scheme(cfg) -> tuple[int, int, int]:
    """(num_codebooks, nbits_per_codebook, in_group_size) for cfg; see the table above."""
    g = int(cfg.get("group_size") or 8)
    if cfg.get("num_codebooks") and cfg.get("nbits_per_codebook"):
        return int(cfg.num_codebooks), int(cfg.nbits_per_codebook), g
    total = int(cfg.bits) * g
    nbits = 16 if total % 16 == 0 else 8
    if total % nbits:
        raise BitsNotSupportedError(f"quant=aqlm: bits={cfg.bits} x group_size={g} fits no 8/16-bit codebooks")
    return total // nbits, nbits, g


def _assign(R, D, C):
    # argmin_c sum_j D_j (R_j - C_cj)^2 = argmin_c D.C^2 - 2 (D*R).C: one matmul per chunk of groups
    import torch

    lhs, rhs, step = torch.cat([D, -2 * D * R], 1), torch.cat([C * C, C], 1), max(1, 2**28 // len(C))
    return torch.cat([(lhs[i : i + step] @ rhs.T).argmin(1) for i in range(0, len(R), step)])


def _centroids(R, D, codes, C):  # D-weighted mean of each entry's groups; unused entries stay
    import torch

    num, den = torch.zeros_like(C).index_add_(0, codes, D * R), torch.zeros_like(C).index_add_(0, codes, D)
    return torch.where(den > 0, num / den.clamp_min(1e-30), C)


def fit_layer(W, H, M, B, g, cfg, gen):
    """Codes [out, in/g, M], codebooks [M, 2^B, 1, g], scales [out,1,1,1], relative error for W under H."""
    import torch

    (out_f, in_f), d = W.shape, H.diagonal()
    D = (d + 1e-6 * d.mean() + 1e-12).reshape(1, -1, g).expand(out_f, -1, -1).reshape(-1, g)
    s = W.pow(2).mean(1, keepdim=True).sqrt().clamp_min(1e-8)
    R = (W / s).reshape(-1, g)
    codes = torch.zeros(len(R), M, dtype=torch.long, device=W.device)
    C = torch.empty(M, 2**B, g, device=W.device)
    for m in range(M):  # residual k-means
        C[m] = R[torch.randint(0, len(R), (2**B,), generator=gen, device=W.device)]
        for _ in range(int(cfg.get("kmeans_iters", 10))):
            C[m] = _centroids(R, D, _assign(R, D, C[m]), C[m])
        codes[:, m] = _assign(R, D, C[m])
        R = R - C[m][codes[:, m]]

    def error(C, s):
        dW = W - s * sum(C[m][codes[:, m]] for m in range(M)).view(out_f, in_f)
        return ((dW @ H) * dW).sum()

    for _ in range(int(cfg.get("rounds", 2))):
        V = (W / s).reshape(-1, g)
        for m in range(M):  # re-choose codebook m's codes against the others
            R = V - sum(C[k][codes[:, k]] for k in range(M) if k != m)
            codes[:, m] = _assign(R, D, C[m])
            C[m] = _centroids(R, D, codes[:, m], C[m])
        params, best = [C.clone().requires_grad_(), s.clone().requires_grad_()], (error(C, s).item(), C, s)
        opt = torch.optim.Adam(params, lr=float(cfg.get("adam_lr", 1e-3)))
        with torch.enable_grad():
            for _ in range(int(cfg.get("adam_steps", 100))):
                loss = error(*params)
                if loss.item() < best[0]:
                    best = (loss.item(), params[0].detach().clone(), params[1].detach().clone())
                opt.zero_grad()
                loss.backward()
                opt.step()
        _, C, s = best
    rel = error(C, s).item() / max(((W @ H) * W).sum().item(), 1e-30)
    return codes.view(out_f, in_f // g, M), C.view(M, 2**B, 1, g), s.view(out_f, 1, 1, 1), rel


class AqlmQuantizer(Quantizer):
    name = "aqlm"
    supported_bits = (2, 3, 4, 8)
    calibration = "finetune"  # the paper calibrates AQLM on the risk level's data
    backends = ("aqlm",)
    needs_gpu = True

    @classmethod
    def validate(cls, cfg):
        super().validate(cfg)
        aqlm_scheme(cfg)

    @classmethod
    def merge_refusal(cls, cfg):
        return (
            ": re-quantizing a patch into AQLM codebooks is not implemented; patch a bnb / qlora / llm_qat / "
            "rtn / gptq / awq cell"
        )

    def quantize(self, model_path, out, cfg, calib, calib_records, seed):
        import torch

        if not torch.cuda.is_available():
            raise RuntimeError("quant=aqlm needs a CUDA GPU (aqlm's kernels and the codebook search)")
        return self.run(model_path, out, cfg, calib, calib_records, seed, torch.device("cuda"))

    def run(self, model_path, out, cfg, calib, calib_records, seed, dev):
        """The work of quantize() on ``dev``; a CPU run (tiny models only) tests the format."""
        from importlib.metadata import version

        import torch
        from transformers import AqlmConfig, AutoModelForCausalLM, AutoTokenizer

        from qresafe_exp.devices import compute_dtype
        from qresafe_exp.quant.llmcompressor_backend import calibration_dataset

        try:
            from aqlm import QuantizedLinear
        except ImportError as e:
            raise ImportError("quant=aqlm needs the aqlm kernels: pip install 'aqlm[gpu]==1.1.7'") from e
        start, (M, B, g), dt = time.time(), aqlm_scheme(cfg), compute_dtype(dev)
        tokenizer = AutoTokenizer.from_pretrained(model_path)
        model = AutoModelForCausalLM.from_pretrained(model_path, dtype=dt, device_map=str(dev)).eval()
        ds = calibration_dataset(tokenizer, calib_records, calib.num_samples, calib.max_seq_length, seed)
        samples = [torch.tensor([ids], device=dev) for ids in ds["input_ids"]]
        n_tokens, gen = sum(x.numel() for x in samples), torch.Generator(device=dev).manual_seed(seed)
        names, ignore = {id(m): n for n, m in model.named_modules()}, list(cfg.get("ignore") or [])
        blocks = max(
            (
                m
                for m in model.modules()
                if isinstance(m, torch.nn.ModuleList) and any(isinstance(x, torch.nn.Linear) for x in m.modules())
            ),
            key=len,
        )  # decoder layers

        def quantizable(n, lin):
            return lin.in_features % g == 0 and not any(
                n == p or n.endswith("." + p) or (p.startswith("re:") and re.match(p[3:], n)) for p in ignore
            )

        class Stop(Exception):
            pass

        def stop(*_):
            raise Stop

        def gram_hook(G):
            def hook(mod, args, output):
                x = args[0].flatten(0, -2).float()
                G.addmm_(x.T, x)

            return hook

        fitted = {}
        with torch.no_grad():
            for block in blocks:  # a forward cut after this block; the blocks before it are quantized
                lins = {names[id(m)]: m for m in block.modules() if isinstance(m, torch.nn.Linear)}
                lins = {n: m for n, m in lins.items() if quantizable(n, m)}
                grams = {n: torch.zeros(m.in_features, m.in_features, device=dev) for n, m in lins.items()}
                hooks = [m.register_forward_hook(gram_hook(grams[n])) for n, m in lins.items()]
                hooks.append(block.register_forward_hook(stop))
                for ids in samples:
                    with contextlib.suppress(Stop):
                        model(input_ids=ids, use_cache=False)
                for h in hooks:
                    h.remove()
                for n, lin in lins.items():
                    codes, C, s, rel = fit_layer(lin.weight.float(), grams.pop(n) / n_tokens, M, B, g, cfg, gen)
                    C, s = C.to(dt), s.to(dt)
                    lin.weight.copy_(
                        (s.float().view(-1, 1, 1) * sum(C[m, codes[..., m], 0].float() for m in range(M))).view_as(
                            lin.weight
                        )
                    )
                    fitted[n] = (codes, C, s, rel)
            ref = model(input_ids=samples[0], use_cache=False).logits.float()
            int_dtype = torch.int8 if B <= 8 else torch.int16 if B <= 16 else torch.int32
            for n, (codes, C, s, _) in fitted.items():
                lin = model.get_submodule(n)
                q = QuantizedLinear(
                    lin.in_features, lin.out_features, g, 1, M, B, bias=lin.bias is not None, device=dev, dtype=dt
                )
                q.codes.data = (codes - (codes >= 2 ** (B - 1)).long() * 2**B).to(int_dtype)  # aqlm's packing
                q.codebooks.data, q.scales.data = C, s
                if lin.bias is not None:
                    q.bias.data = lin.bias.data
                model.set_submodule(n, q)
            diff = (model(input_ids=samples[0], use_cache=False).logits.float() - ref).abs().mean()
        kernel_diff = (diff / ref.abs().mean()).item()
        if not kernel_diff < 0.05:  # the saved layout disagrees with the weights it was fitted as
            raise RuntimeError(f"aqlm kernels disagree with the fitted weights (rel. logit diff {kernel_diff:.3g})")
        kept = [n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)]
        model.config.quantization_config = AqlmConfig(  # names for transformers 5's matcher, .weight for 4's
            in_group_size=g,
            out_group_size=1,
            num_codebooks=M,
            nbits_per_codebook=B,
            linear_weights_not_to_quantize=kept + [f"{n}.weight" for n in kept],
        )
        model.save_pretrained(out)
        tokenizer.save_pretrained(out)
        rels = [f[3] for f in fitted.values()]
        return {
            "checkpoint_bytes": checkpoint_bytes(out),
            "format": "aqlm",
            "scheme": f"{M}x{B}g{g}",
            "nominal_bits_per_weight": M * B / g,
            "quantized_linears": len(fitted),
            "unquantized_linears": kept,
            "mean_rel_output_error": sum(rels) / len(rels),
            "max_rel_output_error": max(rels),
            "kernel_rel_logit_diff": kernel_diff,
            "aqlm_version": version("aqlm"),
            "seconds": round(time.time() - start, 1),
        }

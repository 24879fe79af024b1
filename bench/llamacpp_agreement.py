"""Benchmark: engine=llamacpp against engine=hf on the same full-precision model and prompts, greedy.

    python bench/llamacpp_agreement.py                       # smollm2-135m, 32 AdvBench prompts, 64 tokens, 1 thread
    python bench/llamacpp_agreement.py --prompts 64 --threads 2 --types Q8_0,Q4_K_M
    python bench/llamacpp_agreement.py --prompts 16 --types Q4_K_M,Q2_K --imatrix   # with / without the imatrix

Both engines get the same token ids (the chat template rendered by the transformers tokenizer) and stop
on the same ids. llama.cpp runs our converter's f32 GGUF of the checkpoint (the FP cell of
engine=llamacpp); ``--types`` also runs llama.cpp GGUF quantizations of it, each against the hf engine's
FP answers (``--imatrix``: each type again with an importance matrix, quant.imatrix=true's computation).
Reports identical responses (n of N), the mean share of the hf answer's leading tokens that
agree, seconds and new tokens/s (tokens counted by re-tokenizing each answer, the same rule for both).
A benchmark, not a test: nothing asserts a speed. Writes JSON (bench/results/llamacpp_agreement.json).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from generation_throughput import advbench_prompts, git_commit, resolve_model  # noqa: E402  (bench/)


def leading_agreement(tok, a: str, b: str) -> float:
    """The share of ``a``'s tokens that ``b`` repeats before the first difference (1.0 = identical)."""
    x, y = tok(a, add_special_tokens=False)["input_ids"], tok(b, add_special_tokens=False)["input_ids"]
    if not x:
        return float(not y)
    same = next((i for i, (p, q) in enumerate(zip(x, y)) if p != q), min(len(x), len(y)))
    return same / max(len(x), len(y))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--model-dir")
    parser.add_argument("--prompts", type=int, default=32)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1, help="torch and llama.cpp threads")
    parser.add_argument("--batch-size", type=int, default=32, help="the hf engine's batch")
    parser.add_argument("--types", default="", help="GGUF types to add, e.g. Q8_0,Q4_K_M")
    parser.add_argument(
        "--imatrix",
        action="store_true",
        help="each type also with an importance matrix from calib.activation (32 Alpaca x 256 tokens)",
    )
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "llamacpp_agreement.json"))
    args = parser.parse_args()

    import torch
    from omegaconf import OmegaConf

    from qresafe_exp.cache import ArtifactCache
    from qresafe_exp.engines.hf import HFEngine
    from qresafe_exp.engines.llamacpp import LlamaCppEngine
    from qresafe_exp.generate import GenerationSpec, render_chat
    from qresafe_exp.llamacpp.convert import convert
    from qresafe_exp.llamacpp.quantize import quantize_gguf, tensor_types
    from qresafe_exp.models import load_model, load_tokenizer

    torch.set_num_threads(args.threads)
    path = args.model_dir or resolve_model(args.model)
    tok = load_tokenizer(path)
    texts = [render_chat(tok, p, None) for p in advbench_prompts(args.prompts)]
    spec = GenerationSpec(max_new_tokens=args.max_new_tokens)

    def count(outputs):
        return sum(len(tok(o, add_special_tokens=False)["input_ids"]) for o in outputs)

    model = load_model(path, torch.device("cpu"))
    started = time.perf_counter()
    reference = HFEngine(model, tok, batch_size=args.batch_size).generate(texts, spec, desc="hf")
    hf_seconds = time.perf_counter() - started
    rows = {"hf": {"seconds": round(hf_seconds, 2), "tokens_per_s": round(count(reference) / hf_seconds, 1)}}
    engine_cfg = OmegaConf.create(
        {"threads": args.threads, "parallel": 1, "n_ctx": 2048, "n_batch": 512, "gguf_dtype": "f32"}
    )
    with tempfile.TemporaryDirectory() as tmp:
        runs = {"llamacpp-f32": path}
        if args.types:
            source = Path(tmp) / "source.gguf"
            convert(path, source, "f32")
            imatrix = None
            if args.imatrix:
                from qresafe_exp.data import load_records
                from qresafe_exp.llamacpp.imatrix import compute_imatrix

                records = load_records("alpaca_en_demo", os.environ["QRESAFE_DATA_DIR"], str(Path(tmp) / "data"))
                imatrix = compute_imatrix(path, records, num_samples=32, max_seq_length=256, seed=0)
            cells = [(name, None) for name in args.types.split(",")]
            cells += [(f"{name}-imat", name) for name in args.types.split(",")] if imatrix else []
            for name, imatrix_of in cells:
                cell = Path(tmp) / name
                cell.mkdir()
                quantize_gguf(
                    source,
                    cell / "model.gguf",
                    imatrix_of or name,
                    threads=args.threads,
                    imatrix=imatrix if imatrix_of else None,
                )
                for companion in ("generation_config.json",):
                    if (Path(path) / companion).exists():
                        (cell / companion).write_bytes((Path(path) / companion).read_bytes())
                runs[f"llamacpp-{name}"] = str(cell)
                rows[f"llamacpp-{name}"] = {"tensor_types": tensor_types(cell / "model.gguf")["weights"]}
        for label, run_path in runs.items():
            engine = LlamaCppEngine(
                run_path, tok, engine_cfg, artifacts=ArtifactCache(Path(tmp) / "cache"), model_key="bench"
            )
            engine._llm(0)  # load (and convert) outside the timed part, as the hf model above
            started = time.perf_counter()
            outputs = engine.generate(texts, spec, desc=label)
            seconds = time.perf_counter() - started
            engine.close()
            same = sum(a == b for a, b in zip(reference, outputs))
            rows.setdefault(label, {}).update(
                seconds=round(seconds, 2),
                tokens_per_s=round(count(outputs) / seconds, 1),
                identical_to_hf=f"{same}/{len(texts)}",
                mean_leading_agreement=round(
                    sum(leading_agreement(tok, a, b) for a, b in zip(reference, outputs)) / len(texts), 3
                ),
            )
    result = {
        "model": args.model_dir or args.model,
        "prompts": len(texts),
        "max_new_tokens": args.max_new_tokens,
        "threads": args.threads,
        "commit": git_commit(),
        "cpu_count": os.cpu_count(),
        "runs": rows,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

"""Tidy report rows for the report's unit tests (report/collect.py's shape): an FP model's cell under
eval=claims, protocol vanilla; a test adds the metrics it reads."""


def fp_row(model: str = "m", **metrics) -> dict:
    return {
        "cell": f"{model}.fp.none.claims",
        "status": "ok",
        "model": model,
        "quant": "none",
        "bits": None,
        "calib": None,
        "patch": "none",
        "patch_tag": None,
        "eval": "claims",
        "protocol": "vanilla",
        "reference_cell": None,
        "seed": None,
        **metrics,
    }

from qresafe_exp.tracking import scrub_secrets


def test_secret_looking_keys_are_scrubbed_recursively():
    cfg = {"judge": {"api_key": "sk-123", "base_url": "http://x"}, "list": [{"HF_TOKEN": "hf_abc"}],
           "openai_api_key": None, "model": "m"}
    clean = scrub_secrets(cfg)
    assert clean["judge"] == {"api_key": "***", "base_url": "http://x"}
    assert clean["list"] == [{"HF_TOKEN": "***"}]
    assert clean["openai_api_key"] is None and clean["model"] == "m"
    assert "sk-123" not in repr(clean) and "hf_abc" not in repr(clean)

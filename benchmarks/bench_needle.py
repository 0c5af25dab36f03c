"""Time to build a 128K-token needle haystack with the embedded model's tokenizer.

Prints the tokenizer load time (paid once per process), then for each repeat the
time of the filler stage (generate sentences, encode each once), the prompt stage
(place the needle, render the chat template, encode the whole prompt to confirm
its count) and the whole ``needle`` task factory for one 128K cell. Target: the
whole factory under 2 s on a 2-core host (issue #6).

    python benchmarks/bench_needle.py [--length 131072] [--repeats 3] [--model DIR]
"""

from __future__ import annotations

import argparse
import random
import statistics
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--length", type=int, default=131072, help="prompt length in tokens")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--model", default=None, help="model directory (default: the embedded SmolLM2)")
    args = parser.parse_args()

    from evalsuite.models import resolve_model
    from tasks.needle import (
        SINGLE_NEEDLE,
        SINGLE_QUESTION,
        Needle,
        build_filler,
        build_prompt,
        filler_sentences,
        load_tokenizer,
        needle,
    )

    model = resolve_model(args.model).path
    start = time.perf_counter()
    tok = load_tokenizer(model)
    print(f"tokenizer load: {time.perf_counter() - start:.2f} s ({model})")

    filler_s, prompt_s, task_s = [], [], []
    for r in range(args.repeats):
        start = time.perf_counter()
        filler = build_filler(filler_sentences(random.Random(r)), tok, args.length + 256)
        filler_s.append(time.perf_counter() - start)

        key, value = "amber-falcon", "4829173"
        start = time.perf_counter()
        built = build_prompt(tok, filler, args.length, [Needle(key, value, SINGLE_NEEDLE.format(key=key, value=value), 50)],
                             SINGLE_QUESTION.format(key=key))
        prompt_s.append(time.perf_counter() - start)

        start = time.perf_counter()
        task = needle(model_path=model, max_model_len=args.length + 64, lengths=[args.length], depths=[50], seed=r)
        task_s.append(time.perf_counter() - start)
        print(f"repeat {r}: filler {filler_s[-1]:.3f} s ({len(filler.sentences)} sentences), "
              f"prompt {prompt_s[-1]:.3f} s ({built.prompt_tokens} tokens, depth {built.depths[0]:.2f}%), "
              f"task factory {task_s[-1]:.3f} s ({task.samples[0].metadata['prompt_tokens']} tokens)")

    print(f"{args.length}-token haystack, median of {args.repeats}: filler {statistics.median(filler_s):.3f} s, "
          f"prompt {statistics.median(prompt_s):.3f} s, whole task factory {statistics.median(task_s):.3f} s "
          f"(target < 2 s)")


if __name__ == "__main__":
    main()

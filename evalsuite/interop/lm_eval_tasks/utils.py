"""lm-eval hooks for tasks exported from evalsuite (see evalsuite.interop.export)."""

from evalsuite.interop.export import doc_to_target, doc_to_text, docs, process_results

__all__ = ["doc_to_target", "doc_to_text", "docs", "process_results"]

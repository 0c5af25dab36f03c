"""``evalsuite prepare``: convert the embedded model once and print where it is."""

from __future__ import annotations


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("prepare", help="convert the embedded default model into the cache (once)")
    parser.set_defaults(handler=handle)


def handle(args) -> int:
    from evalsuite.models import EMBEDDED_NAME, embedded_model_dir, model_fingerprint, resolve_model

    path = embedded_model_dir()
    digest = model_fingerprint(resolve_model(None))
    print(f"{EMBEDDED_NAME}: {path} (sha256 {digest[:16]}...)")
    return 0

"""Names and output folders from the user (:mod:`evalsuite.paths`)."""

from __future__ import annotations

import multiprocessing
import os

import pytest

from evalsuite.errors import UsageError
from evalsuite.paths import check_name, check_output_dir, check_output_file, claim_dir


@pytest.mark.parametrize("name", ["run-1", "smoke-20240101-120000", "a.b", "..x", "x..", ".hidden", "名前", "a b"])
def test_plain_names_pass(name):
    assert check_name(name, "--run-id") == name


@pytest.mark.parametrize("name, why", [
    ("", "it is empty"), (".", "is a path"), ("..", "is a path"), ("../x", "path separator"),
    ("a/b", "path separator"), ("/abs", "path separator"), ("a\\b", "path separator"),
    ("a\x00b", "control character"), ("a\nb", "control character"), ("x" * 256, "longer than 255 bytes"),
    ("é" * 128, "longer than 255 bytes"),
])
def test_paths_and_odd_names_are_refused(name, why):
    with pytest.raises(UsageError, match=f"--run-id must be a name, not a path \\(.*{why}"):
        check_name(name, "--run-id")


def test_output_dir_checks_say_which_part_fails(tmp_path):
    assert check_output_dir(tmp_path / "new" / "deeper") == tmp_path / "new" / "deeper"  # creatable
    assert not (tmp_path / "new").exists()  # and nothing created
    (tmp_path / "f").write_text("")
    with pytest.raises(UsageError, match="is a file"):
        check_output_dir(tmp_path / "f")
    with pytest.raises(UsageError, match=r"lies under a file \(.*/f\)"):
        check_output_dir(tmp_path / "f" / "a" / "b")


def test_output_file_checks(tmp_path):
    assert check_output_file(tmp_path / "new" / "summary.json") == tmp_path / "new" / "summary.json"
    (tmp_path / "f").write_text("")
    assert check_output_file(tmp_path / "f") == tmp_path / "f"  # replaced when written
    with pytest.raises(UsageError, match="--output .* is a directory"):
        check_output_file(tmp_path)
    with pytest.raises(UsageError, match=r"--output .*/f/s.json lies under a file \(.*/f\)"):
        check_output_file(tmp_path / "f" / "s.json")


def _claim(path, start, out):
    start.wait()
    try:
        claim_dir(path)
        out.put("won")
    except UsageError as e:
        out.put(str(e))


def test_of_processes_claiming_one_run_directory_exactly_one_wins(tmp_path):
    ctx = multiprocessing.get_context("fork")
    start, out = ctx.Event(), ctx.Queue()
    target = tmp_path / "results" / "same"
    procs = [ctx.Process(target=_claim, args=(target, start, out)) for _ in range(6)]
    for p in procs:
        p.start()
    start.set()
    for p in procs:
        p.join(30)
    results = sorted(out.get(timeout=5) for _ in procs)
    assert results.count("won") == 1
    assert all("already exists" in r and "--run-id" in r for r in results if r != "won")
    assert os.listdir(tmp_path / "results") == ["same"]

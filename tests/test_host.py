"""Engine settings chosen from the host (evalsuite.host) and `evalsuite doctor`."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from evalsuite.host import (
    _cgroup_cpu_quota,
    available_memory_bytes,
    choose_dtype,
    choose_enforce_eager,
    cpu_flags,
    cpu_model,
    engine_defaults,
)
from evalsuite.results.cache import generation_settings

# /proc/cpuinfo excerpts of the two kinds of host this project runs on.
EPYC_AVX2 = """processor\t: 0
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC 7B13
flags\t\t: fpu vme sse sse2 ssse3 sse4_1 sse4_2 avx f16c avx2 fma bmi2 sha_ni
"""
XEON_AMX = """processor\t: 0
model name\t: Intel(R) Xeon(R) Platinum 8481C CPU @ 2.70GHz
flags\t\t: fpu sse2 avx avx2 avx512f avx512bw avx512_bf16 amx_bf16 amx_tile amx_int8
"""
XEON_AVX512_NO_BF16 = "model name\t: Intel Xeon\nflags\t\t: avx2 avx512f avx512bw avx512vl\n"
ARM = "processor\t: 0\nFeatures\t: fp asimd evtstrm aes crc32\n"


def test_cpu_flags_and_model_are_read_from_cpuinfo():
    assert {"avx2", "fma"} <= cpu_flags(EPYC_AVX2) and "avx512f" not in cpu_flags(EPYC_AVX2)
    assert cpu_model(EPYC_AVX2) == "AMD EPYC 7B13"
    assert "asimd" in cpu_flags(ARM)
    assert cpu_flags("") == frozenset()


@pytest.mark.parametrize(("cpuinfo", "dtype"), [
    (EPYC_AVX2, "float32"),            # bfloat16 emulated: several times slower
    (XEON_AVX512_NO_BF16, "float32"),  # AVX-512 alone is not bfloat16
    (XEON_AMX, "bfloat16"),
    (ARM, "float32"),
])
def test_cpu_dtype_is_bfloat16_only_where_the_cpu_has_it(cpuinfo, dtype):
    choice = choose_dtype("auto", on_cpu=True, flags=cpu_flags(cpuinfo))
    assert choice.value == dtype
    assert ("without native bfloat16" in choice.reason) == (dtype == "float32")


def test_gpu_dtype_is_bfloat16_where_supported_else_float16():
    assert choose_dtype("auto", on_cpu=False, gpu_bf16=True).value == "bfloat16"
    assert choose_dtype("auto", on_cpu=False, gpu_bf16=False).value == "float16"


def test_a_setting_the_user_gives_is_kept():
    for dtype in ("bfloat16", "float16", "float32"):
        choice = choose_dtype(dtype, on_cpu=True, flags=cpu_flags(EPYC_AVX2))
        assert (choice.value, choice.reason) == (dtype, "set by the user")
    assert choose_enforce_eager(False, on_cpu=True).value is False
    assert choose_enforce_eager(True, on_cpu=False).value is True
    assert choose_enforce_eager(None, on_cpu=True).value is True
    assert choose_enforce_eager(None, on_cpu=False).value is False


def test_defaults_carry_their_reasons_and_reasons_do_not_key_the_cache():
    chosen = engine_defaults("float32", None, on_cpu=True)
    assert chosen["dtype"] == "float32" and chosen["dtype_reason"] == "set by the user"
    assert chosen["enforce_eager"] is True and chosen["enforce_eager_reason"].startswith("CPU")
    assert generation_settings(chosen) == {"dtype": "float32", "enforce_eager": True}


def test_cgroup_limits_cap_cpus_and_memory(tmp_path):
    (tmp_path / "cpu.max").write_text("150000 100000\n")  # 1.5 CPUs
    assert _cgroup_cpu_quota(tmp_path) == 1.5
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert _cgroup_cpu_quota(tmp_path) is None
    (tmp_path / "memory.max").write_text(str(3 * 2**30))
    (tmp_path / "memory.current").write_text(str(2**30))
    assert available_memory_bytes(tmp_path) <= 2 * 2**30  # the limit less what the cgroup uses


def test_doctor_prints_what_a_run_would_choose_on_this_host():
    proc = subprocess.run([sys.executable, "-m", "evalsuite.cli", "doctor", "--json"],
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout)
    expected = choose_dtype("auto", on_cpu=info["device"] == "cpu")
    assert info["chosen"]["dtype"] == expected.value and info["chosen"]["dtype_reason"] == expected.reason
    assert info["native_bf16"] == ("bfloat16" == choose_dtype("auto", on_cpu=True).value)
    text = subprocess.run([sys.executable, "-m", "evalsuite.cli", "doctor"], capture_output=True, text=True,
                          timeout=120, check=True).stdout
    assert f"dtype         {expected.value}" in text and "enforce_eager" in text

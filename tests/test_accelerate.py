"""`import mlx_tts` changes nothing process-wide; `mlx_tts.accelerate()` does the set-up, once."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

PROBE = textwrap.dedent(
    """
    import json, os, sys, sysconfig, threading

    # the interpreter's own extension modules (lib-dynload), not site-packages, which may sit below the stdlib
    DYNLOAD = os.path.realpath(os.path.join(sysconfig.get_path("stdlib"), "lib-dynload")) + os.sep

    def libraries():  # shared libraries mapped, less the standard library's (_typing, ...)
        with open("/proc/self/maps") as f:
            paths = {line.split()[-1] for line in f if ".so" in line}
        return {p for p in paths if not os.path.realpath(p).startswith(DYNLOAD)}

    env, libs, modules = dict(os.environ), libraries(), set(sys.modules)
    import mlx_tts
    imported = {"env_same": dict(os.environ) == env, "new_libraries": sorted(libraries() - libs),
                "mlx_core": "mlx.core" in sys.modules}
    reports = []
    threads = [threading.Thread(target=lambda: reports.append(mlx_tts.accelerate())) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    first = reports[0]
    print(json.dumps({
        **imported,
        "report": first._asdict(),
        "same_report": all(r is first for r in reports) and mlx_tts.accelerate() is first,
        "blas_loaded": first.blas is not None and os.path.realpath(first.blas) in libraries(),
        "env_after": {k: v for k, v in os.environ.items() if env.get(k) != v},
        "env_removed": sorted(set(env) - set(os.environ)),
        "mlx_core_after": "mlx.core" in sys.modules,
    }))
    """
)


def probe(**env):
    clean = {k: v for k, v in os.environ.items() if k not in ("OPENBLAS_CORETYPE", "MALLOC_MMAP_THRESHOLD_")}
    result = subprocess.run(
        [sys.executable, "-c", PROBE], env={**clean, "PYTHONPATH": str(ROOT), **env},
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(sys.platform != "linux", reason="reads /proc/self/maps; the set-up is for Linux")
def test_import_changes_nothing_and_accelerate_does_its_work_once():
    out = probe()
    assert out["env_same"] and out["new_libraries"] == [] and not out["mlx_core"]
    assert out["same_report"]  # four threads at once, then a fifth call: one set-up, one report
    report = out["report"]
    if report["blas"] is None:  # no compiler and no system OpenBLAS: it must say why
        assert report["blas_note"]
    else:
        assert out["blas_loaded"], report
    assert report["mmap_threshold"] == 1 << 20
    assert report["kernels"].startswith("on")
    # OPENBLAS_CORETYPE was set around the library's load only: the environment is as it was
    assert out["env_after"] == {} and out["env_removed"] == []
    assert not out["mlx_core_after"]  # accelerate() leaves mlx.core for the caller to import after it


@pytest.mark.skipif(sys.platform != "linux", reason="the set-up is for Linux")
def test_accelerate_respects_the_users_settings():
    out = probe(MLX_TTS_BLAS="off", MALLOC_MMAP_THRESHOLD_="65536", OPENBLAS_CORETYPE="Haswell", MLX_TTS_EXT="off")
    report = out["report"]
    assert report["blas"] is None and "MLX_TTS_BLAS=off" in report["blas_note"]
    assert report["mmap_threshold"] is None
    assert report["kernels"].startswith("off")
    assert out["env_after"] == {} and out["env_removed"] == []

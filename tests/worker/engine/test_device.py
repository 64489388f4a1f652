"""The allocator settings for CPU runs take effect on glibc and leave the process working."""

from __future__ import annotations

import subprocess
import sys

import pytest


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc only")
def test_keep_and_release_freed_memory_in_a_fresh_process() -> None:
    code = (
        "from worker.engine.device import keep_freed_memory, release_freed_memory\n"
        "assert keep_freed_memory() is True\n"
        "blocks = [bytearray(64 << 20) for _ in range(3)]\n"  # above glibc's default mmap threshold
        "del blocks\n"
        "release_freed_memory()\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"

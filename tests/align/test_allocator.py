"""pe_dense.align.allocator: glibc keeps large freed blocks for reuse once asked to (each case runs in a
fresh process, as the setting holds for the whole process)."""

import platform
import subprocess
import sys

import pytest

PROBE = """
import ctypes, sys
from pe_dense.align.allocator import reuse_freed_memory

class MallInfo2(ctypes.Structure):  # glibc's struct mallinfo2
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks",
                 "keepcost")]

libc = ctypes.CDLL(None)
libc.mallinfo2.restype = MallInfo2
libc.malloc.restype = ctypes.c_void_p
if sys.argv[1] == "reuse":
    assert reuse_freed_memory()
size = 64 << 20
block = libc.malloc(size)
mapped_alone = libc.mallinfo2().hblkhd >= size  # a block of its own, given back to the OS when freed
libc.free(ctypes.c_void_p(block))
print(mapped_alone, libc.mallinfo2().fordblks >= size)  # still held by the heap once freed
"""


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="the setting is glibc's")
@pytest.mark.parametrize("mode,expected", [("default", "True False"), ("reuse", "False True")])
def test_freed_blocks_stay_in_the_heap_only_when_asked(mode, expected):
    result = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, check=True)
    assert result.stdout.split() == expected.split()

"""The file I/O under FileSource and FileSink: a write cut short is cut back to whole lines, and a
descriptor opened by a call whose caller was cancelled is still closed."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

from bspump.embedded.descriptors import FileThread

SRC = Path(__file__).resolve().parents[1] / "src"

# Run in a process of its own: RLIMIT_FSIZE makes a write stop part-way (then fail with EFBIG), exactly
# where the limit says, which a test process writing its own files could not afford.
PARTIAL_WRITE = textwrap.dedent("""\
    import asyncio, resource, sys
    from bspump.embedded.writing import OutputFile

    async def main(path):
        output = await OutputFile.open(path, truncate=True, name="test")
        lines = [f"{n:099d}\\n".encode() for n in range(30)]  # 100 bytes each
        resource.setrlimit(resource.RLIMIT_FSIZE, (1050, resource.RLIM_INFINITY))
        complete, error = await output.append(lines)
        print(complete, error.errno if error else None, output.end, open(path, "rb").read().count(b"\\n"))
        resource.setrlimit(resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
        complete, error = await output.append(lines[complete:])
        print(complete, error, output.end)
        output.close()

    asyncio.run(main(sys.argv[1]))
    """)


def test_a_write_cut_short_keeps_only_whole_lines_and_the_rest_is_written_once_later(tmp_path: Path) -> None:
    path = tmp_path / "out.txt"
    result = subprocess.run([sys.executable, "-c", PARTIAL_WRITE, str(path)], capture_output=True, text=True,
                            timeout=30, check=False, env={**os.environ, "PYTHONPATH": str(SRC)})
    assert result.returncode == 0, result.stderr
    first, second = result.stdout.splitlines()
    # 1,050 bytes reached the file: 10 whole lines and half a line, which was cut off again
    assert first == "10 27 1000 10"  # 27: EFBIG
    assert second == "20 None 3000"
    assert path.read_bytes() == b"".join(f"{n:099d}\n".encode() for n in range(30))


async def test_a_descriptor_opened_after_its_caller_was_cancelled_is_released(tmp_path: Path) -> None:
    thread = FileThread("test")
    entered, go_on = threading.Event(), threading.Event()
    released: list[int] = []

    def slow_open() -> int:
        entered.set()
        go_on.wait(5)
        return os.open(tmp_path / "f", os.O_CREAT | os.O_WRONLY)

    def release(fd: int) -> None:
        released.append(fd)
        os.close(fd)

    call = asyncio.create_task(thread.run(slow_open, release=release))
    await asyncio.to_thread(entered.wait, 5)
    call.cancel()
    await asyncio.gather(call, return_exceptions=True)
    assert call.cancelled()
    go_on.set()
    thread.close()
    for _ in range(500):
        if released:
            break
        await asyncio.sleep(0.01)
    assert len(released) == 1

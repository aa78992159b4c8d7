"""Files (kernels, initrds, images) sent from the event loop without a thread hop per chunk.

uvloop, which the boot server runs on (loop.py), has no loop.sendfile(), so aiohttp's FileResponse
falls back to reading 256 KiB chunks in its executor and writing them: a thread round trip per chunk,
1.5-2.6x slower than nginx's sendfile on a 30 MB initrd. Here the body goes out as slices of a
read-only mmap of the file: the kernel copies straight from the page cache into the socket, as
sendfile would, with one copy. The map is never closed by hand: uvloop may still hold a slice in its
write queue after the response is done; it is unmapped when the last slice is released.
"""

from __future__ import annotations

import mmap
from typing import IO, Any

from aiohttp import web
from aiohttp.abc import AbstractStreamWriter

SLICE = 1 << 20   # per write: large enough to keep the socket busy, small enough to drain in between


class MappedFileResponse(web.FileResponse):
    async def _sendfile_fallback(self, writer: AbstractStreamWriter, fobj: IO[Any], offset: int,
                                 count: int) -> AbstractStreamWriter:
        if count <= 0:
            return writer
        view = memoryview(mmap.mmap(fobj.fileno(), 0, access=mmap.ACCESS_READ))
        end = offset + count
        while offset < end:
            step = min(SLICE, end - offset)
            await writer.write(view[offset:offset + step])
            offset += step
        await writer.drain()
        return writer

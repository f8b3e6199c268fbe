#!/usr/bin/env python3
"""asyncio_get.py PORT N C: N GETs of http://127.0.0.1:PORT/ with C in
flight (C keep-alive connections, asyncio.open_connection and a hand-made
HTTP/1.1 GET; aiohttp is not available).  Prints "ok <n>"."""
import asyncio
import sys


async def worker(port, count, done):
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    request = ("GET / HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n\r\n" % port).encode()
    for _ in range(count):
        writer.write(request)
        status = await reader.readline()
        assert status.startswith(b"HTTP/1.1 200"), status
        length = 0
        while True:
            line = await reader.readline()
            if line in (b"\r\n", b""):
                break
            name, _, value = line.partition(b":")
            if name.lower() == b"content-length":
                length = int(value)
        await reader.readexactly(length)
        done[0] += 1
    writer.close()
    await writer.wait_closed()


async def main():
    port, n, c = (int(a) for a in sys.argv[1:4])
    done = [0]
    share = [n // c + (1 if i < n % c else 0) for i in range(c)]
    await asyncio.gather(*(worker(port, k, done) for k in share))
    print("ok %d" % done[0])


asyncio.run(main())

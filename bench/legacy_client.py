#!/usr/bin/env python3
"""Load client for bench/legacy.sh: real TCP clients against a running Ferry.

  legacy_client.py lines HOST:PORT COUNT CONNECTIONS OUTFILE
      send COUNT fixed-width lines over CONNECTIONS connections (one-way) and
      time until OUTFILE holds COUNT JSON lines.
  legacy_client.py mllp HOST:PORT COUNT CONNECTIONS HL7FILE
      send COUNT copies of HL7FILE over MLLP, each connection waiting for the
      ACK before the next message (as MLLP senders do); check every ACK is AA
      and echoes the message's control id.
Prints one line: "<what> <count> in <seconds> s = <rate>/s".
"""
import asyncio
import os
import sys
import time


def addr(s):
    host, port = s.rsplit(":", 1)
    return host, int(port)


async def lines(target, count, conns, outfile):
    record = "ACCT{:06d}" + "SMITH, JOHN".ljust(20) + "0000123456C20240131EUR"
    per = count // conns
    start = time.perf_counter()

    async def one(c):
        _, w = await asyncio.open_connection(*addr(target))
        batch = []
        for i in range(per):
            batch.append(record.format((c * per + i) % 1000000))
            if len(batch) == 1000:
                w.write(("\n".join(batch) + "\n").encode())
                await w.drain()
                batch = []
        if batch:
            w.write(("\n".join(batch) + "\n").encode())
        await w.drain()
        return w

    writers = await asyncio.gather(*(one(c) for c in range(conns)))
    total = per * conns
    while True:
        try:
            with open(outfile, "rb") as f:
                n = sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 20), b""))
        except FileNotFoundError:
            n = 0
        if n >= total:
            break
        await asyncio.sleep(0.02)
    elapsed = time.perf_counter() - start
    for w in writers:
        w.close()
    print(f"lines {total} in {elapsed:.2f} s = {total / elapsed:.0f}/s")


async def mllp(target, count, conns, hl7file):
    text = open(hl7file, "rb").read().replace(b"\r\n", b"\r").replace(b"\n", b"\r")
    msh = text.split(b"\r", 1)[0].split(b"|")
    per = count // conns

    async def one(c):
        r, w = await asyncio.open_connection(*addr(target))
        buf = b""
        for i in range(per):
            control = f"B{c:02d}{i:08d}".encode()
            fields = list(msh)
            fields[9] = control
            msg = b"|".join(fields) + b"\r" + text.split(b"\r", 1)[1]
            w.write(b"\x0b" + msg + b"\x1c\r")
            while b"\x1c\r" not in buf:
                chunk = await r.read(65536)
                if not chunk:
                    raise SystemExit("connection closed")
                buf += chunk
            ack, buf = buf.split(b"\x1c\r", 1)
            msa = [s for s in ack.split(b"\r") if s.startswith(b"MSA")][0].split(b"|")
            if msa[1] != b"AA" or msa[2] != control:
                raise SystemExit(f"bad ACK {ack!r}")
        w.close()

    start = time.perf_counter()
    await asyncio.gather(*(one(c) for c in range(conns)))
    elapsed = time.perf_counter() - start
    total = per * conns
    print(f"mllp {total} in {elapsed:.2f} s = {total / elapsed:.0f}/s")


if __name__ == "__main__":
    mode, target, count, conns, path = sys.argv[1:6]
    f = lines if mode == "lines" else mllp
    asyncio.run(f(target, int(count), int(conns), path))

#!/usr/bin/env python3
"""Send HL7 v2 files over MLLP and print each ACK's MSA segment.

Usage: ./send.py FILE.hl7 [FILE.hl7 ...]   (HOST and PORT from env, default 127.0.0.1:2575)
Segments may be separated by LF or CRLF in the files; they are sent with CR.
"""
import os
import socket
import sys

host = os.environ.get("HOST", "127.0.0.1")
port = int(os.environ.get("PORT", "2575"))
sock = socket.create_connection((host, port))
buf = b""
for path in sys.argv[1:]:
    text = open(path, "rb").read().replace(b"\r\n", b"\r").replace(b"\n", b"\r")
    sock.sendall(b"\x0b" + text + b"\x1c\r")
    while b"\x1c\r" not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            sys.exit("connection closed")
        buf += chunk
    ack, buf = buf.split(b"\x1c\r", 1)
    msa = [s for s in ack.lstrip(b"\x0b").split(b"\r") if s.startswith(b"MSA")]
    shown = msa[0].decode(errors="replace") if msa else repr(ack)
    print(f"{path}: {shown}")

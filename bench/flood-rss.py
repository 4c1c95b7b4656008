#!/usr/bin/env python3
"""RSS of a running predictived before, during and after a flood of idle connections (issue 14).

Usage: bench/flood-rss.py BROKER_PID N SOCKET
Opens N connections to SOCKET (a status on every 97th), holds them 2 s, closes them all, and prints the broker's
VmRSS, RssAnon and Threads before, while flooded, 5 s and 15 s after the close. Needs N + a few hundred fds
(`ulimit -n`), and the broker's own limit above N (it raises its soft limit to its hard one).
"""
import socket
import sys
import time


def show(pid, when):
    fields = []
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(("VmRSS", "RssAnon", "Threads")):
                fields.append(" ".join(line.split()))
    print(f"{when}: " + ", ".join(fields))


def main():
    pid, n, path = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    show(pid, "before")
    conns = []
    for _ in range(n):
        s = socket.socket(socket.AF_UNIX)
        s.connect(path)
        conns.append(s)
    for s in conns[::97]:
        s.sendall(b'{"version":1,"type":"status","limit":1}\n')
        s.recv(65536)
    time.sleep(2)
    show(pid, f"{n} connections")
    for s in conns:
        s.close()
    time.sleep(5)
    show(pid, "closed, 5 s later")
    time.sleep(10)
    show(pid, "closed, 15 s later")


if __name__ == "__main__":
    main()

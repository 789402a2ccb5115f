#!/usr/bin/env python3
"""Which of a forked worker's data pages are its own, and what it wrote there.

A worker forked by `vde-networker --fork-server` shares the server's pages until it writes
one (copy on write). For the executable's .data and .bss and for the heap, this finds the
worker's private pages (/proc/PID/pagemap and /proc/kpagecount, root only: a present page
whose frame only this process maps; a frame that merely differs from the server's may be one
the server copied since, still shared by the workers forked before). For each it compares the
worker's bytes with the server's word by word (/proc/PID/mem) and names the symbols (`nm`,
demangled with swift-demangle when found) that hold the words that differ. Used for
docs/benchmarks.md ("With the spare, and where the last pages are").

    page_diff.py WORKER_PID SERVER_PID [--symbols N]
"""
import argparse
import bisect
import os
import shutil
import struct
import subprocess
import sys
from collections import Counter

PAGE = os.sysconf("SC_PAGE_SIZE")


def mappings(pid):
    """(start, end, perms, path) of each mapping."""
    out = []
    with open(f"/proc/{pid}/maps") as f:
        for line in f:
            fields = line.split(maxsplit=5)
            start, end = (int(x, 16) for x in fields[0].split("-"))
            out.append((start, end, fields[1], fields[5].strip() if len(fields) > 5 else ""))
    return out


def regions(pid):
    """The executable's writable mappings, the anonymous one right after them (.bss), the heap."""
    exe = os.readlink(f"/proc/{pid}/exe")
    maps = mappings(pid)
    found = []
    for i, (start, end, perms, path) in enumerate(maps):
        if path == exe and "w" in perms:
            found.append(("data", start, end))
            if i + 1 < len(maps) and maps[i + 1][3] == "" and maps[i + 1][0] == end:
                found.append(("bss", maps[i + 1][0], maps[i + 1][1]))
        elif path == "[heap]":
            found.append(("heap", start, end))
    return exe, found


def frames(pid, start, end):
    """The page frame number of each page of [start, end), None where not present."""
    count = (end - start) // PAGE
    with open(f"/proc/{pid}/pagemap", "rb") as f:
        f.seek(start // PAGE * 8)
        raw = f.read(count * 8)
    out = []
    for (entry,) in struct.iter_unpack("<Q", raw):
        out.append(entry & ((1 << 55) - 1) if entry >> 63 else None)
    return out


def map_counts(pfns):
    """How many mappings each frame has (/proc/kpagecount), None for an absent page."""
    out = []
    with open("/proc/kpagecount", "rb") as f:
        for pfn in pfns:
            if pfn is None:
                out.append(None)
                continue
            f.seek(pfn * 8)
            out.append(struct.unpack("<Q", f.read(8))[0])
    return out


def read(pid, address, length):
    with open(f"/proc/{pid}/mem", "rb") as f:
        f.seek(address)
        return f.read(length)


def symbol_table(exe):
    text = subprocess.run(["nm", "-n", "--defined-only", exe], capture_output=True, text=True).stdout
    addresses, names = [], []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[1].lower() in "bdgs":
            addresses.append(int(parts[0], 16))
            names.append(parts[2])
    return addresses, names


def demangle(names):
    tool = shutil.which("swift-demangle") or "/opt/swift/usr/bin/swift-demangle"
    if not os.path.exists(tool):
        return {n: n for n in names}
    out = subprocess.run([tool, "--simplified"], input="\n".join(names), capture_output=True, text=True).stdout
    return dict(zip(names, out.splitlines()))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("worker", type=int)
    parser.add_argument("server", type=int)
    parser.add_argument("--symbols", type=int, default=40, help="how many symbols to list")
    args = parser.parse_args()
    exe, worker_regions = regions(args.worker)
    addresses, names = symbol_table(exe)
    by_symbol = Counter()
    pages_of_symbol = {}
    for kind, start, end in worker_regions:
        mine = frames(args.worker, start, end)
        counts = map_counts(mine)
        private = [start + i * PAGE for i, count in enumerate(counts) if count == 1]
        present = sum(1 for a in mine if a is not None)
        words_changed = 0
        fresh = 0
        for page in private:
            a = read(args.worker, page, PAGE)
            try:
                b = read(args.server, page, PAGE)
            except OSError:
                b = bytes(PAGE)
            changed = [o for o in range(0, PAGE, 8) if a[o:o + 8] != b[o:o + 8]]
            words_changed += len(changed)
            if not any(b):
                fresh += 1
            for o in changed:
                i = bisect.bisect_right(addresses, page + o) - 1
                name = names[i] if kind != "heap" and i >= 0 else f"[{kind}]"
                by_symbol[name] += 8
                pages_of_symbol.setdefault(name, set()).add(page)
        print(f"{kind:5} {(end - start) // 1024:6} kB mapped, {present * PAGE // 1024:5} kB present, "
              f"{len(private) * PAGE // 1024:5} kB private ({fresh} pages zero in the server), "
              f"{words_changed * 8 // 1024} kB of words differ")
    readable = demangle([n for n, _ in by_symbol.most_common(args.symbols)])
    print(f"\n{'bytes':>7} {'pages':>5}  symbol (most changed bytes first)")
    for name, count in by_symbol.most_common(args.symbols):
        print(f"{count:7} {len(pages_of_symbol[name]):5}  {readable.get(name, name)[:140]}")


if __name__ == "__main__":
    sys.exit(main())

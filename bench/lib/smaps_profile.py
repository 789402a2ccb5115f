"""Where one process's PSS goes: /proc/PID/smaps grouped by mapping (file, [heap], [stack],
anonymous), with the dirty/private split. Also usable by hand:

    python3 bench/lib/smaps_profile.py PID [PID ...]
"""

from __future__ import annotations

import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import procfs  # noqa: E402

_HEADER = re.compile(r"^([0-9a-f]+)-([0-9a-f]+)\s+(\S+)\s+\S+\s+\S+\s+\d+\s*(.*)$")


def profile(pid: int) -> dict:
    groups: dict[str, dict] = {}
    cur = None
    threads = len(procfs.threads(pid))
    try:
        with open(f"/proc/{pid}/smaps") as f:
            for line in f:
                m = _HEADER.match(line)
                if m:
                    name = m.group(4).strip() or "[anon]"
                    perms = m.group(3)
                    if name.startswith("/"):
                        name = os.path.basename(name)
                    key = name if name != "[anon]" else f"[anon {'rw' if 'w' in perms else perms}]"
                    cur = groups.setdefault(key, {"pss_kb": 0, "rss_kb": 0, "private_dirty_kb": 0, "mappings": 0})
                    cur["mappings"] += 1
                    continue
                if cur is None:
                    continue
                k, _, rest = line.partition(":")
                if k in ("Pss", "Rss", "Private_Dirty"):
                    v = int(rest.split()[0])
                    cur[{"Pss": "pss_kb", "Rss": "rss_kb", "Private_Dirty": "private_dirty_kb"}[k]] += v
    except (FileNotFoundError, ProcessLookupError):
        return {}
    total = sum(g["pss_kb"] for g in groups.values())
    top = sorted(groups.items(), key=lambda kv: -kv[1]["pss_kb"])
    return {"pid": pid, "threads": threads, "pss_total_kb": total,
            "by_mapping": [{"name": k, **v} for k, v in top if v["pss_kb"] > 0][:25]}


def format_profile(p: dict) -> str:
    lines = [f"pid {p['pid']}: PSS {p['pss_total_kb']} kB, {p['threads']} threads",
             f"{'mapping':40} {'PSS kB':>8} {'RSS kB':>8} {'priv dirty':>10} {'maps':>5}"]
    for g in p["by_mapping"]:
        lines.append(f"{g['name'][:40]:40} {g['pss_kb']:8} {g['rss_kb']:8} {g['private_dirty_kb']:10} {g['mappings']:5}")
    return "\n".join(lines)


if __name__ == "__main__":
    for a in sys.argv[1:]:
        print(format_profile(profile(int(a))))
        print()

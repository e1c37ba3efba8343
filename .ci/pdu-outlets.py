#!/usr/bin/env python3
"""A small writable APC outlet table for net-snmp's `pass_persist` (tests and CI).

snmpd runs this once and talks to it over stdin/stdout (PING/get/getnext/set). It serves the
PowerNet-MIB rPDU columns the `apc-rpdu` profile uses, for outlets 1..N:

  .1.3.6.1.4.1.318.1.1.12.3.3.1.1.4.n  rPDUOutletControlOutletCommand  read-write INTEGER
                                        (reads 1 when on, 2 when off; 1 = on, 2 = off,
                                        3 = reboot: stays on)
  .1.3.6.1.4.1.318.1.1.12.3.5.1.1.4.n  rPDUOutletStatusOutletState     read-only 1 = on, 2 = off
  .1.3.6.1.4.1.318.1.1.12.3.5.1.1.7.n  rPDUOutletStatusLoad            read-only Gauge32, tenths
                                        of amperes (0 while the outlet is off)

The state lives in a text file (argument 1) that the test harness reads and writes too: one
line per outlet, `<n> <on|off> <tenths of amperes drawn when on>`. Every request re-reads it,
every set rewrites it atomically (write, then rename).
"""

import os
import sys

BASE = (1, 3, 6, 1, 4, 1, 318, 1, 1, 12, 3)
CONTROL = BASE + (3, 1, 1, 4)
STATE = BASE + (5, 1, 1, 4)
LOAD = BASE + (5, 1, 1, 7)
COLUMNS = (CONTROL, STATE, LOAD)  # in OID order


def load(path):
    outlets = {}
    with open(path) as f:
        for line in f:
            parts = line.split()
            if len(parts) == 3:
                outlets[int(parts[0])] = [parts[1] == "on", int(parts[2])]
    return outlets


def save(path, outlets):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        for n in sorted(outlets):
            on, tenths = outlets[n]
            f.write("%d %s %d\n" % (n, "on" if on else "off", tenths))
    os.replace(tmp, path)


def parse_oid(text):
    try:
        return tuple(int(a) for a in text.strip().strip(".").split("."))
    except ValueError:
        return None


def value(outlets, oid):
    """(type, value) of an existing instance, or None."""
    column, n = oid[:-1], oid[-1]
    if column not in COLUMNS or n not in outlets:
        return None
    on, tenths = outlets[n]
    if column == LOAD:
        return ("gauge", tenths if on else 0)
    return ("integer", 1 if on else 2)


def instances(outlets):
    for column in COLUMNS:
        for n in sorted(outlets):
            yield column + (n,)


def reply(*lines):
    sys.stdout.write("".join(line + "\n" for line in lines))
    sys.stdout.flush()


def answer(oid, found):
    if found is None:
        reply("NONE")
    else:
        reply("." + ".".join(map(str, oid)), found[0], str(found[1]))


def main():
    path = sys.argv[1]
    while True:
        cmd = sys.stdin.readline()
        if not cmd:
            return
        cmd = cmd.strip()
        if cmd == "PING":
            reply("PONG")
        elif cmd == "get":
            oid = parse_oid(sys.stdin.readline())
            answer(oid, value(load(path), oid) if oid else None)
        elif cmd == "getnext":
            oid = parse_oid(sys.stdin.readline()) or ()
            outlets = load(path)
            nxt = next((i for i in instances(outlets) if i > oid), None)
            answer(nxt, value(outlets, nxt) if nxt else None)
        elif cmd == "set":
            oid = parse_oid(sys.stdin.readline())
            typed = sys.stdin.readline().split()
            outlets = load(path)
            if oid is None or value(outlets, oid) is None:
                reply("not-writable")
            elif oid[:-1] != CONTROL:
                reply("not-writable")
            elif len(typed) != 2 or typed[0] != "integer":
                reply("wrong-type")
            elif typed[1] not in ("1", "2", "3"):
                reply("wrong-value")
            else:
                if typed[1] != "3":
                    outlets[oid[-1]][0] = typed[1] == "1"
                save(path, outlets)
                reply("DONE")
        elif cmd == "":
            continue
        else:
            reply("NONE")


if __name__ == "__main__":
    main()

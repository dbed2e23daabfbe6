#!/usr/bin/env python3
"""Cut a fuzz corpus down to at most CAP inputs, keeping as much coverage as possible.

    select_corpus.py TARGET_BINARY OUT_DIR CAP FILL CORPUS_DIR...

`cargo fuzz cmin` keeps every input that adds a coverage feature, which for a JSON parser is
hundreds of inputs (most exercise serde_json internals). We commit a few dozen instead:

1. libFuzzer's merge (`-merge=1 -merge_control_file`) runs every input and records which
   edges (indices into the binary's `__sancov_pcs` table) each one covers;
2. each edge is mapped to its source line (the table's relocations give the addresses,
   `addr2line` the lines): edges whose innermost source line is in crates/berth-oci or in
   fuzz/fuzz_targets are "our" edges;
3. a greedy set cover picks inputs for our hand-written edges (not those of code a derive
   macro wrote, such as serde's visitors) until all are covered or CAP inputs are chosen;
   then, while fewer than FILL are chosen, for all our edges and then for all edges.

OUT_DIR is emptied and filled with the chosen inputs. Needs readelf and addr2line (binutils).
"""

import os
import shutil
import subprocess
import sys
import tempfile

OWN = ("/crates/berth-oci/", "/fuzz/fuzz_targets/")
# Substrings of the (mangled) names of functions a derive macro wrote.
DERIVED = ("eserialize", "visit_", "Visitor", "__Field", "PartialEq", "2eq", "equal_same_length",
           "Debug", "drop_in_place", "Clone")


def pc_table(binary):
    """Index in __sancov_pcs -> instruction address."""
    sections = subprocess.run(["readelf", "-SW", binary], capture_output=True, text=True, check=True).stdout
    start = size = None
    for line in sections.splitlines():
        if "__sancov_pcs" in line:
            p = line.split()
            i = p.index("__sancov_pcs")
            start, size = int(p[i + 2], 16), int(p[i + 4], 16)
    if start is None:
        sys.exit(f"{binary}: no __sancov_pcs section (not a cargo-fuzz build?)")
    relocs = subprocess.run(["readelf", "-rW", binary], capture_output=True, text=True, check=True).stdout
    pcs = {}
    for line in relocs.splitlines():
        p = line.split()
        if len(p) >= 4 and p[2] == "R_X86_64_RELATIVE":
            off = int(p[0], 16)
            if start <= off < start + size and (off - start) % 16 == 0:
                pcs[(off - start) // 16] = int(p[3], 16)
    return pcs


def own_edges(binary, pcs):
    """(our edges, our hand-written edges): edges whose innermost source line is ours, and
    those of them that are not in code derived by a macro (serde's visitors, PartialEq...)."""
    by_addr = {a: i for i, a in pcs.items()}
    query = "".join(f"{a:#x}\n" for a in sorted(by_addr))
    out = subprocess.run(["addr2line", "-f", "-i", "-a", "-e", binary], input=query,
                         capture_output=True, text=True, check=True).stdout.splitlines()
    own, written = set(), set()
    for k, line in enumerate(out):
        if not line.startswith("0x") or k + 2 >= len(out):
            continue
        cur = by_addr.get(int(line, 16))
        func, loc = out[k + 1], out[k + 2]  # the innermost frame: function, then file:line
        if cur is not None and any(o in loc for o in OWN):
            own.add(cur)
            if not any(d in func for d in DERIVED):
                written.add(cur)
    return own, written


def coverage(binary, corpora):
    """(input paths, {input number: set of edge indices}) from a libFuzzer merge."""
    with tempfile.TemporaryDirectory() as tmp:
        ctl = os.path.join(tmp, "control")
        out = os.path.join(tmp, "out")
        os.mkdir(out)
        subprocess.run([binary, "-merge=1", "-use_counters=0", f"-merge_control_file={ctl}", out, *corpora],
                       capture_output=True, check=True)
        lines = open(ctl).read().split("\n")
    n = int(lines[0])
    files = lines[2:2 + n]
    cov = {}
    for line in lines[2 + n:]:
        p = line.split()
        if p and p[0] == "COV":
            cov[int(p[1])] = set(map(int, p[2:]))
    return files, cov


def main():
    if len(sys.argv) < 6:
        sys.exit(__doc__)
    binary, out_dir, corpora = sys.argv[1], sys.argv[2], sys.argv[5:]
    cap, fill = int(sys.argv[3]), int(sys.argv[4])
    files, cov = coverage(binary, corpora)
    if not cov:
        sys.exit("no coverage recorded")
    every = set().union(*cov.values())
    own, written = own_edges(binary, pc_table(binary))
    ours, written = every & own, every & written
    chosen, covered = [], set()
    for label, universe, limit in (("our hand-written", written, cap), ("our", ours, min(cap, fill)),
                                   ("all", every, min(cap, fill))):
        covered = set().union(*(cov[i] & universe for i in chosen)) if chosen else set()
        while len(chosen) < limit:
            best = max((i for i in cov if i not in chosen),
                       key=lambda i: (len((cov[i] & universe) - covered), -os.path.getsize(files[i])),
                       default=None)
            if best is None or not (cov[best] & universe) - covered:
                break
            chosen.append(best)
            covered |= cov[best] & universe
        got = len(set().union(*(cov[i] & universe for i in chosen)))
        print(f"{label} edges: {got}/{len(universe)} with {len(chosen)} inputs", file=sys.stderr)
    picked = [files[i] for i in chosen]
    data = [(os.path.basename(f), open(f, "rb").read()) for f in picked]
    shutil.rmtree(out_dir, ignore_errors=True)
    os.makedirs(out_dir)
    for name, content in data:
        with open(os.path.join(out_dir, name), "wb") as fh:
            fh.write(content)


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""ORAS Python SDK checks against a running Berth registry.

Pushes an artifact, pulls it back, pushes two artifacts that refer to it (one through the
SDK's `subject` parameter, one with an explicit `artifactType` field PUT through the SDK's
HTTP session) and checks the referrers API, with and without `?artifactType=` filtering.

Prints one line per check, `ok NAME` or `FAIL NAME: reason`, for scripts/test-clients.sh to
count; exits 0 when every check passed, 1 otherwise.

Usage: oras_artifacts.py --registry 127.0.0.1:PORT --workdir DIR [--repo NAME]
"""

import argparse
import hashlib
import json
import os
import sys
import traceback
import urllib.parse

import oras.client
import oras.oci

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_EMPTY = "application/vnd.oci.empty.v1+json"
EMPTY_JSON = b"{}"

# The artifact's type is carried by its config media type (the SDK's `manifest_config`).
TYPE_MAIN = "application/vnd.berth.test.bundle.v1+json"
# The first referrer: SDK push with `subject`; its type is its config media type.
TYPE_SBOM = "application/vnd.berth.test.sbom.v1+json"
# The second referrer: an explicit `artifactType` field with the empty config.
TYPE_SIG = "application/vnd.berth.test.signature.v1"
# A type nothing has.
TYPE_NONE = "application/vnd.berth.test.nothing.v1"


class Checks:
    """Collects results and prints one line each."""

    def __init__(self):
        self.failed = 0
        self.passed = 0

    def run(self, name, fn):
        """Run fn(); an AssertionError or any exception is a failure. Returns fn's value."""
        try:
            value = fn()
        except AssertionError as e:
            self.failed += 1
            print(f"FAIL {name}: {e}", flush=True)
            return None
        except Exception as e:  # a client error is a failure of this check, not a crash
            self.failed += 1
            last = traceback.format_exc().strip().splitlines()[-1]
            print(f"FAIL {name}: {type(e).__name__}: {e} ({last})", flush=True)
            return None
        self.passed += 1
        print(f"ok {name}", flush=True)
        return value


def sha256_bytes(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()


def expect(cond, msg):
    if not cond:
        raise AssertionError(msg)


class Session:
    """What the checks share: the client, the names, and what earlier checks produced."""

    def __init__(self, registry, repo, workdir):
        self.registry = registry
        self.repo = repo
        self.workdir = workdir
        self.base = f"http://{registry}/v2/{repo}"
        self.client = oras.client.OrasClient(hostname=registry, insecure=True)
        self.main_digest = None
        self.main_size = None
        self.sbom_digest = None
        self.sbom_size = None
        self.sig_digest = None
        self.sig_size = None
        self.files = {}

    def url(self, path):
        return f"{self.base}/{path}"

    def raw_manifest(self, reference):
        """GET a manifest's exact bytes; returns (bytes, response)."""
        r = self.client.do_request(
            self.url(f"manifests/{reference}"),
            "GET",
            headers={"Accept": f"{OCI_MANIFEST}, {OCI_INDEX}"},
        )
        expect(r.status_code == 200, f"GET manifest {reference}: HTTP {r.status_code} {r.text[:200]}")
        return r.content, r

    def referrers(self, digest, artifact_type=None):
        url = self.url(f"referrers/{digest}")
        if artifact_type is not None:
            # Percent-encode: a bare "+" in a query means a space (as Go's url.Values has it).
            url += "?artifactType=" + urllib.parse.quote(artifact_type, safe="")
        r = self.client.do_request(url, "GET")
        expect(r.status_code == 200, f"GET {url}: HTTP {r.status_code} {r.text[:200]}")
        return r


def make_files(s):
    """Two files of random content in a fresh directory; the SDK wants relative paths."""
    src = os.path.join(s.workdir, "src")
    os.makedirs(src, exist_ok=True)
    for name, size in (("readme.txt", 0), ("payload.bin", 300_000)):
        path = os.path.join(src, name)
        if size:
            data = os.urandom(size)
        else:
            data = ("berth oras test " + os.urandom(8).hex() + "\n").encode()
        with open(path, "wb") as f:
            f.write(data)
        s.files[name] = data
    with open(os.path.join(src, "config.json"), "w") as f:
        json.dump({"purpose": "berth client test"}, f)
    with open(os.path.join(src, "sbom.json"), "w") as f:
        json.dump({"sbom": "berth client test", "packages": []}, f)
    return src


def check_push(s, src):
    os.chdir(src)
    r = s.client.push(
        target=f"{s.registry}/{s.repo}:v1",
        files=["readme.txt", "payload.bin:application/octet-stream"],
        manifest_config=f"config.json:{TYPE_MAIN}",
        manifest_annotations={"org.opencontainers.image.description": "berth oras test"},
        quiet=True,
    )
    expect(r.status_code == 201, f"manifest PUT answered {r.status_code}, want 201")
    digest = r.headers.get("Docker-Content-Digest")
    expect(digest and digest.startswith("sha256:"), f"no Docker-Content-Digest header: {dict(r.headers)}")
    raw, resp = s.raw_manifest("v1")
    expect(sha256_bytes(raw) == digest, f"GET by tag returned bytes hashing to {sha256_bytes(raw)}, push said {digest}")
    expect(resp.headers.get("Docker-Content-Digest") == digest, "GET's Docker-Content-Digest differs from the push's")
    expect(resp.headers.get("Content-Type") == OCI_MANIFEST, f"GET Content-Type {resp.headers.get('Content-Type')!r}")
    s.main_digest = digest
    s.main_size = len(raw)


def check_manifest(s):
    m = s.client.get_manifest(f"{s.registry}/{s.repo}:v1")
    expect(m["config"]["mediaType"] == TYPE_MAIN, f"config mediaType {m['config'].get('mediaType')!r}")
    expect(
        m.get("annotations", {}).get("org.opencontainers.image.description") == "berth oras test",
        f"manifest annotations {m.get('annotations')!r}",
    )
    titles = sorted(l["annotations"]["org.opencontainers.image.title"] for l in m["layers"])
    expect(titles == ["payload.bin", "readme.txt"], f"layer titles {titles}")
    for layer in m["layers"]:
        name = layer["annotations"]["org.opencontainers.image.title"]
        expect(layer["digest"] == sha256_bytes(s.files[name]), f"{name}: layer digest {layer['digest']} is not the file's")
    tags = s.client.get_tags(f"{s.registry}/{s.repo}")
    expect(tags == ["v1"], f"tags {tags}, want ['v1']")


def check_pull(s):
    out = os.path.join(s.workdir, "pulled")
    os.makedirs(out, exist_ok=True)
    files = s.client.pull(target=f"{s.registry}/{s.repo}:v1", outdir=out)
    got = sorted(os.path.basename(f) for f in files)
    expect(got == ["payload.bin", "readme.txt"], f"pulled {got}")
    for name, data in s.files.items():
        with open(os.path.join(out, name), "rb") as f:
            pulled = f.read()
        expect(pulled == data, f"{name}: pulled {len(pulled)} bytes differ from the {len(data)} pushed")
    # And by digest, through the blob endpoint.
    for name, data in s.files.items():
        r = s.client.do_request(s.url(f"blobs/{sha256_bytes(data)}"), "GET")
        expect(r.status_code == 200 and r.content == data, f"GET blob of {name}: HTTP {r.status_code}")


def check_chunked(s):
    """Chunked upload (POST, PATCH with Content-Range per chunk, PUT ?digest=), then pull."""
    src = os.path.join(s.workdir, "chunked")
    out = os.path.join(s.workdir, "chunked-out")
    os.makedirs(src, exist_ok=True)
    os.makedirs(out, exist_ok=True)
    data = os.urandom(5 * 65536 + 1234)  # five full chunks and a short one
    with open(os.path.join(src, "chunked.bin"), "wb") as f:
        f.write(data)
    os.chdir(src)
    r = s.client.push(
        target=f"{s.registry}/{s.repo}:chunked",
        files=["chunked.bin"],
        do_chunked=True,
        chunk_size=65536,
        quiet=True,
    )
    expect(r.status_code == 201, f"manifest PUT answered {r.status_code}, want 201")
    files = s.client.pull(target=f"{s.registry}/{s.repo}:chunked", outdir=out)
    expect([os.path.basename(f) for f in files] == ["chunked.bin"], f"pulled {files}")
    with open(os.path.join(out, "chunked.bin"), "rb") as f:
        pulled = f.read()
    expect(pulled == data, f"pulled {len(pulled)} bytes differ from the {len(data)} pushed in chunks")


def check_push_sbom(s, src):
    os.chdir(src)
    subject = oras.oci.Subject(mediaType=OCI_MANIFEST, digest=s.main_digest, size=s.main_size)
    r = s.client.push(
        target=f"{s.registry}/{s.repo}:sbom",
        files=["sbom.json:application/json"],
        manifest_config=f"config.json:{TYPE_SBOM}",
        manifest_annotations={"org.example.kind": "sbom"},
        subject=subject,
        quiet=True,
    )
    expect(r.status_code == 201, f"manifest PUT answered {r.status_code}, want 201")
    expect(
        r.headers.get("OCI-Subject") == s.main_digest,
        f"OCI-Subject header {r.headers.get('OCI-Subject')!r}, want {s.main_digest}",
    )
    raw, _ = s.raw_manifest("sbom")
    m = json.loads(raw)
    expect(m.get("subject", {}).get("digest") == s.main_digest, f"stored manifest subject {m.get('subject')!r}")
    s.sbom_digest = sha256_bytes(raw)
    s.sbom_size = len(raw)


def check_push_signature(s):
    """An OCI 1.1 artifact: explicit artifactType, empty config, subject; PUT by digest."""
    sig = ("signature over " + s.main_digest).encode()
    container = s.client.get_container(f"{s.registry}/{s.repo}:unused")
    for blob, media in ((EMPTY_JSON, OCI_EMPTY), (sig, "application/octet-stream")):
        path = os.path.join(s.workdir, "blob.tmp")
        with open(path, "wb") as f:
            f.write(blob)
        desc = {"mediaType": media, "digest": sha256_bytes(blob), "size": len(blob)}
        # The SDK answers with its HEAD (200) when the blob is already there, else the PUT (201).
        r = s.client.upload_blob(path, container, desc)
        expect(r.status_code in (200, 201), f"blob upload answered {r.status_code}")
        os.remove(path)
        r = s.client.do_request(s.url(f"blobs/{desc['digest']}"), "HEAD")
        expect(r.status_code == 200, f"HEAD blob {desc['digest']} answered {r.status_code}")
        expect(r.headers.get("Content-Length") == str(len(blob)), f"HEAD Content-Length {r.headers.get('Content-Length')!r}")
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": TYPE_SIG,
        "config": {"mediaType": OCI_EMPTY, "digest": sha256_bytes(EMPTY_JSON), "size": 2},
        "layers": [{"mediaType": "application/octet-stream", "digest": sha256_bytes(sig), "size": len(sig)}],
        "subject": {"mediaType": OCI_MANIFEST, "digest": s.main_digest, "size": s.main_size},
        "annotations": {"org.example.kind": "signature"},
    }
    body = json.dumps(manifest, separators=(",", ":")).encode()
    digest = sha256_bytes(body)
    r = s.client.do_request(
        s.url(f"manifests/{digest}"), "PUT", data=body, headers={"Content-Type": OCI_MANIFEST}
    )
    expect(r.status_code == 201, f"manifest PUT answered {r.status_code}: {r.text[:300]}")
    expect(r.headers.get("Docker-Content-Digest") == digest, f"Docker-Content-Digest {r.headers.get('Docker-Content-Digest')!r}")
    expect(r.headers.get("OCI-Subject") == s.main_digest, f"OCI-Subject header {r.headers.get('OCI-Subject')!r}")
    raw, _ = s.raw_manifest(digest)
    expect(raw == body, "manifest read back by digest differs from the bytes PUT")
    s.sig_digest = digest
    s.sig_size = len(body)


def referrer_set(r):
    idx = r.json()
    expect(idx.get("schemaVersion") == 2, f"schemaVersion {idx.get('schemaVersion')!r}")
    expect(idx.get("mediaType") == OCI_INDEX, f"index mediaType {idx.get('mediaType')!r}")
    ct = r.headers.get("Content-Type", "")
    expect(ct.split(";")[0].strip() == OCI_INDEX, f"Content-Type {ct!r}, want {OCI_INDEX}")
    return idx.get("manifests", [])


def check_referrers(s):
    r = s.referrers(s.main_digest)
    got = referrer_set(r)
    want = {
        s.sbom_digest: (TYPE_SBOM, s.sbom_size, "sbom"),
        s.sig_digest: (TYPE_SIG, s.sig_size, "signature"),
    }
    digests = sorted(d.get("digest") for d in got)
    expect(digests == sorted(want), f"referrers {digests}, want exactly {sorted(want)}")
    for d in got:
        typ, size, kind = want[d["digest"]]
        expect(d.get("artifactType") == typ, f"{d['digest']}: artifactType {d.get('artifactType')!r}, want {typ!r}")
        expect(d.get("mediaType") == OCI_MANIFEST, f"{d['digest']}: mediaType {d.get('mediaType')!r}")
        expect(d.get("size") == size, f"{d['digest']}: size {d.get('size')!r}, want {size}")
        kinds = (d.get("annotations") or {}).get("org.example.kind")
        expect(kinds == kind, f"{d['digest']}: annotations {d.get('annotations')!r} lack org.example.kind={kind}")
    expect("OCI-Filters-Applied" not in r.headers, "OCI-Filters-Applied sent without a filter")


def check_referrers_filter(s):
    for typ, want in ((TYPE_SBOM, [s.sbom_digest]), (TYPE_SIG, [s.sig_digest]), (TYPE_NONE, [])):
        r = s.referrers(s.main_digest, typ)
        got = referrer_set(r)
        digests = [d.get("digest") for d in got]
        expect(digests == want, f"artifactType={typ}: referrers {digests}, want {want}")
        applied = r.headers.get("OCI-Filters-Applied")
        expect(applied == "artifactType", f"artifactType={typ}: OCI-Filters-Applied {applied!r}")


def check_referrers_empty(s):
    # A manifest nothing refers to, and a digest the registry has never seen: both 200, empty.
    for d in [x for x in (s.sig_digest, sha256_bytes(os.urandom(16))) if x]:
        got = referrer_set(s.referrers(d))
        expect(got == [], f"referrers of {d}: {got}, want []")


def check_tags_pagination(s):
    """Tag the artifact a few more times, then page through tags/list two at a time with the
    SDK's Link-following helper: every tag exactly once, in order, pages of at most 2."""
    raw, _ = s.raw_manifest(s.main_digest)
    extra = [f"page-{i}" for i in range(1, 5)]
    for tag in extra:
        r = s.client.do_request(s.url(f"manifests/{tag}"), "PUT", data=raw, headers={"Content-Type": OCI_MANIFEST})
        expect(r.status_code == 201, f"PUT manifest as {tag}: HTTP {r.status_code}")
    want = sorted(["v1", "chunked", "sbom"] + extra)
    pages = []

    def collect(response):
        page = response.json().get("tags") or []
        pages.append(page)
        return bool(page)

    s.client._do_paginated_request(s.url("tags/list?n=2"), callable=collect)
    got = [t for page in pages for t in page]
    expect(got == want, f"paged tags {got}, want {want}")
    expect(all(len(p) <= 2 for p in pages), f"page sizes {[len(p) for p in pages]} exceed n=2")
    expect(len(pages) >= 4, f"{len(pages)} pages for {len(want)} tags at n=2: Link not followed")
    expect(s.client.get_tags(f"{s.registry}/{s.repo}") == want, "unpaged tags/list differs")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--registry", required=True)
    ap.add_argument("--workdir", required=True)
    ap.add_argument("--repo", default="clients/oras")
    args = ap.parse_args()

    s = Session(args.registry, args.repo, args.workdir)
    c = Checks()
    src = make_files(s)
    c.run("oras-push-artifact", lambda: check_push(s, src))
    if s.main_digest is None:
        print("FAIL oras-rest: skipped because the first push failed")
        c.failed += 1
    else:
        c.run("oras-manifest-artifact-type", lambda: check_manifest(s))
        c.run("oras-pull-files-identical", lambda: check_pull(s))
        c.run("oras-push-pull-chunked", lambda: check_chunked(s))
        c.run("oras-push-referrer-subject", lambda: check_push_sbom(s, src))
        c.run("oras-push-referrer-artifacttype", lambda: check_push_signature(s))
        if s.sbom_digest and s.sig_digest:
            c.run("referrers-list-exact", lambda: check_referrers(s))
            c.run("referrers-filter-artifacttype", lambda: check_referrers_filter(s))
        else:
            print("FAIL referrers: skipped because a referrer push failed")
            c.failed += 1
        c.run("referrers-empty", lambda: check_referrers_empty(s))
        c.run("oras-tags-pagination", lambda: check_tags_pagination(s))
    return 1 if c.failed else 0


if __name__ == "__main__":
    sys.exit(main())

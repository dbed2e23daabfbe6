#!/usr/bin/env python3
"""ORAS Python SDK checks against a Berth registry in token mode (access control on).

The project's robots come from scripts/test-clients.sh (made with `berth admin`): one with
pull and push, one with pull only. Their names come as arguments, their secrets in the
environment (ORAS_PUSH_SECRET, ORAS_PULL_SECRET), never on a command line.

- the push robot signs in with `client.login()` (which writes a Docker config file) and
  pushes an artifact; the SDK's basic-auth backend sends the robot's credentials to /v2
- the pull-only robot signs in through the SDK's default token backend (401 challenge ->
  /service/token with basic credentials -> bearer JWT) and pulls it back, byte-identical
- the pull-only robot's push is refused, and nothing is tagged
- a wrong secret and an anonymous client are refused

Pushes go through the basic backend because oras-py (0.2.43) cannot push through its token
backend to a registry that scopes tokens per request, as the Docker token specification has
it: the backend keeps the first token it gets (pull-scoped, from the HEAD of a blob), retries
the 401 of the upload or manifest PUT with that same token, and asks for a new one only on
403. probe_token_push prints what happens (a note, not a check).

Prints `ok NAME` or `FAIL NAME: reason` per check (and `# ...` notes) for
scripts/test-clients.sh to count; exits 0 when every check passed, 1 otherwise.

Usage: oras_token.py --registry 127.0.0.1:PORT --workdir DIR --repo team-a/NAME
                     --push-robot 'robot$team-a+push' --pull-robot 'robot$team-a+pull'
"""

import argparse
import base64
import hashlib
import json
import os
import sys
import traceback

import oras.client

ARTIFACT_TYPE = "application/vnd.berth.test.token.v1+json"


class Checks:
    def __init__(self):
        self.failed = 0
        self.passed = 0

    def run(self, name, fn):
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


def expect(cond, msg):
    if not cond:
        raise AssertionError(msg)


def sha256_bytes(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()


class Ctx:
    def __init__(self, args):
        self.registry = args.registry
        self.repo = args.repo
        self.workdir = args.workdir
        self.push_robot = args.push_robot
        self.pull_robot = args.pull_robot
        self.push_secret = os.environ["ORAS_PUSH_SECRET"]
        self.pull_secret = os.environ["ORAS_PULL_SECRET"]
        self.src = os.path.join(self.workdir, "src")
        self.files = {}
        self.digest = None

    def target(self, tag):
        return f"{self.registry}/{self.repo}:{tag}"

    def client(self, backend="token"):
        return oras.client.OrasClient(hostname=self.registry, insecure=True, auth_backend=backend)

    def login(self, client, user, secret, name):
        """client.login() as the SDK documents it; the credentials go to a config file of
        our own (never ~/.docker/config.json) and must be exactly what was given."""
        cfg = os.path.join(self.workdir, f"{name}-config.json")
        r = client.login(username=user, password=secret, hostname=self.registry, config_path=cfg)
        expect(isinstance(r, dict) and "Succeeded" in str(r.get("Status", "")), f"login answered {r!r}")
        with open(cfg) as f:
            auths = json.load(f).get("auths", {})
        expect(self.registry in auths, f"{cfg} has no entry for {self.registry}: {list(auths)}")
        got = base64.b64decode(auths[self.registry]["auth"]).decode()
        expect(got == f"{user}:{secret}", f"{cfg} holds credentials for {got.split(':')[0]!r}, want {user!r}")

    def tag_status(self, tag):
        """HTTP status of GET manifest TAG, asked as the push robot with basic credentials."""
        c = self.client("basic")
        c.auth.set_basic_auth(self.push_robot, self.push_secret)
        r = c.do_request(
            f"http://{self.registry}/v2/{self.repo}/manifests/{tag}",
            "GET",
            headers={"Accept": "application/vnd.oci.image.manifest.v1+json"},
        )
        return r.status_code


def make_files(ctx):
    os.makedirs(ctx.src, exist_ok=True)
    for name, data in (
        ("notes.txt", ("berth token-mode artifact " + os.urandom(8).hex() + "\n").encode()),
        ("blob.bin", os.urandom(200_000)),
    ):
        with open(os.path.join(ctx.src, name), "wb") as f:
            f.write(data)
        ctx.files[name] = data
    with open(os.path.join(ctx.src, "config.json"), "w") as f:
        json.dump({"purpose": "berth token-mode client test"}, f)


def push(client, ctx, tag):
    os.chdir(ctx.src)
    return client.push(
        target=ctx.target(tag),
        files=["notes.txt", "blob.bin:application/octet-stream"],
        manifest_config=f"config.json:{ARTIFACT_TYPE}",
        quiet=True,
    )


def check_push_robot(ctx):
    c = ctx.client("basic")
    ctx.login(c, ctx.push_robot, ctx.push_secret, "push-robot")
    r = push(c, ctx, "v1")
    expect(r.status_code == 201, f"manifest PUT answered {r.status_code}: {r.text[:300]}")
    digest = r.headers.get("Docker-Content-Digest", "")
    expect(digest.startswith("sha256:"), f"no Docker-Content-Digest in {dict(r.headers)}")
    m = c.get_manifest(ctx.target("v1"))
    expect(m["config"]["mediaType"] == ARTIFACT_TYPE, f"config mediaType {m['config'].get('mediaType')!r}")
    for layer in m["layers"]:
        name = layer["annotations"]["org.opencontainers.image.title"]
        expect(layer["digest"] == sha256_bytes(ctx.files[name]), f"{name}: layer digest is not the file's")
    expect(c.get_tags(f"{ctx.registry}/{ctx.repo}") == ["v1"], "tags after the push are not exactly ['v1']")
    ctx.digest = digest


def check_pull_token_flow(ctx):
    c = ctx.client("token")
    ctx.login(c, ctx.pull_robot, ctx.pull_secret, "pull-robot")
    out = os.path.join(ctx.workdir, "pulled")
    os.makedirs(out, exist_ok=True)
    files = c.pull(target=ctx.target("v1"), outdir=out)
    got = sorted(os.path.basename(f) for f in files)
    expect(got == sorted(ctx.files), f"pulled {got}, want {sorted(ctx.files)}")
    for name, data in ctx.files.items():
        with open(os.path.join(out, name), "rb") as f:
            pulled = f.read()
        expect(pulled == data, f"{name}: pulled {len(pulled)} bytes differ from the {len(data)} pushed")
    # The SDK really went through the token service: it holds a bearer JWT (three parts).
    token = getattr(c.auth, "token", None)
    expect(token and token.count(".") == 2, f"the SDK holds no bearer token after the pull: {token!r}")
    claims = json.loads(base64.urlsafe_b64decode(token.split(".")[1] + "=" * (-len(token.split(".")[1]) % 4)))
    expect(claims.get("sub") == ctx.pull_robot, f"token subject {claims.get('sub')!r}, want {ctx.pull_robot!r}")


def expect_refused(fn, what):
    """fn() must raise or return a response that is not a success."""
    try:
        r = fn()
    except Exception as e:  # the SDK raises on a refused upload session
        print(f"# {what}: refused with {type(e).__name__}: {str(e)[:200]}", flush=True)
        return
    code = getattr(r, "status_code", None)
    expect(code is not None and code >= 400, f"{what} succeeded (HTTP {code})")
    print(f"# {what}: refused with HTTP {code}", flush=True)


def check_pull_robot_push_refused(ctx):
    # The basic backend, which can push (see probe_token_push): a refusal through the token
    # backend would prove nothing.
    c = ctx.client("basic")
    ctx.login(c, ctx.pull_robot, ctx.pull_secret, "pull-robot-basic")
    expect_refused(lambda: push(c, ctx, "pull-only"), "pull-only robot push")
    code = ctx.tag_status("pull-only")
    expect(code == 404, f"tag pull-only after the refused push: GET answered {code}, want 404")


def check_wrong_secret(ctx):
    # The basic backend only: when the token service refuses the credentials, the token
    # backend raises inside the SDK's retry decorator, which tries 5 more times with sleeps
    # of 3 to 83 s (131 s per request), each try a failed login towards Berth's lockout.
    c = ctx.client("basic")
    ctx.login(c, ctx.push_robot, ctx.push_secret + "x", "wrong-secret")
    out = os.path.join(ctx.workdir, "wrong")
    os.makedirs(out, exist_ok=True)
    expect_refused(lambda: c.pull(target=ctx.target("v1"), outdir=out), "pull with a wrong secret")
    expect(os.listdir(out) == [], f"pull with a wrong secret wrote {os.listdir(out)}")
    expect_refused(lambda: push(c, ctx, "wrong"), "push with a wrong secret")
    code = ctx.tag_status("wrong")
    expect(code == 404, f"tag wrong: GET answered {code}, want 404")


def check_anonymous(ctx):
    c = ctx.client("token")  # no login: the SDK asks the token service for an anonymous token
    out = os.path.join(ctx.workdir, "anonymous")
    os.makedirs(out, exist_ok=True)
    expect_refused(lambda: c.pull(target=ctx.target("v1"), outdir=out), "anonymous pull of a private project")
    expect(os.listdir(out) == [], f"anonymous pull wrote {os.listdir(out)}")
    expect_refused(lambda: push(c, ctx, "anonymous"), "anonymous push")
    code = ctx.tag_status("anonymous")
    expect(code == 404, f"tag anonymous: GET answered {code}, want 404")


def probe_token_push(ctx):
    """Not a check: whether the SDK's token backend can push (see the note it prints)."""
    c = ctx.client("token")
    c.login(username=ctx.push_robot, password=ctx.push_secret, hostname=ctx.registry,
            config_path=os.path.join(ctx.workdir, "probe-config.json"))
    try:
        r = push(c, ctx, "token-backend")
        print(f"# oras-py token backend push by the push robot: HTTP {r.status_code}", flush=True)
    except Exception as e:
        print(
            "# oras-py token backend push by the push robot fails (a client limitation: it keeps "
            "the first, pull-scoped token and retries a 401 with it; it asks for a new token only "
            f"on 403): {type(e).__name__}: {str(e)[:300]}",
            flush=True,
        )


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--registry", required=True)
    ap.add_argument("--workdir", required=True)
    ap.add_argument("--repo", required=True)
    ap.add_argument("--push-robot", required=True)
    ap.add_argument("--pull-robot", required=True)
    args = ap.parse_args()

    ctx = Ctx(args)
    c = Checks()
    make_files(ctx)
    c.run("token-oras-login-push-robot", lambda: check_push_robot(ctx))
    if ctx.digest is None:
        print("FAIL token-oras-rest: skipped because the push robot's push failed", flush=True)
        c.failed += 1
    else:
        c.run("token-oras-pull-robot-token-flow", lambda: check_pull_token_flow(ctx))
        c.run("token-oras-pull-robot-push-refused", lambda: check_pull_robot_push_refused(ctx))
        c.run("token-oras-wrong-secret-refused", lambda: check_wrong_secret(ctx))
        c.run("token-oras-anonymous-refused", lambda: check_anonymous(ctx))
        probe_token_push(ctx)
    return 1 if c.failed else 0


if __name__ == "__main__":
    sys.exit(main())

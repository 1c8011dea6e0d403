#!/usr/bin/env python3
"""Verifies a SeMS Response event log without the project's code.

Written from docs/EVENTS.md alone ("Verifying the log without this project's code"), with
nothing but the Python standard library: the raw messages (read over the NATS protocol with
JetStream's direct get) or the rows of the embedded log (SQLite), and SHA-256.

    scripts/verify-log.py --nats nats://127.0.0.1:4222 [--stream SEMS] [--api-prefix P]
    scripts/verify-log.py --sqlite sems-data/events.db

Checks, for every commit in position order:
  * positions run 1, 2, 3 ... with no gap;
  * the body is UTF-8 JSON, one object with no repeated key, whose aggregate_type (one of
    EVENTS.md's) and aggregate_id (a UUID, lowercase) match its subject
    (sems.ev.<type>.<id>) or its row;
  * prev_hash is the SHA-256 (lowercase hex) of the previous commit of the same aggregate,
    exactly as stored, or 64 zeros for its first;
  * aggregate_version grows by the number of events of the commit.

The chain shows a commit altered or removed while the commits after it stay as they were.
It cannot show the last commit of an aggregate altered, nor commits appended, nor a chain
rewritten from some commit on by someone able to write the log: the log digest printed at
the end (SHA-256 over "position hash" lines of every commit) covers those, when it was
recorded somewhere the writer of the log cannot reach. `--expect-digest POSITION:DIGEST`
checks the whole log and compares its digest up to POSITION with the recorded one.

Exit status: 0 intact, 1 tampered (each problem is printed with its position), 2 the log
could not be read.
"""

import argparse
import hashlib
import json
import pathlib
import secrets
import socket
import sqlite3
import sys
import time
import urllib.parse
import uuid

ZEROS = "0" * 64
WINDOW = 256  # direct gets in flight at once
AGGREGATE_TYPES = {"alert", "incident", "handover", "crisis"}


class Unreadable(Exception):
    """The log could not be read (not a finding about its contents)."""


def commits_from_sqlite(path):
    """(position, aggregate_type, aggregate_id, body) of every row, in position order."""
    try:
        db = sqlite3.connect(pathlib.Path(path).resolve().as_uri() + "?mode=ro", uri=True)
        rows = db.execute(
            "SELECT position, aggregate_type, aggregate_id, bytes FROM commits ORDER BY position"
        )
        for position, aggregate_type, aggregate_id, body in rows:
            # semsd stores a BLOB; a TEXT value is read as its UTF-8 bytes, a NULL as none
            # (then no JSON object is found in it).
            if isinstance(body, str):
                body = body.encode()
            yield position, aggregate_type, aggregate_id, bytes(body or b"")
    except sqlite3.Error as e:
        raise Unreadable(f"{path}: {e}") from e


class Nats:
    """Just enough of the NATS client protocol for JetStream requests."""

    def __init__(self, url):
        parsed = urllib.parse.urlparse(url if "://" in url else f"nats://{url}")
        try:
            self.sock = socket.create_connection(
                (parsed.hostname or "127.0.0.1", parsed.port or 4222), timeout=10
            )
        except OSError as e:
            raise Unreadable(f"{url}: {e}") from e
        self.buf = b""
        self.next_id = 0
        self.answers = {}
        # Answers come only to this run's own inbox.
        self.inbox = f"_INBOX.{secrets.token_hex(12)}"
        info = self.line()
        if b'"tls_required":true' in info.replace(b" ", b""):
            raise Unreadable(f"{url}: the server requires TLS, which this script does not speak")
        options = {"verbose": False, "pedantic": False, "headers": True,
                   "no_responders": True, "protocol": 1, "name": "sems-verify-log"}
        if parsed.username and parsed.password is None:
            options["auth_token"] = urllib.parse.unquote(parsed.username)
        elif parsed.username:
            options.update(user=urllib.parse.unquote(parsed.username),
                           **{"pass": urllib.parse.unquote(parsed.password)})
        self.send(f"CONNECT {json.dumps(options)}\r\nPING\r\n".encode())
        while True:
            line = self.line()
            if line == b"PONG":
                break
            if line.startswith(b"-ERR"):
                raise Unreadable(f"{url}: {line.decode(errors='replace')}")
        self.send(f"SUB {self.inbox}.* 1\r\n".encode())

    def send(self, data):
        self.sock.sendall(data)

    def fill(self):
        chunk = self.sock.recv(1 << 20)
        if not chunk:
            raise Unreadable("the server closed the connection")
        self.buf += chunk

    def line(self):
        while b"\r\n" not in self.buf:
            self.fill()
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def take(self, n):
        while len(self.buf) < n + 2:
            self.fill()
        data, self.buf = self.buf[:n], self.buf[n + 2:]
        return data

    def ask(self, subject, payload):
        """Sends a request; returns the token its answer will carry (see `answer`)."""
        self.next_id += 1
        token = str(self.next_id)
        self.send(f"PUB {subject} {self.inbox}.{token} {len(payload)}\r\n".encode()
                  + payload + b"\r\n")
        return token

    def answer(self, token):
        """(headers, body) of the answer to the request `token`; answers to other requests
        of this run that arrive first are kept for their turn."""
        while token not in self.answers:
            line = self.line()
            if line == b"PING":
                self.send(b"PONG\r\n")
                continue
            if line.startswith(b"-ERR"):
                raise Unreadable(line.decode(errors="replace"))
            parts = line.split()
            if parts[0] == b"MSG":
                data = self.take(int(parts[-1]))
                headers_len = 0
            elif parts[0] == b"HMSG":
                headers_len, total = int(parts[-2]), int(parts[-1])
                data = self.take(total)
            else:
                continue
            subject = parts[1].decode()
            if not subject.startswith(f"{self.inbox}."):
                raise Unreadable(f"an answer came to {subject}, not to this run's inbox")
            headers = parse_headers(data[:headers_len])
            if headers["status"].startswith("503"):
                raise Unreadable("no responder: is JetStream enabled, and the API prefix right?")
            self.answers[subject[len(self.inbox) + 1:]] = (headers, data[headers_len:])
        return self.answers.pop(token)

    def request(self, subject, payload):
        """Sends a request and returns (headers, body) of its answer."""
        return self.answer(self.ask(subject, payload))


def parse_headers(block):
    """The status line and the headers of a NATS header block."""
    if not block:
        return {"status": ""}
    lines = block.decode("utf-8", errors="replace").split("\r\n")
    headers = {"status": lines[0][len("NATS/1.0"):].strip()}
    for line in lines[1:]:
        if ":" in line:
            name, value = line.split(":", 1)
            headers[name.strip().lower()] = value.strip()
    return headers


def commits_from_nats(url, stream, api="$JS.API"):
    """(position, aggregate_type, aggregate_id, body) of every message, in stream order,
    asked of the JetStream API at `api` (another prefix where an account imports it)."""
    nats = Nats(url)
    _, info = nats.request(f"{api}.STREAM.INFO.{stream}", b"")
    info = json.loads(info)
    if "error" in info:
        raise Unreadable(f"stream {stream}: {info['error'].get('description')}")
    state = info["state"]
    first, last = state["first_seq"], state["last_seq"]
    if state["messages"] == 0:
        if last > 0:
            yield last, None, "start", None  # it held positions 1 to last, and holds none
        return
    if first != 1:
        yield first - 1, None, "start", None  # positions 1 to first - 1 are gone
    # Up to WINDOW direct gets in flight, answered in any order, read in position order.
    tokens = {}
    sent = first
    get = f"{api}.DIRECT.GET.{stream}"
    for sequence in range(first, last + 1):
        while sent <= last and sent < sequence + WINDOW:
            tokens[sent] = nats.ask(get, json.dumps({"seq": sent}).encode())
            sent += 1
        headers, body = nats.answer(tokens.pop(sequence))
        for _ in range(4):
            # Any replica answers a direct get; one that lags may not have it yet.
            if not headers["status"].startswith("404"):
                break
            time.sleep(0.2)
            headers, body = nats.request(get, json.dumps({"seq": sequence}).encode())
        if headers["status"].startswith("404"):
            yield sequence, None, None, None  # this position is gone
            continue
        if headers["status"]:
            raise Unreadable(f"position {sequence}: {headers['status']}")
        if (headers.get("nats-stream"), headers.get("nats-sequence")) != (stream, str(sequence)):
            raise Unreadable(f"position {sequence}: the answer is for another message")
        subject = headers.get("nats-subject", "")
        parts = subject.split(".")
        if len(parts) == 4 and parts[0] == "sems" and parts[1] == "ev":
            yield sequence, parts[2], parts[3], body
        else:
            yield sequence, f"(subject {subject})", "", body


def no_repeated_keys(pairs):
    """A JSON object's members, refusing a key given twice (readers would disagree on it)."""
    keys = [k for k, _ in pairs]
    repeated = {k for k in keys if keys.count(k) > 1}
    if repeated:
        raise ValueError(f"the key {sorted(repeated)[0]!r} appears twice")
    return dict(pairs)


def no_constant(name):
    raise ValueError(f"{name} is not JSON")


def parse_envelope(body):
    """The body as the JSON object it must be, parsed strictly."""
    text = body.decode("utf-8")  # UnicodeDecodeError is a ValueError
    envelope = json.loads(text, object_pairs_hook=no_repeated_keys, parse_constant=no_constant)
    if not isinstance(envelope, dict):
        raise ValueError("not a JSON object")
    return envelope


def canonical_uuid(text):
    try:
        return str(uuid.UUID(text)) == text
    except (TypeError, ValueError, AttributeError):
        return False


def verify(commits, digest_at=None):
    """Checks the commits; returns (problems, commits, aggregates, digest, last position,
    the digest up to position `digest_at` when the log reaches it)."""
    problems = []
    digest_then = None
    heads = {}  # (type, id) -> (hash of its last commit, its version, its position)
    digest = hashlib.sha256()
    expected_position = 1
    count = 0
    last = 0
    for position, aggregate_type, aggregate_id, body in commits:
        if body is None:  # positions the log says it had, and no longer has
            if aggregate_id == "start":
                problems.append(f"positions 1 to {position}: missing (the log starts later)")
            else:
                problems.append(f"position {position}: missing")
            expected_position = position + 1
            continue
        count += 1
        last = position
        if position < expected_position:
            problems.append(f"position {position}: appears again, or out of order")
        elif position != expected_position:
            problems.append(f"positions {expected_position} to {position - 1}: missing")
        expected_position = position + 1
        digest_hash = hashlib.sha256(body).hexdigest()
        digest.update(f"{position} {digest_hash}\n".encode())
        if position == digest_at:
            digest_then = digest.hexdigest()
        where = f"position {position}"
        try:
            envelope = parse_envelope(body)
        except ValueError as e:
            problems.append(f"{where}: the body is not a JSON object as written ({e})")
            continue
        if aggregate_type not in AGGREGATE_TYPES or not canonical_uuid(aggregate_id):
            problems.append(
                f"{where}: stored as {aggregate_type} {aggregate_id}, which is not an "
                f"aggregate type of EVENTS.md with a lowercase UUID"
            )
        if (envelope.get("aggregate_type"), envelope.get("aggregate_id")) != (
            aggregate_type, aggregate_id
        ):
            problems.append(
                f"{where}: the body names {envelope.get('aggregate_type')} "
                f"{envelope.get('aggregate_id')}, stored as {aggregate_type} {aggregate_id}"
            )
        key = (aggregate_type, aggregate_id)
        previous_hash, previous_version, previous = heads.get(key, (ZEROS, 0, None))
        if envelope.get("prev_hash") != previous_hash:
            if previous is None:
                problems.append(
                    f"{where}: the first commit of {aggregate_type} {aggregate_id} has "
                    f"prev_hash {envelope.get('prev_hash')}, not 64 zeros (its earlier "
                    f"commits are gone, or it was altered)"
                )
            else:
                problems.append(
                    f"{where}: prev_hash {envelope.get('prev_hash')} is not {previous_hash}, "
                    f"the hash of position {previous} (the previous commit of "
                    f"{aggregate_type} {aggregate_id}) as stored: one of the two was altered"
                )
        events = envelope.get("events")
        version = envelope.get("aggregate_version")
        if (not isinstance(events, list) or type(version) is not int
                or version != previous_version + len(events)):
            problems.append(
                f"{where}: aggregate_version {version} after {previous_version} does not "
                f"count the commit's {len(events) if isinstance(events, list) else '?'} events"
            )
        version = version if type(version) is int else previous_version
        heads[key] = (digest_hash, version, position)
    return problems, count, len(heads), digest.hexdigest(), last, digest_then


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--nats", metavar="URL", help="NATS server, e.g. nats://127.0.0.1:4222")
    source.add_argument("--sqlite", metavar="FILE", help="the embedded log, <data dir>/events.db")
    parser.add_argument("--stream", default="SEMS", help="JetStream stream (default SEMS)")
    parser.add_argument("--api-prefix", default="$JS.API", metavar="PREFIX",
                        help="where the JetStream API is asked (default $JS.API; AUDIT.API for "
                             "the auditor account of deploy/nats/nats-server.conf)")
    parser.add_argument("--expect-digest", metavar="POSITION:DIGEST",
                        help="a digest recorded earlier, to compare with")
    args = parser.parse_args()
    expect = None
    if args.expect_digest:
        position, _, value = args.expect_digest.partition(":")
        hex_digits = set("0123456789abcdef")
        if (not position.isascii() or not position.isdecimal() or int(position) == 0
                or len(value) != 64 or not set(value.lower()) <= hex_digits):
            parser.error("--expect-digest: expected POSITION:DIGEST, a position from 1 and "
                         "64 hex characters")
        expect = (int(position), value.lower())
    try:
        if args.sqlite:
            commits = commits_from_sqlite(args.sqlite)
        else:
            commits = commits_from_nats(args.nats, args.stream, args.api_prefix)
        problems, count, aggregates, digest, last, then = verify(
            commits, expect[0] if expect else None
        )
    except Unreadable as e:
        print(f"verify-log: cannot read the log: {e}", file=sys.stderr)
        return 2
    except Exception as e:  # noqa: BLE001 - whatever stops the reading is not a finding
        print(f"verify-log: cannot read the log: {type(e).__name__}: {e}", file=sys.stderr)
        return 2
    if expect and then is None:
        problems.append(f"the log ends at position {last}, before the recorded {expect[0]}")
    elif expect and then != expect[1]:
        problems.append(
            f"the digest up to position {expect[0]} is {then}, not the recorded {expect[1]}"
        )
    if count == 0 and not problems:
        print("warning: the log is empty", file=sys.stderr)
    for problem in problems:
        print(f"TAMPERED: {problem}")
    state = "tampered" if problems else "intact"
    print(f"{count} commits of {aggregates} aggregates, up to position {last}: {state}")
    print(f"digest {last}:{digest}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())

"""A raw-request fuzzer for Hearth's HTTPS server: it speaks HTTP/1.1 over TLS byte by byte, so
it can send what no HTTP library would (duplicate, oversized, signed and garbage header values,
broken request lines), to every route outside the API schema: the update repository (/tuf/...),
/.well-known/..., pages, and the API's headers.

Usage: http_fuzz.py HOST PORT CAFILE IMAGE_PATH --seconds N --seed S
Prints one summary line; exits 1 if any answer was a 5xx (other than 503 with Retry-After) or
the server stopped answering /healthz.
"""
import argparse
import random
import socket
import ssl
import sys
import time

EXTREMES = [
    "-1", "0", "-0", "9223372036854775807", "9223372036854775808", "-9223372036854775808", "18446744073709551616",
    "9" * 100, "", " ", "1e9", "0x10", "+1", "1.5", "NaN", "\u0661", "%00", "1,2", "-", "=", "bytes", "*",
]


# Requests that once got a 5xx or worse, sent first on every run.
REGRESSIONS = [
    # Range with a sign: an arithmetic overflow that killed the process (issue 12).
    "GET {image} HTTP/1.1\r\nHost: {host}\r\nRange: bytes=-9223372036854775807-\r\nConnection: close\r\n\r\n",
    # A body that is not the chunked encoding it claims: 500 before the body reader mapped it to 400.
    "POST /security/status HTTP/1.1\r\nHost: {host}\r\nTransfer-Encoding: gzip, chunked\r\n"
    "Content-Type: application/x-www-form-urlencoded\r\nConnection: close\r\n\r\n{{\"email\":\"a@b.c\"}}",
    "POST /api/v1/sessions HTTP/1.1\r\nHost: {host}\r\nTransfer-Encoding: chunked\r\nContent-Type: application/json\r\n"
    "Connection: close\r\n\r\nzz\r\n{{}}\r\n0\r\n\r\n",
] + [
    # Content-Length extremes on a JSON route: a 4xx or a close, never a 5xx.
    "POST /api/v1/sessions HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nContent-Length: " + n
    + "\r\nConnection: close\r\n\r\n{{}}"
    for n in ["-1", "18446744073709551616", "99999999999999999999999", "9223372036854775807", "abc", "1, 2", "2, 2"]
]


def ranges(rng):
    n = rng.choice(EXTREMES)
    m = rng.choice(EXTREMES)
    return rng.choice([
        f"bytes={n}-", f"bytes=-{n}-", f"bytes={n}-{m}", f"bytes=-{n}", f"bytes={n}-,{m}-", f"Bytes={n}-", f"bytes ={n}-",
        f"bytes={n}", f"items={n}-", "bytes=" + ",".join(f"{i}-" for i in range(rng.randint(1, 300))), f"bytes={n}-" * rng.randint(1, 50),
    ])


def request(rng, host, image):
    # The served image a third of the time: its Range handling once killed the process.
    path = image if rng.random() < 0.33 else rng.choice([
        image, "/tuf/targets/" + "0" * 64 + ".x.img", "/tuf/metadata/timestamp.json", "/tuf/metadata/1.root.json",
        "/tuf/metadata/" + rng.choice(EXTREMES) + ".root.json", "/.well-known/security.txt", "/.well-known/csaf/provider-metadata.json",
        "/.well-known/csaf/white/index.txt", "/security/report", "/security/status", "/", "/sign-in", "/devices", "/healthz",
        "/api/v1/models", "/api/v1/advisories", "/api/v1/devices/X/telemetry?limit=" + rng.choice(EXTREMES) + "&after=" + rng.choice(EXTREMES),
        "/api/v1/devices/X/telemetry?from=" + rng.choice(EXTREMES) + "&to=99999-01-01T00:00:00Z", "/%2e%2e/%2e%2e/etc/passwd", "/" + "a" * 5000,
        "/tuf/targets/../../hearth.sqlite", "/api/v1/sessions",
    ])
    method = rng.choice(["GET", "GET", "GET", "GET", "GET", "POST", "HEAD", "PUT", "DELETE", "OPTIONS", "TRACE", "BREW", "G\x00T"])
    bad_hosts = ["evil.example", "", host + ":" + rng.choice(EXTREMES), "[::1", host + "\t", "%s:1:2" % host]
    headers = [("Host", host if rng.random() < 0.8 else rng.choice(bad_hosts))]
    for _ in range(rng.randint(0, 6)):
        name = rng.choice(["Range", "Range", "Range", "Content-Length", "Content-Type", "Authorization", "Cookie", "Origin", "Transfer-Encoding", "If-Range", "X-Forwarded-For", "Accept-Encoding"])
        value = {
            "Range": ranges(rng),
            "Content-Length": rng.choice(EXTREMES),
            "Content-Type": rng.choice(["application/json", "application/jsonx", "application/json; charset=utf-16", "application/x-www-form-urlencoded", "text/plain", "", "multipart/form-data; boundary=" + "x" * 200]),
            "Authorization": rng.choice(["Bearer ", "Bearer " + "A" * 43, "Bearer " + "A" * 5000, "Basic YWRtaW46YWRtaW4=", "Bearer \u00ff"]),
            "Cookie": rng.choice(["__Host-hearth_session=" + "A" * 43, "__Host-hearth_session=", "a=" * 500]),
            "Origin": rng.choice(["null", "https://evil.example", "https://" + host, ""]),
            "Transfer-Encoding": rng.choice(["chunked", "gzip, chunked", "identity", "chunked, chunked"]),
        }.get(name, rng.choice(EXTREMES))
        headers.append((name, value))
    body = b""
    if method == "POST" and rng.random() < 0.7:
        body = rng.choice([b"{}", b'{"email":"a@b.c","password":"x"}', b"\xff\xfe", b"{" * 10000, b"email=a&password=b", bytes(rng.randrange(256) for _ in range(rng.randint(0, 2000)))])
        if not any(n == "Content-Length" for n, _ in headers) and not any(n == "Transfer-Encoding" for n, _ in headers):
            headers.append(("Content-Length", str(len(body))))
    line = f"{method} {path} HTTP/1.1"
    if rng.random() < 0.05:
        line = rng.choice([f"{method} {path}", f"{method}  {path} HTTP/1.1", f"{method} {path} HTTP/9.9", f"{method} {path} HTTP/1.1 extra", "\x00\x01\x02"])
    text = line + "\r\n" + "".join(f"{n}: {v}\r\n" for n, v in headers) + "Connection: close\r\n\r\n"
    return text.encode("utf-8", "surrogateescape") + body


def send(context, host, port, data, timeout=10):
    """The status code of the answer, 0 if the server closed without one."""
    with socket.create_connection((host, port), timeout=timeout) as raw:
        with context.wrap_socket(raw, server_hostname=host) as tls:
            tls.sendall(data)
            answer = b""
            try:
                while b"\r\n" not in answer:
                    chunk = tls.recv(4096)
                    if not chunk:
                        break
                    answer += chunk
            except (ssl.SSLError, ConnectionResetError):
                pass
    first = answer.split(b"\r\n", 1)[0].split(b" ")
    status = int(first[1]) if len(first) > 1 and first[1].isdigit() else 0
    return status, answer


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("host")
    parser.add_argument("port", type=int)
    parser.add_argument("cafile")
    parser.add_argument("image")
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    context = ssl.create_default_context(cafile=args.cafile)
    health = f"GET /healthz HTTP/1.1\r\nHost: {args.host}\r\nConnection: close\r\n\r\n".encode()
    deadline = time.monotonic() + args.seconds
    sent, statuses, failures = 0, {}, []
    fixed = [r.format(host=args.host, image=args.image).encode() for r in REGRESSIONS]
    while time.monotonic() < deadline and sent < 100_000:
        data = fixed[sent] if sent < len(fixed) else request(rng, args.host, args.image)
        try:
            status, answer = send(context, args.host, args.port, data)
        except (ssl.SSLError, OSError) as error:
            status, answer = 0, str(error).encode()
        sent += 1
        statuses[status] = statuses.get(status, 0) + 1
        if status >= 500 and not (status == 503 and b"retry-after" in answer.lower()):
            failures.append((data[:300], answer[:300]))
        if sent % 25 == 0:
            alive, _ = send(context, args.host, args.port, health)
            if alive != 200:
                failures.append((b"after request " + str(sent).encode(), b"/healthz answered %d" % alive))
                break
    alive, _ = send(context, args.host, args.port, health)
    summary = " ".join(f"{k}:{v}" for k, v in sorted(statuses.items()))
    print(f"http_fuzz: {sent} requests, statuses {summary}, healthz {alive}, {len(failures)} failures", flush=True)
    for request_bytes, answer in failures[:5]:
        print("FAILED", request_bytes, "->", answer)
    sys.exit(0 if not failures and alive == 200 else 1)


if __name__ == "__main__":
    main()

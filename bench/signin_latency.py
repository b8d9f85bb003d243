"""Sign-in latency over one keep-alive HTTPS connection, and the raw scrypt time as the reference."""
import hashlib, os, statistics, sys, time
import requests

base, ca, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
s = requests.Session()
s.trust_env = False  # REQUESTS_CA_BUNDLE would override the deployment root CA
s.verify = ca
creds = {"email": "bench@example.com", "password": "a long benchmark passphrase"}
r = s.post(base + "/api/v1/accounts", json=creds)
assert r.status_code == 201, r.text
times = []
for _ in range(n):
    t = time.perf_counter()
    r = s.post(base + "/api/v1/sessions", json=creds)
    times.append((time.perf_counter() - t) * 1000)
    assert r.status_code == 201, r.text
times.sort()
p50, p99 = statistics.median(times), times[int(len(times) * 0.99) - 1]
ref = []
for _ in range(20):
    t = time.perf_counter()
    hashlib.scrypt(b"a long benchmark passphrase", salt=os.urandom(16), n=1 << 16, r=8, p=1, maxmem=80 * 1024 * 1024, dklen=32)
    ref.append((time.perf_counter() - t) * 1000)
ref50 = statistics.median(ref)
print(f"sign-in over HTTPS, {n} sequential: p50 {p50:.1f} ms, p99 {p99:.1f} ms")
print(f"-- reference: hashlib.scrypt (OpenSSL) alone, same parameters: median {ref50:.1f} ms; sign-in p50 / scrypt = {p50 / ref50:.2f}")

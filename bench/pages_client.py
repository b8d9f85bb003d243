"""Times sequential HTTPS requests over one keep-alive connection (the page benchmarks).
Usage: pages_client.py BASE CA COOKIE N PATH...   Prints p50/p99 per path, in milliseconds."""
import http.client
import ssl
import sys
import time
from urllib.parse import urlparse

base, ca, cookie, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
url = urlparse(base)
context = ssl.create_default_context(cafile=ca)
connection = http.client.HTTPSConnection(url.hostname, url.port, context=context)
for path in sys.argv[5:]:
    times = []
    size = 0
    for i in range(n + 20):
        start = time.perf_counter()
        connection.request("GET", path, headers={"Cookie": cookie} if cookie else {})
        response = connection.getresponse()
        body = response.read()
        elapsed = (time.perf_counter() - start) * 1000
        if response.status != 200:
            sys.exit(f"{path}: HTTP {response.status}: {body[:200]!r}")
        if i >= 20:  # the first 20 warm the connection and the caches
            times.append(elapsed)
            size = len(body)
    times.sort()
    print(f"{path}: p50 {times[len(times) // 2]:.1f} ms, p99 {times[int(len(times) * 0.99) - 1]:.1f} ms ({n} requests, {size} bytes)")

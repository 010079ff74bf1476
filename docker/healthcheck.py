"""The image's HEALTHCHECK: exit 0 when the node in this container answers GET /livez with 200, else 1.

The node listens on REPLOG_PORT (the image sets 8000); the probe goes to loopback, whatever REPLOG_HOST.
Only the standard library: the image has no curl.
"""

import os
import sys
import urllib.request

url = f"http://127.0.0.1:{os.environ.get('REPLOG_PORT', '8000')}/livez"
try:
    with urllib.request.urlopen(url, timeout=3) as resp:
        alive = resp.status == 200
except OSError as exc:  # refused, timed out, or an HTTP error status
    print(f"{url}: {exc}", file=sys.stderr)
    alive = False
sys.exit(0 if alive else 1)

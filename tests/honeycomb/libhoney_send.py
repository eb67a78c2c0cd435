"""Sends a few events with Honeycomb's own Python library, libhoney, so a test can compare its
requests with waggle's. Usage: libhoney_send.py <api_host> <writekey> <dataset>"""

import sys

import libhoney


def main() -> None:
    api_host, writekey, dataset = sys.argv[1:4]
    client = libhoney.Client(writekey=writekey, dataset=dataset, api_host=api_host)
    for i in range(3):
        ev = client.new_event()
        ev.add({"service.name": "reviews", "duration_ms": 1.5 + i, "http.status_code": 200, "error": False})
        ev.send()
    client.flush()
    failures = []
    for _ in range(3):
        resp = client.responses().get(timeout=10)
        if resp.get("status_code") not in (200, 202):
            failures.append(resp)
    client.close()
    if failures:
        sys.exit(f"libhoney reported failures: {failures}")


if __name__ == "__main__":
    main()

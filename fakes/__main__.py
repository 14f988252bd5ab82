"""Serve every fake on one port: ``python -m fakes --port 8001``."""

import argparse
import time

from fakes.app import build_fakes
from fakes.server import serve_in_thread


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001)
    parser.add_argument(
        "--public-url", help="where a browser reaches this server, if not where the service does (compose: http://localhost:8001)"
    )
    args = parser.parse_args()
    server = serve_in_thread(build_fakes(public_url=args.public_url or f"http://{args.host}:{args.port}"), host=args.host, port=args.port)
    print(f"fakes listening on {server.base_url}", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        server.stop()


if __name__ == "__main__":
    main()

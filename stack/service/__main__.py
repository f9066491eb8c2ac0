"""``python -m opsready_stack.service --dir DIR --port P``: run the reference service."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import uvicorn

from opsready_stack.service.app import create_app, load_settings


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m opsready_stack.service")
    parser.add_argument("--dir", type=Path, required=True, help="the stack directory (state.json)")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    # One INFO line per webhook delivery would drown the log.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    app = create_app(load_settings(args.dir))
    # No access log: Prometheus scrapes every second and the log would only grow.
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", access_log=False,
                lifespan="on")


if __name__ == "__main__":
    main()

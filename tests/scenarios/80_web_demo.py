#!/usr/bin/python3
"""The web demo (/demo) and the API docs (/docs) in headless Chromium.

Starts parley-rest and parley-broker (echo assistant) on free loopback ports with a
temporary database, then runs tests/web/demo.test.mjs (playwright-core driving Debian's
/usr/bin/chromium); see tests/lib/web_support.py. Screenshots go to tests/output/web/.
"""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
import parley  # noqa: E402
import web_support  # noqa: E402

NODE_TIMEOUT_S = 80


def main(t):
    web_support.run_browser_test(t, "demo.test.mjs", NODE_TIMEOUT_S)


if __name__ == "__main__":
    parley.run(main)

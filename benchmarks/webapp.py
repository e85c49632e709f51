"""How fast app.py's page is on the bundled model, in a real headless Chromium (Debian's chromium,
driven by Playwright): the server's start, the page's load, and for one animation of the bundled
samples the time from the click to the first animated frame (the progress bar's first frame count)
and to the result video in the page.

    python benchmarks/webapp.py                 # 3 rounds; --rounds N, --chromium PATH
"""
import argparse
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def start_server(log_path):
    """(process, url, seconds until it said it serves)."""
    port = free_port()
    log = open(log_path, 'w+')
    start = time.perf_counter()
    process = subprocess.Popen([sys.executable, 'app.py', '--port', str(port), '--cpu'], cwd=REPO, stdout=log,
                               stderr=subprocess.STDOUT, env={**os.environ, 'PYTHONUNBUFFERED': '1'},
                               start_new_session=True)
    url = f'http://127.0.0.1:{port}/'
    while True:
        log.seek(0)
        if f'serving on {url}' in log.read():
            return process, url, time.perf_counter() - start
        if process.poll() is not None:
            log.seek(0)
            sys.exit(f'app.py did not start:\n{log.read()[-2000:]}')
        time.sleep(0.05)


def one_round(browser, url):
    """(page load, click to first frame, click to result) in seconds."""
    page = browser.new_page(viewport={'width': 1280, 'height': 1000})
    start = time.perf_counter()
    page.goto(url)
    page.wait_for_selector('#animate_button', state='visible')
    load = time.perf_counter() - start
    page.click('#samples_button')
    page.wait_for_selector('#driving_video video')
    page.click('#animate_button')
    start = time.perf_counter()
    first = None
    while not page.locator('#result_video video[src]').count():
        if first is None and re.search(r'\b[1-9]\d*/\d+ frame', page.locator('#result_video').inner_text()):
            first = time.perf_counter() - start
        time.sleep(0.02)
    result = time.perf_counter() - start
    page.close()
    return load, first if first is not None else result, result


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--rounds', type=int, default=3)
    parser.add_argument('--chromium', default=os.environ.get('CHROMIUM') or shutil.which('chromium'))
    args = parser.parse_args(argv)
    if not args.chromium:
        sys.exit('no chromium found: apt-get install chromium, or --chromium PATH')
    from playwright.sync_api import sync_playwright
    work = Path(os.environ.get('TMPDIR', '/tmp'))
    process, url, started = start_server(work / f'webapp-benchmark-{os.getpid()}.log')
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=args.chromium, headless=True,
                                                 args=['--no-sandbox', '--disable-dev-shm-usage', '--disable-gpu'])
            rounds = [one_round(browser, url) for _ in range(args.rounds)]
            browser.close()
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(timeout=30)
    print(f'app.py on the bundled model, {os.cpu_count()} CPUs, {args.rounds} rounds (median; first round in brackets)')
    print(f'| server start (python app.py until it serves) | {started:.2f} s |')
    for i, what in enumerate(('page load (until the Animate button shows)',
                              'click to the first animated frame (progress bar)',
                              'click to the result video in the page (100 frames, 64x64)')):
        values = [r[i] for r in rounds]
        print(f'| {what} | {statistics.median(values):.2f} s ({values[0]:.2f} s) |')
    return 0


if __name__ == '__main__':
    sys.exit(main())

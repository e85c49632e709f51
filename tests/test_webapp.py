"""app.py in a real headless Chromium (Debian's chromium driven by Playwright's Python client): the page
loads offline, animates and swaps parts of the bundled samples, shows the keypoints, shows the
command line's one-line error for a bad upload and goes on serving, and runs two requests submitted
together. Results are downloaded from the page and checked as videos (frame counts from ffmpeg).

Without a browser (or Gradio / Playwright) these tests skip, saying why; with CI set, a missing
browser fails them. APP_SCREENSHOT=docs/app.png keeps the screenshot the first test takes.
"""
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import FIXTURE_DIR, REPO
from toolkit.video_io import count_video_frames

BUNDLED = REPO / 'pretrained' / 'cartoon-64'
DRIVING_FRAMES = count_video_frames(BUNDLED / 'driving.mp4')
BROWSER = os.environ.get('CHROMIUM') or shutil.which('chromium') or shutil.which('chromium-browser')
TIMEOUT = 240_000  # ms: an animation of the 100 sample frames on a busy 2-core CPU


def request_folders(url):
    """The request folders the server at `url` has now (it keeps them under its TMPDIR)."""
    return [p for p in Path(SERVERS[url]).glob('fomm-app-*/requests/request-*')]


SERVERS = {}  # url -> the server's TMPDIR


def missing(reason):
    if os.environ.get('CI'):
        pytest.fail(f'{reason} (CI is set: the browser tests must run; .ci/run installs them)')
    pytest.skip(reason)


def free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


@pytest.fixture(scope='module')
def server(tmp_path_factory):
    """app.py on a free port, offering the bundled model and the test fixture's FOMM checkpoint."""
    for module in ('gradio', 'playwright'):
        try:
            __import__(module)
        except ImportError:
            missing(f'{module} is not installed (pip install -r requirements.txt)')
    models = tmp_path_factory.mktemp('models')
    shutil.copy(FIXTURE_DIR / 'checkpoint.pth.tar', models / 'tiny.pth.tar')
    shutil.copy(FIXTURE_DIR / 'config.yaml', models / 'tiny.yaml')
    port = free_port()
    folder = tmp_path_factory.mktemp('server')
    log = open(folder / 'server.log', 'w+')
    process = subprocess.Popen([sys.executable, 'app.py', '--port', str(port), '--checkpoints', str(models), '--cpu',
                                '--queue_size', '4'], cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
                               env={**os.environ, 'PYTHONUNBUFFERED': '1', 'OMP_NUM_THREADS': '1',
                                    'TMPDIR': str(folder)},  # its temporary folders, for the tests to see
                               start_new_session=True)
    url = f'http://127.0.0.1:{port}/'
    SERVERS[url] = folder
    deadline = time.time() + 120
    while True:
        log.seek(0)
        if f'serving on {url}' in log.read():
            break
        if process.poll() is not None or time.time() > deadline:
            process.kill()
            log.seek(0)
            pytest.fail(f'app.py did not start:\n{log.read()[-3000:]}')
        time.sleep(0.25)
    yield url
    process.send_signal(signal.SIGINT)
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    log.close()


@pytest.fixture(scope='module')
def browser(server):
    if BROWSER is None:
        missing('no chromium browser found (apt-get install chromium)')
    from playwright.sync_api import sync_playwright
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=BROWSER, headless=True,
                                             args=['--no-sandbox', '--disable-dev-shm-usage', '--disable-gpu'])
        yield browser
        browser.close()


def open_page(browser, url, outside=None):
    page = browser.new_page(viewport={'width': 1280, 'height': 1000})
    if outside is not None:
        page.on('request', lambda r: None if r.url.startswith((url, 'data:', 'blob:')) else outside.append(r.url))
    page.goto(url)
    page.wait_for_selector('#animate_button', state='visible', timeout=60_000)
    return page


def download(src, path):
    with urllib.request.urlopen(src, timeout=60) as response, open(path, 'wb') as f:
        assert response.status == 200
        f.write(response.read())
    return path


def result_of(page, selector, path):
    """Waits for the video element of `selector` and downloads it to `path`."""
    src = page.wait_for_selector(f'{selector} video[src]', timeout=TIMEOUT).get_attribute('src')
    return download(src, path)


def use_samples(page, button, source, video):
    page.click(button)
    page.wait_for_selector(f'{source} img', timeout=30_000)
    page.wait_for_selector(f'{video} video', timeout=30_000)


def test_the_page_animates_the_samples_offline(server, browser, tmp_path):
    outside = []
    page = open_page(browser, server, outside)
    use_samples(page, '#samples_button', '#source_image', '#driving_video')
    page.click('#animate_button')
    # the progress bar follows the frames (the library's own progress, as on the command line)
    page.locator('#result_video', has_text=re.compile(rf'[0-9]+/{DRIVING_FRAMES} frame')).wait_for(timeout=TIMEOUT)
    result = result_of(page, '#result_video', tmp_path / 'result.mp4')
    preview = result_of(page, '#preview_video', tmp_path / 'preview.mp4')
    assert count_video_frames(result) == DRIVING_FRAMES  # a playable video with the driving video's frames
    assert count_video_frames(preview) == DRIVING_FRAMES
    page.screenshot(path=str(tmp_path / 'app.png'), full_page=True)
    if os.environ.get('APP_SCREENSHOT'):
        shutil.copy(tmp_path / 'app.png', os.environ['APP_SCREENSHOT'])
    assert outside == []  # nothing but this server: the page works without a network
    page.close()


def test_models_from_the_checkpoints_folder_and_their_modes(server, browser, tmp_path):
    page = open_page(browser, server)
    page.click('#model')
    options = [o.get_attribute('aria-label') for o in page.locator('[role="option"]').all()]
    assert options == ['bundled: cartoon-64 (FOMM, 64x64)', 'tiny.pth.tar (FOMM)']
    page.locator('[role="option"][aria-label="tiny.pth.tar (FOMM)"]').click()
    use_samples(page, '#samples_button', '#source_image', '#driving_video')
    page.click('#animate_button')
    result = result_of(page, '#result_video', tmp_path / 'result.mp4')
    assert count_video_frames(result) == DRIVING_FRAMES
    page.close()


def test_part_swap_in_the_page(server, browser, tmp_path):
    page = open_page(browser, server)
    page.get_by_role('tab', name='Part swap').click()
    use_samples(page, '#swap_samples_button', '#swap_source', '#swap_target')
    assert page.locator('#swap_parts input[type=checkbox]').count() == 8  # the segmenter's parts, background aside
    page.click('#swap_button')
    result = result_of(page, '#swap_result', tmp_path / 'swap.mp4')
    page.close()
    from toolkit.part_swap import swap_parts  # the command line's call with the page's choice: the face
    expected = tmp_path / 'expected.mp4'
    swap_parts(config=str(REPO / 'config' / 'cartoon-64.yaml'), checkpoint=str(BUNDLED / 'cartoon-64.pth.tar'),
               source_image=str(BUNDLED / 'source.png'), target_video=str(BUNDLED / 'driving.mp4'),
               result_video=str(expected), segmentation_checkpoint=str(BUNDLED / 'segmentation.pth.tar'),
               swap_index='face', cpu=True)
    assert result.read_bytes() == expected.read_bytes()
    assert count_video_frames(result) == DRIVING_FRAMES


def test_the_keypoints_view(server, browser, tmp_path):
    page = open_page(browser, server)
    page.get_by_role('tab', name='Keypoints').click()
    use_samples(page, '#kp_samples_button', '#kp_source', '#kp_driving')
    page.click('#kp_button')
    video = result_of(page, '#kp_driving_out', tmp_path / 'keypoints.mp4')
    assert count_video_frames(video) == DRIVING_FRAMES
    assert page.wait_for_selector('#kp_source_out img', timeout=TIMEOUT).get_attribute('src')
    page.close()


def test_an_unreadable_upload_shows_one_line_and_the_server_goes_on(server, browser, tmp_path):
    page = open_page(browser, server)
    broken = tmp_path / 'broken.mp4'
    broken.write_bytes(b'this is not a video' * 100)
    page.locator('#source_image input[type=file]').set_input_files(str(BUNDLED / 'source.png'))
    page.locator('#driving_video input[type=file]').set_input_files(str(broken))
    page.wait_for_selector('#source_image img', timeout=30_000)
    page.click('#animate_button')
    # (the browser's own player says it cannot play it; the server's check names the file)
    toast = page.locator('.toast-body.error', has_text='broken.mp4')
    toast.wait_for(timeout=TIMEOUT)
    text = toast.inner_text()
    assert 'cannot read it as a video' in text and 'Traceback' not in text, text
    page.close()
    # the next request is served
    page = open_page(browser, server)
    use_samples(page, '#samples_button', '#source_image', '#driving_video')
    page.click('#animate_button')
    assert count_video_frames(result_of(page, '#result_video', tmp_path / 'after.mp4')) == DRIVING_FRAMES
    page.close()


def test_two_animations_submitted_together_both_finish(server, browser, tmp_path):
    """Two pages ask at once, with different motion modes; each gets the video the library makes for
    its own request (byte for byte: the same frames through the same encoder)."""
    from toolkit.demo import animate_video
    modes = ('relative', 'standard')
    pages = [open_page(browser, server) for _ in modes]
    for page, mode in zip(pages, modes):
        use_samples(page, '#samples_button', '#source_image', '#driving_video')
        if mode != 'relative':
            page.locator('#mode input').click()
            page.locator(f'[role="option"][aria-label="{mode}"]').click()
    for page in pages:
        page.click('#animate_button')
    results = [result_of(page, '#result_video', tmp_path / f'{mode}.mp4') for page, mode in zip(pages, modes)]
    for result, mode in zip(results, modes):
        expected = tmp_path / f'expected-{mode}.mp4'
        animate_video(config=str(REPO / 'config' / 'cartoon-64.yaml'), checkpoint=str(BUNDLED / 'cartoon-64.pth.tar'),
                      source_image=str(BUNDLED / 'source.png'), driving_video=str(BUNDLED / 'driving.mp4'),
                      result_video=str(expected), preview=None, mode=mode, relative=False, adapt_scale=False, cpu=True)
        assert result.read_bytes() == expected.read_bytes(), mode
    assert results[0].read_bytes() != results[1].read_bytes()
    for page in pages:
        page.close()
    time.sleep(1)  # the clean-up step runs right after the page got its result
    assert request_folders(server) == []  # every request's folder is gone, the failed one's too


def test_the_page_offers_no_api(server):
    with urllib.request.urlopen(server + 'gradio_api/info', timeout=30) as response:
        info = json.loads(response.read())
    assert info['named_endpoints'] == {} and info['unnamed_endpoints'] == {}, info


def run_app(*args):
    return subprocess.run([sys.executable, 'app.py', *map(str, args)], cwd=REPO, capture_output=True, text=True,
                          timeout=120)


def test_a_checkpoints_path_that_is_no_folder_is_one_line(tmp_path):
    from tests.test_train import error_line
    assert '--checkpoints' in error_line(run_app('--checkpoints', tmp_path / 'nowhere'))


def test_a_port_in_use_is_one_line():
    pytest.importorskip('gradio')
    from tests.test_train import error_line
    with socket.socket() as busy:
        busy.bind(('127.0.0.1', 0))
        busy.listen()
        line = error_line(run_app('--port', busy.getsockname()[1]))
    assert 'choose another --port' in line, line


# ----------------------------------------------------------------------------------------------
# The page's jobs without a browser (toolkit.webapp.Jobs)
# ----------------------------------------------------------------------------------------------

@pytest.fixture
def jobs(tmp_path):
    from toolkit.webapp import Jobs, find_models
    models = tmp_path / 'models'
    (models / 'run').mkdir(parents=True)
    shutil.copy(FIXTURE_DIR / 'checkpoint.pth.tar', models / 'run' / '00000009-checkpoint.pth.tar')
    shutil.copy(FIXTURE_DIR / 'config.yaml', models / 'run' / 'vox-tiny.yaml')  # a run folder's layout
    (models / 'stray.pth.tar').write_bytes(b'no config beside it')
    return Jobs(find_models(models), tmp_path / 'work', max_frames=DRIVING_FRAMES)


def test_models_are_found_with_their_configs(jobs):
    assert list(jobs.models) == ['bundled: cartoon-64 (FOMM, 64x64)', 'run/00000009-checkpoint.pth.tar (FOMM)']
    bundled = jobs.models['bundled: cartoon-64 (FOMM, 64x64)']
    assert bundled.modes == ('standard', 'relative') and bundled.part_names[1] == 'face'


def test_the_jobs_limits_and_unknown_models_are_one_line(jobs, tmp_path):
    from modules.errors import InputError
    source, driving = str(BUNDLED / 'source.png'), str(BUNDLED / 'driving.mp4')
    jobs.max_frames = DRIVING_FRAMES - 1
    with pytest.raises(InputError, match=f'at most {DRIVING_FRAMES - 1}'):
        jobs.animate('bundled: cartoon-64 (FOMM, 64x64)', source, driving, 'relative', False, False, False, 0.4, False)
    jobs.max_frames = DRIVING_FRAMES
    with pytest.raises(InputError, match='unknown model'):
        jobs.animate('/etc/passwd', source, driving, 'relative', False, False, False, 0.4, False)
    with pytest.raises(InputError, match='upload a source image'):
        jobs.keypoints('bundled: cartoon-64 (FOMM, 64x64)', None, driving)
    assert list((tmp_path / 'work').iterdir()) == []  # failed requests leave no folder
    jobs.cleanup('/')  # only its own request folders are ever removed
    assert Path('/').exists()


def test_part_swap_with_an_uploaded_mask(jobs, tmp_path):
    from toolkit.part_swap import swap_parts
    result, folder = jobs.swap('bundled: cartoon-64 (FOMM, 64x64)', str(BUNDLED / 'source.png'),
                               str(BUNDLED / 'driving.mp4'), ['face', 'hair'], str(BUNDLED / 'source-mask.png'))
    expected = tmp_path / 'expected.mp4'  # the command line with the mask and the parts' labels 1 and 2
    swap_parts(config=str(REPO / 'config' / 'cartoon-64.yaml'), checkpoint=str(BUNDLED / 'cartoon-64.pth.tar'),
               source_image=str(BUNDLED / 'source.png'), target_video=str(BUNDLED / 'driving.mp4'),
               result_video=str(expected), source_mask=str(BUNDLED / 'source-mask.png'), swap_index='1,2', cpu=True)
    assert Path(result).read_bytes() == expected.read_bytes()
    jobs.cleanup(folder)
    assert not Path(folder).exists()

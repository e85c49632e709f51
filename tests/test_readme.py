"""README.md and docs/*.md: the README stays short, its quick start is the two commands of .ci/run,
every relative link points at a file that exists, and every README command that needs only the
bundled files is run by a named test (or is listed, with the reason, as not run by any test)."""
import re
import shlex
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
README = REPO / 'README.md'
DOCS = sorted((REPO / 'docs').glob('*.md'))

MAX_README_LINES = 320
QUICK_START = ('pip install -r requirements.txt && python demo.py',
               'pip install -r requirements.txt && python -m pytest -q')
QUICK_START_WITHIN = 40  # the quick start's code block starts within this many lines of the top

# README commands that need only the repository's own files, each with the test that runs it or its
# exact equivalent (the same script and arguments; output paths and --cpu may differ).
TESTED = {
    'python demo.py':
        'tests/test_bundled_model.py::test_bare_demo_animates_the_bundled_samples',
    'python app.py':
        'tests/test_webapp.py::test_the_page_animates_the_samples_offline',
    'python part_swap.py --config config/cartoon-64.yaml --checkpoint pretrained/cartoon-64/cartoon-64.pth.tar '
    '--source_image pretrained/cartoon-64/source.png --target_video pretrained/cartoon-64/driving.mp4 '
    '--source_mask pretrained/cartoon-64/source-mask.png --swap_index 1,3,4,5,6 --preview swap.gif':
        'tests/test_part_swap.py::test_cli_with_the_bundled_source_mask_target_masks_and_a_segmenter_hook',
    # the `quality` fixture calls cartoon_quality.evaluate with the command line's defaults
    'python benchmarks/cartoon_quality.py':
        'tests/test_bundled_model.py::test_the_model_card_numbers_are_the_checkpoint_s',
}

# README commands that need only the repository's own files but that no test runs as written.
# Keep this list short: a new README command of this kind should come with a test.
UNTESTED = {
    'python cartoon_faces.py --out data/cartoon --videos 400 --frames 64 --size 64 --seed 0 --test_videos 40':
        'the tests call cartoon_faces.generate() on small datasets (tests/test_cartoon_faces.py) and run the '
        'command line only with bad arguments',
    'python run.py --config config/cartoon-64.yaml --mode train_segmentation --cpu':
        'tests/test_segmentation.py::test_train_segmentation_end_to_end_and_part_swap_with_it runs this mode on '
        'a 6-video dataset with a shortened copy of the config',
    'python benchmarks/animate.py':
        'no test runs the benchmark',
}
MAX_UNTESTED = 3

# the test suite itself: .ci/run runs it
NOT_TOOLS = {'python -m pytest -q'}

# options whose value is an input file; such a command needs only the repository's own files when
# every input lies in one of BUNDLED_DIRS
INPUT_OPTIONS = {'--config', '--checkpoint', '--init', '--source_image', '--driving_video', '--target_video',
                 '--source_mask', '--target_masks', '--segmentation_checkpoint', '--segmenter', '--inp',
                 '--checkpoints'}
BUNDLED_DIRS = {'pretrained', 'config'}
# datasets the README's own commands generate (cartoon_faces.py)
GENERATED_DATA = {'data/cartoon'}


def fenced_blocks(text):
    """[(line number of the opening fence, language, [lines inside])] of the ``` blocks of a Markdown
    text."""
    blocks, inside, start, language = [], None, 0, ''
    for number, line in enumerate(text.splitlines(), 1):
        if line.lstrip().startswith('```'):
            if inside is None:
                inside, start, language = [], number, line.strip()[3:].strip()
            else:
                blocks.append((start, language, inside))
                inside = None
        elif inside is not None:
            inside.append(line)
    assert inside is None, f'unclosed code block at line {start}'
    return blocks


SHELL_BLOCKS = {'', 'bash', 'sh', 'shell', 'console'}


def without_comment(line):
    return re.split(r'\s#', line, maxsplit=1)[0].rstrip()


def shell_commands(lines):
    """The commands of a shell code block: continuation lines joined, comments dropped, split at &&,
    each as a tuple of words."""
    joined, current = [], ''
    for line in lines:
        if line.rstrip().endswith('\\'):
            current += line.rstrip()[:-1] + ' '
        else:
            joined.append(current + line)
            current = ''
    commands = []
    for line in joined:
        try:
            words = shlex.split(line, comments=True)
        except ValueError:  # not shell (an unbalanced quote): plain words
            words = without_comment(line).split()
        while words:
            end = words.index('&&') if '&&' in words else len(words)
            commands.append(tuple(words[:end]))
            words = words[end + 1:]
    return commands


def python_commands(text):
    """Every command that starts with `python ` in the fenced shell code blocks, words joined by one
    space."""
    return [' '.join(words) for _, language, lines in fenced_blocks(text) if language in SHELL_BLOCKS
            for words in shell_commands(lines) if words and words[0] == 'python']


def needs_user_files(command):
    """True if the command reads a file the repository does not have (a published checkpoint, your
    video, a run folder) or a dataset the README's commands do not generate."""
    words = command.split(' ')
    if any('...' in w or '<' in w or '>' in w for w in words):
        return True
    for option, value in zip(words, words[1:]):
        if option in INPUT_OPTIONS:
            path = REPO / value.split(':')[0]
            if Path(value).parts[0] not in BUNDLED_DIRS or not path.exists():
                return True
    if words[1] == 'evaluate.py':  # its two positional arguments are inputs
        inputs = [w for i, w in enumerate(words[2:], 2) if not w.startswith('--') and not words[i - 1].startswith('--')]
        if any(Path(w).parts[0] not in BUNDLED_DIRS or not (REPO / w).exists() for w in inputs):
            return True
    if words[1] == 'run.py':
        config = yaml.safe_load((REPO / words[words.index('--config') + 1]).read_text())
        if config['dataset_params']['root_dir'] not in GENERATED_DATA:
            return True
    return False


def bundled_only_commands():
    return [c for c in python_commands(README.read_text()) if c not in NOT_TOOLS and not needs_user_files(c)]


def test_readme_is_short():
    lines = len(README.read_text().splitlines())
    assert lines <= MAX_README_LINES, f'README.md has {lines} lines; move details into docs/'


def test_quick_start_is_the_two_commands_near_the_top():
    start, _, lines = fenced_blocks(README.read_text())[0]
    assert start <= QUICK_START_WITHIN, f'the first code block starts at line {start}'
    assert tuple(without_comment(line) for line in lines if line.strip()) == QUICK_START


def outside_code_blocks(text):
    kept, inside = [], False
    for line in text.splitlines():
        if line.lstrip().startswith('```'):
            inside = not inside
        elif not inside:
            kept.append(line)
    return '\n'.join(kept)


def relative_links(path):
    """Targets of the Markdown links and images (and HTML src/href) of a file, outside code."""
    text = outside_code_blocks(path.read_text())
    text = re.sub(r'`[^`\n]*`', '', text)
    targets = re.findall(r'\]\(\s*<?([^)\s>]+)>?(?:\s+"[^"]*")?\s*\)', text)
    targets += re.findall(r'<(?:img|a)\b[^>]*\b(?:src|href)="([^"]+)"', text)
    return [t for t in targets if not re.match(r'^[a-z][a-z0-9+.-]*:', t, re.I) and not t.startswith('#')]


@pytest.mark.parametrize('path', [README, *DOCS], ids=lambda p: str(p.relative_to(REPO)))
def test_relative_links_point_at_existing_files(path):
    missing = [t for t in relative_links(path) if not (path.parent / t.split('#')[0].split('?')[0]).exists()]
    assert not missing, f'{path.relative_to(REPO)} links to missing files: {missing}'


def heading_anchors(path):
    """GitHub's anchors of a Markdown file's headings: lower case, punctuation other than - and _
    dropped, spaces as hyphens."""
    headings = re.findall(r'^#{1,6}\s+(.+?)\s*#*\s*$', outside_code_blocks(path.read_text()), re.M)
    return {re.sub(r'[^\w\- ]', '', h.lower()).replace(' ', '-') for h in headings}


@pytest.mark.parametrize('path', [README, *DOCS], ids=lambda p: str(p.relative_to(REPO)))
def test_links_into_markdown_files_name_existing_headings(path):
    wrong = []
    for target in relative_links(path) + [t for t in re.findall(r'\]\((#[^)\s]+)\)', outside_code_blocks(
            path.read_text()))]:
        file, _, anchor = target.partition('#')
        page = path.parent / file if file else path
        if anchor and page.suffix == '.md' and page.exists() and anchor not in heading_anchors(page):
            wrong.append(target)
    assert not wrong, f'{path.relative_to(REPO)} links to headings that do not exist: {wrong}'


def test_the_link_check_sees_links_and_images(tmp_path):
    page = tmp_path / 'page.md'
    page.write_text('![a](pic.gif) [b](other.md#part) [c](https://example.org) [d](#here) `[e](code.md)`\n'
                    '```\n[f](block.md)\n```\n')
    assert relative_links(page) == ['pic.gif', 'other.md#part']
    page.write_text('## Several faces (`demo.py --multi_person`)\n### The fit\n')
    assert heading_anchors(page) == {'several-faces-demopy---multi_person', 'the-fit'}


def test_the_command_parser_and_classifier():
    commands = python_commands('```bash\npip install x && python demo.py   # note\n'
                               'python demo.py --config config/vox-256.yaml --checkpoint vox-cpk.pth.tar \\\n'
                               '    --source_image face.png\n```\n')
    assert commands == ['python demo.py',
                        'python demo.py --config config/vox-256.yaml --checkpoint vox-cpk.pth.tar --source_image face.png']
    assert not needs_user_files(commands[0]) and needs_user_files(commands[1])
    assert needs_user_files('python run.py --config config/vox-256.yaml')  # VoxCeleb is not here
    assert not needs_user_files('python run.py --config config/cartoon-64.yaml --mode train_segmentation')
    assert needs_user_files('python evaluate.py reconstruction/png data/vox-png/test --extractor faces')
    assert not needs_user_files('python evaluate.py pretrained/cartoon-64/driving.mp4 pretrained/cartoon-64/driving.mp4')


def test_every_readme_command_on_bundled_files_names_its_test():
    commands = bundled_only_commands()
    unlisted = [c for c in commands if c not in TESTED and c not in UNTESTED]
    assert not unlisted, f'README commands that need only bundled files, with no test named in {__file__}: {unlisted}'
    stale = [c for c in [*TESTED, *UNTESTED] if c not in commands]
    assert not stale, f'commands listed here that the README no longer has: {stale}'
    assert len(UNTESTED) <= MAX_UNTESTED, 'too many README commands that no test runs'


@pytest.mark.parametrize('command', sorted(TESTED))
def test_the_named_test_exists(command):
    file, name = TESTED[command].split('::')
    source = (REPO / file).read_text()
    assert re.search(rf'^def {re.escape(name)}\(', source, re.M), f'{TESTED[command]} not found'

"""The local web page of app.py (Gradio): animate, part swap and the keypoints view, through the same
library calls as the command line (toolkit.demo.animate_video, toolkit.part_swap.swap_parts,
toolkit.demo.draw_keypoints).

How it behaves:
* Offline: Gradio's analytics are off (set before Gradio is imported), the theme uses the system's
  fonts, and server-side rendering is off, so the page needs nothing but this server.
* Models: the bundled cartoon model, and every checkpoint under --checkpoints DIR with a config beside
  it (`name.yaml` next to `name.pth.tar`, or the one .yaml of its folder, as run.py's run folders
  have). The page offers their labels only; a path never comes from the page. Checkpoints are read
  with weights_only (modules.checkpoint).
* Requests queue: one runs at a time, at most `queue_size` wait, and past that the page says the
  server is busy. Every request works in its own temporary folder, removed when its results have
  been handed to the page (or when it fails).
* Limits: uploads up to `max_upload_mb`, driving and target videos up to `max_frames` frames, and the
  command line's pixel limit (modules.limits) on every decoded image and frame.
* A failing request shows the command line's one-line error in the page; the server goes on.
"""
import dataclasses
import logging
import os
import shutil
import tempfile
from pathlib import Path

from modules.config import load_config
from modules.errors import InputError, UserError
from modules.families import family_of
from toolkit.demo import BUNDLED, BUNDLED_DEFAULTS, animate_video, draw_keypoints
from toolkit.part_swap import swap_parts
from toolkit.video_io import read_video_meta

log = logging.getLogger(__name__)

BUNDLED_LABEL = 'bundled: cartoon-64 (FOMM, 64x64)'
CHECKPOINT_SUFFIXES = ('.pth.tar', '.pth', '.tar', '.pt')
SYSTEM_FONTS = ['ui-sans-serif', 'system-ui', 'Segoe UI', 'Roboto', 'Arial', 'sans-serif']
MONO_FONTS = ['ui-monospace', 'Consolas', 'Menlo', 'monospace']


@dataclasses.dataclass(frozen=True)
class AppOptions:
    """What `python app.py` takes, named as its flags (see its --help)."""
    host: str = '127.0.0.1'
    port: int = 7860
    checkpoints: str = None
    queue_size: int = 4
    max_upload_mb: int = 50
    max_frames: int = 1500
    cpu: bool = False


@dataclasses.dataclass(frozen=True)
class Model:
    """One model the page offers."""
    label: str
    config: Path
    checkpoint: Path
    family: str  # its family's title
    modes: tuple  # demo.py --mode values of its family
    default_mode: str
    segmentation: Path = None  # a part segmenter trained for it (part swap by part names)
    part_names: tuple = ()


# ----------------------------------------------------------------------------------------------
# Models
# ----------------------------------------------------------------------------------------------

def _model(label, config, checkpoint, segmentation=None):
    loaded = load_config(config)
    family = family_of(loaded['model_params'])
    part_names = ()
    if segmentation is not None and loaded.get('segmentation_params'):
        part_names = tuple(loaded['segmentation_params']['part_names'])
    default = 'relative' if 'relative' in family.modes else family.modes[0]
    return Model(label, Path(config), Path(checkpoint), family.title, tuple(family.modes), default,
                 Path(segmentation) if segmentation and part_names else None, part_names)


def bundled_model():
    return _model(BUNDLED_LABEL, BUNDLED_DEFAULTS['config'], BUNDLED_DEFAULTS['checkpoint'],
                  BUNDLED / 'segmentation.pth.tar')


def _checkpoint_files(folder, depth=3):
    folder = Path(folder)
    found = []
    for root, dirs, files in os.walk(folder):
        if len(Path(root).relative_to(folder).parts) >= depth:
            dirs[:] = []
        dirs[:] = sorted(d for d in dirs if not d.startswith('.'))
        found += [Path(root) / name for name in sorted(files) if name.lower().endswith(CHECKPOINT_SUFFIXES)]
    return found


def _config_for(checkpoint):
    stem = checkpoint.name
    for suffix in CHECKPOINT_SUFFIXES:
        if stem.lower().endswith(suffix):
            stem = stem[:-len(suffix)]
            break
    beside = checkpoint.with_name(stem + '.yaml')
    if beside.is_file():
        return beside
    configs = sorted(checkpoint.parent.glob('*.yaml'))
    return configs[0] if len(configs) == 1 else None


def find_models(checkpoints=None):
    """{label: Model}: the bundled model, then each checkpoint under `checkpoints` (3 levels deep at
    most) with its config (skipped, with a log line, when it has none or the config does not load)."""
    models = {BUNDLED_LABEL: bundled_model()}
    if checkpoints is None:
        return models
    folder = Path(checkpoints)
    if not folder.is_dir():
        raise InputError(f'--checkpoints {folder}: not a folder')
    for checkpoint in _checkpoint_files(folder):
        config = _config_for(checkpoint)
        if config is None:
            log.warning('%s: no config beside it (name.yaml, or one .yaml in its folder): not offered', checkpoint)
            continue
        label = str(checkpoint.relative_to(folder))
        try:
            model = _model(label, config, checkpoint)
        except UserError as e:
            log.warning('%s: not offered: %s', checkpoint, e)
            continue
        models[f'{label} ({model.family})'] = dataclasses.replace(model, label=f'{label} ({model.family})')
    log.info('%d model(s) offered: %s', len(models), ', '.join(models))
    return models


# ----------------------------------------------------------------------------------------------
# Requests: each in its own folder, with the command line's checks and one-line errors
# ----------------------------------------------------------------------------------------------

class Jobs:
    """The page's three jobs on the models found, each run in a fresh temporary folder under `work`.
    Each returns its results and the folder, which `cleanup` removes after the page has the files."""

    def __init__(self, models, work, max_frames=AppOptions.max_frames, cpu=False):
        self.models, self.work, self.max_frames, self.cpu = models, Path(work), max_frames, cpu

    def model(self, label):
        if label not in self.models:
            raise InputError(f'unknown model {label!r}: choose one of the list')
        return self.models[label]

    def folder(self):
        self.work.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix='request-', dir=self.work))

    def check_video(self, path, what):
        if not path:
            raise InputError(f'upload a {what}')
        frames = read_video_meta(path)['nframes']
        if frames > self.max_frames:
            raise InputError(f'the {what} has about {frames} frames; this server takes at most {self.max_frames}')

    def cleanup(self, folder):
        """Removes a request's folder (its files are in the page's cache by now); only a folder this
        object made, whatever the value it is handed."""
        if folder and Path(folder).parent.resolve() == self.work.resolve() and Path(folder).name.startswith('request-'):
            shutil.rmtree(folder, ignore_errors=True)

    def run(self, job, *args):
        """job(folder, *args) -> results; any failure removes the folder and becomes one line."""
        folder = self.folder()
        try:
            return (*job(folder, *args), str(folder))
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise

    def animate(self, label, source, driving, mode, find_best_frame, fast, multi_person, ratio, audio):
        def job(folder):
            if not source:
                raise InputError('upload a source image')
            self.check_video(driving, 'driving video')
            model = self.model(label)
            if mode not in model.modes:
                raise InputError(f'mode {mode!r} is not one of {model.family}\'s: {", ".join(model.modes)}')
            result, preview = folder / 'result.mp4', folder / 'preview.mp4'
            animate_video(config=str(model.config), checkpoint=str(model.checkpoint), source_image=source,
                          driving_video=driving, result_video=str(result), preview=str(preview), mode=mode,
                          relative=False, adapt_scale=False, find_best_frame=find_best_frame, fast=fast,
                          multi_person=multi_person, ratio=ratio, audio=audio, cpu=self.cpu)
            return str(result), str(preview)
        return self.run(job)

    def swap(self, label, source, target, parts, mask):
        def job(folder):
            if not source:
                raise InputError('upload a source image')
            self.check_video(target, 'target video')
            model = self.model(label)
            masks = {}
            if mask:  # the checked parts' labels in the model's part numbering, else label 1
                labels = [str(model.part_names.index(p)) for p in parts or () if p in model.part_names]
                masks = {'source_mask': mask, 'swap_index': ','.join(labels) or '1'}
            elif model.segmentation is None:
                raise InputError(f'{model.label} has no part segmenter: upload the source\'s part mask')
            elif not parts:
                raise InputError('choose the parts to swap')
            else:
                masks = {'segmentation_checkpoint': str(model.segmentation), 'swap_index': ','.join(parts)}
            result = folder / 'result.mp4'
            swap_parts(config=str(model.config), checkpoint=str(model.checkpoint), source_image=source,
                       target_video=target, result_video=str(result), cpu=self.cpu, **masks)
            return (str(result),)
        return self.run(job)

    def keypoints(self, label, source, driving):
        def job(folder):
            if not source:
                raise InputError('upload a source image')
            self.check_video(driving, 'driving video')
            model = self.model(label)
            image, video = draw_keypoints(str(model.config), str(model.checkpoint), source, driving,
                                          folder / 'source-keypoints.png', folder / 'driving-keypoints.mp4',
                                          cpu=self.cpu)
            return str(image), str(video)
        return self.run(job)




# ----------------------------------------------------------------------------------------------
# The page
# ----------------------------------------------------------------------------------------------

def guarded(job, *args):
    """job(*args), its failures shown in the page as one line: a UserError as the command line's
    message; anything else logged with its traceback and shown as one line too."""
    import gradio as gr
    try:
        return job(*args)
    except UserError as e:
        raise gr.Error(str(e), print_exception=False) from None
    except Exception as e:
        log.exception('request failed')
        raise gr.Error(f'internal error: {type(e).__name__}: {e}', print_exception=False) from None


def import_gradio():
    """Gradio, with its analytics off (they would call out to the internet); InputError if missing."""
    os.environ['GRADIO_ANALYTICS_ENABLED'] = 'False'
    try:
        import gradio
    except ImportError as e:
        raise InputError(f'app.py needs gradio ({e}): pip install -r requirements.txt') from None
    return gradio


def build_page(options, models, work):
    """The gr.Blocks of the page (not launched)."""
    gr = import_gradio()

    jobs = Jobs(models, work, options.max_frames, options.cpu)
    labels = list(models)
    first = models[labels[0]]
    samples = (str(BUNDLED_DEFAULTS['source_image']), str(BUNDLED_DEFAULTS['driving_video']))
    swap_models = labels

    def modes_for(label):
        model = models.get(label, first)
        return gr.update(choices=list(model.modes), value=model.default_mode)

    def parts_for(label):
        model = models.get(label, first)
        names = [n for n in model.part_names[1:]]  # the background is never swapped
        return gr.update(choices=names, value=names[:1])

    with gr.Blocks(title='First Order Motion Model', analytics_enabled=False) as page:
        gr.Markdown('# First Order Motion Model\nAnimate a still image with the motion of a driving video, '
                    'on this machine. The bundled cartoon model works out of the box; '
                    '`python app.py --checkpoints DIR` offers your own.')
        with gr.Tab('Animate', id='animate'):
            with gr.Row():
                source = gr.Image(type='filepath', label='Source image', elem_id='source_image', height=280)
                driving = gr.Video(label='Driving video', elem_id='driving_video', height=280)
            samples_button = gr.Button('Use the bundled samples', elem_id='samples_button', size='sm')
            with gr.Row():
                model = gr.Dropdown(labels, value=labels[0], label='Model', elem_id='model')
                mode = gr.Dropdown(list(first.modes), value=first.default_mode, label='Motion', elem_id='mode',
                                   info='relative: motion since the first driving frame, scaled to the source; '
                                        'standard: absolute keypoints; avd: TPSMM\'s AVD network')
            with gr.Row():
                find_best = gr.Checkbox(label='Find best frame', elem_id='find_best_frame')
                fast = gr.Checkbox(label='Fast (approximate)', elem_id='fast')
                multi = gr.Checkbox(label='Every face (multi-person)', elem_id='multi_person')
                audio = gr.Checkbox(label='Keep the audio', elem_id='audio')
                ratio = gr.Slider(0.1, 1.0, value=0.4, step=0.05, label='Face paste ratio', elem_id='ratio')
            animate_button = gr.Button('Animate', variant='primary', elem_id='animate_button')
            with gr.Row():
                result = gr.Video(label='Result', elem_id='result_video', height=320)
                preview = gr.Video(label='Source | driving | result', elem_id='preview_video', height=320)
            animate_folder = gr.State()
        with gr.Tab('Part swap', id='swap'):
            with gr.Row():
                swap_source = gr.Image(type='filepath', label='Source image (its parts)', elem_id='swap_source',
                                       height=280)
                swap_target = gr.Video(label='Target video (its motion and the rest)', elem_id='swap_target',
                                       height=280)
            swap_samples = gr.Button('Use the bundled samples', elem_id='swap_samples_button', size='sm')
            with gr.Row():
                swap_model = gr.Dropdown(swap_models, value=labels[0], label='Model', elem_id='swap_model')
                parts = gr.CheckboxGroup(list(first.part_names[1:]), value=list(first.part_names[1:2]),
                                         label='Parts to swap', elem_id='swap_parts')
                mask = gr.Image(type='filepath', label='Or the source\'s part mask (labels 0 = background, 1, 2, ...)',
                                elem_id='swap_mask', height=160)
            swap_button = gr.Button('Swap', variant='primary', elem_id='swap_button')
            swap_result = gr.Video(label='Result', elem_id='swap_result', height=320)
            swap_folder = gr.State()
        with gr.Tab('Keypoints', id='keypoints'):
            with gr.Row():
                kp_source = gr.Image(type='filepath', label='Source image', elem_id='kp_source', height=280)
                kp_driving = gr.Video(label='Driving video', elem_id='kp_driving', height=280)
            kp_samples = gr.Button('Use the bundled samples', elem_id='kp_samples_button', size='sm')
            kp_model = gr.Dropdown(labels, value=labels[0], label='Model', elem_id='kp_model')
            kp_button = gr.Button('Show the keypoints', variant='primary', elem_id='kp_button')
            with gr.Row():
                kp_image = gr.Image(label='Source with its keypoints', elem_id='kp_source_out', height=320)
                kp_video = gr.Video(label='Driving video with its keypoints', elem_id='kp_driving_out', height=320)
            kp_folder = gr.State()

        # page-only events: none is offered to API clients
        private = dict(api_visibility='private')
        samples_button.click(lambda: samples, None, [source, driving], **private)
        swap_samples.click(lambda: samples, None, [swap_source, swap_target], **private)
        kp_samples.click(lambda: samples, None, [kp_source, kp_driving], **private)
        model.change(modes_for, model, mode, **private)
        swap_model.change(parts_for, swap_model, parts, **private)
        progress = gr.Progress(track_tqdm=True)  # follows the library's progress bars (its frames)

        def animate(label, source, driving, mode, find_best, fast, multi, ratio, audio, progress=progress):
            return guarded(jobs.animate, label, source, driving, mode, find_best, fast, multi, ratio, audio)

        def swap(label, source, target, parts, mask, progress=progress):
            return guarded(jobs.swap, label, source, target, parts, mask)

        def keypoints(label, source, driving, progress=progress):
            return guarded(jobs.keypoints, label, source, driving)

        animate_button.click(animate,
                             [model, source, driving, mode, find_best, fast, multi, ratio, audio],
                             [result, preview, animate_folder], concurrency_id='models', **private).then(
            jobs.cleanup, animate_folder, None, **private)
        swap_button.click(swap, [swap_model, swap_source, swap_target, parts, mask],
                          [swap_result, swap_folder], concurrency_id='models', **private).then(
            jobs.cleanup, swap_folder, None, **private)
        kp_button.click(keypoints, [kp_model, kp_source, kp_driving],
                        [kp_image, kp_video, kp_folder], concurrency_id='models', **private).then(
            jobs.cleanup, kp_folder, None, **private)
    page.queue(max_size=options.queue_size, default_concurrency_limit=1)
    return page


def serve(on_ready=None, **options):
    """`python app.py` as a function: builds the page and serves it until interrupted (Ctrl-C,
    SIGTERM). on_ready(url) is called once the page answers."""
    opt = AppOptions(**options)
    logging.getLogger('httpx').setLevel(logging.WARNING)  # Gradio's own start-up requests to itself
    if opt.queue_size < 1 or opt.max_upload_mb < 1 or opt.max_frames < 1:
        raise InputError('--queue_size, --max_upload_mb and --max_frames must be at least 1')
    models = find_models(opt.checkpoints)
    with tempfile.TemporaryDirectory(prefix='fomm-app-') as work:
        os.environ.setdefault('GRADIO_TEMP_DIR', str(Path(work) / 'gradio'))
        page = build_page(opt, models, Path(work) / 'requests')
        gr = import_gradio()
        try:
            page.launch(server_name=opt.host, server_port=opt.port, share=False, ssr_mode=False, show_error=True,
                        max_file_size=f'{opt.max_upload_mb}mb', quiet=True, prevent_thread_lock=True,
                        theme=gr.themes.Default(font=SYSTEM_FONTS, font_mono=MONO_FONTS))
        except OSError as e:
            raise InputError(f'cannot serve on {opt.host}:{opt.port}: {str(e).splitlines()[0]}; '
                             f'choose another --port') from None
        if on_ready is not None:
            on_ready(page.local_url)
        try:
            page.block_thread()
        finally:
            page.close()

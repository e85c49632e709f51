"""Seconds per frame of animating one source with a driving video, vox-256-sized models (random
weights), on this machine, measured in one run, interleaved after a warm-up:

  (a) the original's per-frame algorithm (the yardstick: every frame re-encodes the source and runs
      the keypoint detector and generator with batch 1),
  (b) our default path as demo.py runs it (source keypoints and features once per video, timed
      apart as setup; modules/inference.py's exact rewrites; batches of driving frames on CUDA),
  (c) fast mode (a channels-last generator under bfloat16 autocast on CPU, float16 on CUDA, its
      residual blocks in int8 on x86 CPUs),
  (d) the original's Python API, demo.make_animation on eval models as demo.load_checkpoints returns
      them (it animates through optimised copies, made on the first call),
  (e) on the CPU, the ONNX Runtime backends (demo.py --backend onnxruntime and onnxruntime-int8: the
      same weights exported as export.py --int8 does, the same animation core),

with the ratios and the PSNR of (c) against (b), with these random weights and with the bundled
model's. Then the peak RSS of demo.py (streaming) on a
200-frame and a 2000-frame 64x64 video with the small fixture model.

With --family tps, the same paths for TPSMM's vox-256 models, ONNX Runtime's included (relative
mode; the yardstick is TPSMM's make_animation loop, which re-encodes the source in every inpainting
call).

With --faces, instead: multi-face animation (multi_face.FaceAnimator, paste-back included) of a
512x2048 photo with 1, 2 and 4 faces (256x256 crops), all faces in one generator batch vs one face
after another (one single-face animator per face, as PaddleGAN's loop), in seconds per driving frame.

    python benchmarks/animate.py [--frames 16] [--rounds 3] [--device cpu] [--family fomm|tps]
    python benchmarks/animate.py --faces [--frames 4] [--rounds 2]
"""
import argparse
import copy
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from toolkit import demo  # noqa: E402
from toolkit.animation import normalize_kp  # noqa: E402
from toolkit.animation import ImageAnimator, batched, default_batch_size  # noqa: E402
from modules.build import build_models  # noqa: E402
from modules.config import load_config  # noqa: E402
from modules.inference import inference_copy, optimize_for_inference  # noqa: E402
from toolkit.devices import pick_device  # noqa: E402
from toolkit.evaluation import psnr  # noqa: E402


def per_frame_original(source_image, frames, generator, kp_detector, device):
    """The original demo.make_animation loop: batch 1, the source re-encoded inside every generator call."""
    out = []
    with torch.no_grad():
        source = torch.tensor(source_image[None]).permute(0, 3, 1, 2).to(device)
        kp_source = kp_detector(source)
        kp_initial = kp_detector(torch.tensor(frames[0][None]).permute(0, 3, 1, 2).to(device))
        for frame in frames:
            driving = torch.tensor(frame[None]).permute(0, 3, 1, 2).to(device)
            kp_norm = normalize_kp(kp_source, kp_detector(driving), kp_initial, adapt_movement_scale=True,
                                   use_relative_movement=True, use_relative_jacobian=True)
            out.append(generator(source, kp_source=kp_source, kp_driving=kp_norm)['prediction'][0].permute(1, 2, 0)
                       .cpu().numpy())
    return out


def per_frame_tps(source_image, frames, models, device):
    """TPSMM's make_animation loop (relative mode): batch 1, the source re-encoded in every call."""
    from toolkit.animation import adapt_movement_scale_factor, relative_kp
    inpainting, kp_detector, dense_motion = models['inpainting_network'], models['kp_detector'], \
        models['dense_motion_network']
    out = []
    with torch.no_grad():
        source = torch.tensor(source_image[None]).permute(0, 3, 1, 2).to(device)
        kp_source = kp_detector(source)
        kp_initial = kp_detector(torch.tensor(frames[0][None]).permute(0, 3, 1, 2).to(device))
        scale = adapt_movement_scale_factor(kp_source, kp_initial)
        for frame in frames:
            driving = torch.tensor(frame[None]).permute(0, 3, 1, 2).to(device)
            kp_norm = relative_kp(kp_source, kp_detector(driving), kp_initial, scale, use_relative_movement=True)
            dense = dense_motion(source_image=source, kp_driving=kp_norm, kp_source=kp_source, bg_param=None,
                                 dropout_flag=False)
            out.append(inpainting(source, dense)['prediction'][0].permute(1, 2, 0).cpu().numpy())
    return out


def tps_benchmark(opt, device, source, frames):
    """--family tps: yardstick, default and fast paths for TPSMM's vox-256 models (random weights)."""
    from modules.tpsmm import TpsGenerator
    config_path = REPO / 'config' / 'tpsmm-vox-256.yaml'
    config = load_config(config_path)
    models = build_models(config['model_params'], names=['inpainting_network', 'kp_detector', 'dense_motion_network'],
                          device=device)
    models = {name: model.eval() for name, model in models.items()}
    optimized = {name: optimize_for_inference(copy.deepcopy(model)) for name, model in models.items()}
    generator = TpsGenerator(optimized['inpainting_network'], optimized['dense_motion_network'])
    animators = {fast: ImageAnimator(source, generator, optimized['kp_detector'], fast=fast) for fast in (False, True)}
    others = {}
    if device.type == 'cpu':  # demo.py --backend onnxruntime: export.py's graphs of these weights
        others = onnx_animators(models, source, frames, config_path)
    api = lambda: demo.make_animation(source, frames, models['inpainting_network'], models['kp_detector'],  # noqa: E731
                                      models['dense_motion_network'], None, device, mode='relative')
    exact_diff, fast_psnr, api_diff, other_diffs = compare_paths(
        'TPSMM per-frame', lambda: per_frame_tps(source, frames, models, device), animators, frames, device, opt, api,
        others)
    print(f'default path vs per-frame: max |diff| {exact_diff:.2e}; API vs per-frame: {api_diff:.2e}; fast mode '
          f'PSNR vs exact: {fast_psnr:.1f} dB (random weights)')
    print_other_diffs(other_diffs)


def compare_paths(yardstick_name, yardstick, animators, frames, device, opt, api, others=None):
    """Times, in one run, the yardstick, our default and fast animators ({False: default, True: fast}),
    `api` (the original's Python API, demo.make_animation, on the models as demo.load_checkpoints
    returns them) and `others` ({name: animator}, e.g. the ONNX Runtime backend), prints s/frame and
    ratios -> (max |default - yardstick|, PSNR of fast against default, max |API - yardstick|,
    {other's name: max |other - default|})."""
    runs = {yardstick_name: yardstick,
            'ours (default)': lambda: ours(animators[False], frames, device),
            'ours --fast': lambda: ours(animators[True], frames, device, fast=True),
            'API make_animation': api}
    for name, animator in (others or {}).items():
        runs[name] = lambda animator=animator: ours(animator, frames, device)
    results, times = time_runs(runs, opt.rounds, opt.frames, device)
    base = times[yardstick_name]
    for name in runs:
        print(f'{name:20s} {times[name]:.3f} s/frame  {base / times[name]:.2f}x the per-frame yardstick  '
              f'(median of {opt.rounds})')
    exact_diff = np.abs(np.stack(results['ours (default)']) - np.stack(results[yardstick_name])).max()
    api_diff = np.abs(np.stack(results['API make_animation']) - np.stack(results[yardstick_name])).max()
    others = {name: (np.abs(np.stack(results[name]) - np.stack(results['ours (default)'])).max(),
                     psnr(results[name], results['ours (default)'])) for name in others or {}}
    return exact_diff, psnr(results['ours --fast'], results['ours (default)']), api_diff, others


def ours(animator, frames, device, fast=False):
    """demo.py's loop over one animator (made once per video: see setup_seconds)."""
    animator.core.kp_driving_initial = animator.core.movement_scale = None  # a new video
    out = []
    for batch in batched(frames, default_batch_size(device, fast)):
        out.extend(animator(np.stack(batch)))
    return out


def setup_seconds(make, rounds=3):
    """Median seconds of `make()` (an Animator's one-time work: the source's keypoints and features;
    with --fast also the generator's fast copy) -> (seconds, the last result)."""
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        result = make()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def onnx_animators(models, source, frames, config_path):
    """{name: ImageAnimator} on the ONNX Runtime backends: `models` (random weights) of the model of
    `config_path` saved as a checkpoint and exported as export.py --int8 does (the int8 graph
    calibrated on this source and these frames), loaded by toolkit.onnx_runtime; relative motion
    with the adapted movement scale, as the torch animators here."""
    import imageio.v3 as iio
    from toolkit.animation import to_uint8
    from toolkit.onnx_int8 import export_model
    from toolkit.onnx_runtime import onnx_networks
    with tempfile.TemporaryDirectory(prefix='onnx-benchmark-') as folder:  # the sessions hold the graphs
        folder = Path(folder)
        checkpoint = folder / 'weights.pth.tar'
        torch.save({name: model.state_dict() for name, model in models.items()}, checkpoint)
        iio.imwrite(folder / 'source.png', to_uint8(source))
        iio.imwrite(folder / 'frames.mp4', np.stack([to_uint8(f) for f in frames]), fps=25, codec='libx264',
                    macro_block_size=16)
        export_model(config_path, checkpoint, folder, int8=True, calibration_source=folder / 'source.png',
                     calibration_video=folder / 'frames.mp4')
        return {name: ImageAnimator(source, *onnx_networks(folder, config_path, checkpoint, int8=int8), relative=True,
                                    adapt_movement_scale=True)
                for name, int8 in (('onnxruntime', False), ('onnxruntime int8', True))}


def print_other_diffs(other_diffs):
    for name, (difference, value) in other_diffs.items():
        print(f'{name} vs default path: max |diff| {difference:.2e}, PSNR {value:.1f} dB (random weights)')


def bundled_model_psnr():
    """PSNR of --fast against the exact path with the bundled model's weights on its sample (real
    weights: random ones say little about how int8 and bfloat16 rounding add up)."""
    import imageio.v3 as iio
    from toolkit import demo
    folder = REPO / 'pretrained' / 'cartoon-64'
    generator, kp_detector = demo.load_checkpoints(REPO / 'config' / 'cartoon-64.yaml', folder / 'cartoon-64.pth.tar',
                                                   cpu=True)
    source = iio.imread(folder / 'source.png')[..., :3] / 255.0
    frames = np.stack(list(iio.imiter(folder / 'driving.mp4'))) / 255.0
    results = [ImageAnimator(source, generator, kp_detector, relative=True, adapt_movement_scale=True, fast=fast)(frames)
               for fast in (False, True)]
    return psnr(*results), len(frames)


def time_runs(runs, rounds, frames, device):
    """Every run once to warm up, then `rounds` interleaved timed rounds -> ({name: warm-up result},
    {name: median seconds per frame})."""
    times = {name: [] for name in runs}
    results = {name: fn() for name, fn in runs.items()}
    for _ in range(rounds):
        for name, fn in runs.items():
            if device.type == 'cuda':
                torch.cuda.synchronize()
            start = time.perf_counter()
            fn()
            if device.type == 'cuda':
                torch.cuda.synchronize()
            times[name].append((time.perf_counter() - start) / frames)
    return results, {name: statistics.median(values) for name, values in times.items()}


def faces_benchmark(generator, kp_detector, device, num_frames, rounds):
    """Prints s/frame of 1, 2 and 4 faces: batched (one FaceAnimator) vs one face after another."""
    from toolkit.multi_face import FaceAnimator
    rng = np.random.default_rng(0)
    photo = rng.integers(0, 256, (512, 2048, 3), dtype=np.uint8)
    frames = rng.random((num_frames, 256, 256, 3), dtype=np.float32)
    for count in (1, 2, 4):
        boxes = [(64 + 512 * i, 128, 192 + 512 * i, 256) for i in range(count)]  # 128 px: 256x256 crops
        together = FaceAnimator(photo, boxes, generator, kp_detector, (256, 256))
        alone = [FaceAnimator(photo, [box], generator, kp_detector, (256, 256)) for box in boxes]
        runs = {'batched': lambda: [together(frame[None]) for frame in frames],
                'one by one': lambda: [animator(frame[None]) for frame in frames for animator in alone]}
        _, t = time_runs(runs, rounds, num_frames, device)
        print(f'{count} face(s): batched {t["batched"]:.3f} s/frame, one after another {t["one by one"]:.3f} '
              f's/frame: {t["one by one"] / t["batched"]:.2f}x (median of {rounds})', flush=True)


def peak_rss_of_demo(num_frames, tmp):
    import imageio.v3 as iio
    from tests.video_utils import write_video
    source = Path(tmp) / 'source.png'
    iio.imwrite(source, np.full((64, 64, 3), 128, np.uint8))
    frames = np.zeros((num_frames, 64, 64, 3), np.uint8)
    frames[:, 20:40, :, 0] = np.linspace(0, 255, num_frames).astype(np.uint8)[:, None, None]
    video = write_video(Path(tmp) / f'd{num_frames}.mp4', frames)
    from tests.rss import peak_rss_mb
    fixture = REPO / 'tests' / 'data' / 'fomm_fixture_small'
    returncode, megabytes = peak_rss_mb([sys.executable, 'demo.py', '--config', fixture / 'config.yaml',
                                         '--checkpoint', fixture / 'checkpoint.pth.tar', '--cpu', '--relative',
                                         '--source_image', source, '--driving_video', video,
                                         '--result_video', Path(tmp) / f'r{num_frames}.mp4'], cwd=REPO)
    if returncode != 0:
        raise RuntimeError(f'demo.py failed on {video}')
    return megabytes


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--frames', type=int, default=16)
    parser.add_argument('--rounds', type=int, default=3)
    parser.add_argument('--device', default=str(pick_device()))
    parser.add_argument('--family', choices=list(BENCHMARKS), default='fomm',
                        help='tps: TPSMM\'s vox-256 models instead of FOMM\'s')
    parser.add_argument('--faces', action='store_true',
                        help='only the multi-face benchmark: 1, 2, 4 faces, batched vs one after another')
    opt = parser.parse_args()
    torch.manual_seed(0)
    BENCHMARKS[opt.family](opt, torch.device(opt.device))


def tps_main(opt, device):
    rng = np.random.default_rng(0)
    source = rng.random((256, 256, 3), dtype=np.float32)
    print(f'{torch.get_num_threads()} threads, torch {torch.__version__}, device {device}, '
          f'{opt.frames} frames of 256x256, TPSMM vox-256 models')
    tps_benchmark(opt, device, source, [np.roll(source, shift=(2 * t, 3 * t), axis=(0, 1)) for t in range(opt.frames)])


def fomm_main(opt, device):
    config = load_config(REPO / 'config' / 'vox-256.yaml')
    models = build_models(config['model_params'], names=['generator', 'kp_detector'], device=device)
    generator, kp_detector = models['generator'].eval(), models['kp_detector'].eval()
    # demo.py animates with modules/inference.py's exact rewrites (batch norms folded, low-resolution
    # upsampling convolutions)
    folded_generator = optimize_for_inference(copy.deepcopy(generator))
    folded_kp_detector = optimize_for_inference(copy.deepcopy(kp_detector))
    rng = np.random.default_rng(0)
    source = rng.random((256, 256, 3), dtype=np.float32)
    frames = [np.roll(source, shift=(2 * t, 3 * t), axis=(0, 1)) for t in range(opt.frames)]
    print(f'{torch.get_num_threads()} threads, torch {torch.__version__}, device {device}, '
          f'{opt.frames} frames of 256x256, vox-256 models')
    if opt.faces:
        faces_benchmark(folded_generator, folded_kp_detector, device, opt.frames, opt.rounds)
        return

    setup, animators = {}, {}
    for fast in (False, True):
        setup[fast], animators[fast] = setup_seconds(lambda: ImageAnimator(
            source, folded_generator, folded_kp_detector, relative=True, adapt_movement_scale=True, fast=fast))
    api_setup, _ = setup_seconds(lambda: [inference_copy(copy.deepcopy(m)) for m in (generator, kp_detector)], 1)
    api = lambda: demo.make_animation(source, frames, generator, kp_detector, relative=True,  # noqa: E731
                                      adapt_movement_scale=True)
    others = {}
    if device.type == 'cpu':  # demo.py --backend onnxruntime: export.py's graphs of these weights
        others = onnx_animators(models, source, frames, REPO / 'config' / 'vox-256.yaml')
    exact_diff, fast_psnr, api_diff, other_diffs = compare_paths(
        'original per-frame', lambda: per_frame_original(source, frames, generator, kp_detector, device), animators,
        frames, device, opt, api, others)
    print(f'one-time setup per video (source keypoints and features): {setup[False]:.2f} s; with --fast (also the '
          f'generator\'s fast copy): {setup[True]:.2f} s; API: its optimised copies, made on the first call and '
          f'reused while the weights are unchanged: {api_setup:.2f} s')
    print(f'default path vs per-frame: max |diff| {exact_diff:.2e}; API vs per-frame: {api_diff:.2e}; fast mode PSNR '
          'vs exact: {:.1f} dB (random weights), {:.1f} dB (bundled cartoon-64 model on its {} sample frames)'.format(
              fast_psnr, *bundled_model_psnr()))
    print_other_diffs(other_diffs)
    with tempfile.TemporaryDirectory() as tmp:
        small, large = peak_rss_of_demo(200, tmp), peak_rss_of_demo(2000, tmp)
        print(f'demo.py peak RSS at 64x64: {small:.0f} MB for 200 frames, {large:.0f} MB for 2000 frames '
              f'(ratio {large / small:.2f})')


BENCHMARKS = {'fomm': fomm_main, 'tps': tps_main}  # each family's yardstick: its original's per-frame loop

if __name__ == '__main__':
    main()

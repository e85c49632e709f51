"""The supervised part segmenter: run.py --mode train_segmentation on a small generated cartoon set,
its IoU measure, part_swap.py with the trained checkpoint, and the errors."""
import re
import subprocess
import sys

import numpy as np
import pytest
import torch
import yaml

from toolkit import cartoon as cartoon_faces
from modules.errors import InputError
from modules.segmentation import NetworkSegmenter, build_segmentation_network, load_network_segmenter
from tests.conftest import REPO
from toolkit.segmentation_training import LabelledFrames, mean_part_iou, part_iou

BUNDLED = REPO / 'pretrained' / 'cartoon-64'


@pytest.fixture(scope='module')
def cartoon(tmp_path_factory):
    root = tmp_path_factory.mktemp('cartoon')
    cartoon_faces.generate(str(root), videos=6, frames=6, size=64, seed=5, test_videos=2, progress=False)
    return root


def small_config(tmp_path, root, epochs=2):
    config = yaml.safe_load((REPO / 'config' / 'cartoon-64.yaml').read_text())
    config['dataset_params'].update(root_dir=str(root), pairs_list=None)
    config['segmentation_params']['annotations'] = str(root / 'annotations')
    config['segmentation_params']['train_params'].update(num_epochs=epochs, num_repeats=8, batch_size=8,
                                                         epoch_milestones=[])
    path = tmp_path / 'seg.yaml'
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def run(*args):
    return subprocess.run([sys.executable, 'run.py', *map(str, args)], cwd=REPO, capture_output=True, text=True,
                          timeout=900)


def test_labelled_frames_pair_each_frame_with_its_label_map(cartoon):
    test = LabelledFrames(cartoon, cartoon / 'annotations', 'test', (64, 64, 3), is_train=False)
    assert len(test) == 2 * 6
    frame, labels = test[7]  # video 1, frame 1
    video = test.videos[1]
    _, masks = cartoon_faces.load_annotations(str(cartoon), 'test', video)
    assert frame.shape == (3, 64, 64) and frame.dtype == torch.float32
    assert np.array_equal(labels.numpy(), masks[1])
    # the labels lie on their colours: the hair pixels share one colour, unlike the whole frame
    hair = frame.permute(1, 2, 0).numpy()[labels.numpy() == cartoon_faces.LABEL['hair']]
    assert hair.std(axis=0).max() < 0.1 < frame.std(dim=(1, 2)).max()
    with pytest.raises(InputError, match='no frame-folder videos with label maps'):
        LabelledFrames(cartoon, cartoon / 'nowhere', 'train', (64, 64, 3))


def test_part_iou_of_a_perfect_and_of_a_constant_segmenter(cartoon):
    test = LabelledFrames(cartoon, cartoon / 'annotations', 'test', (64, 64, 3), is_train=False)
    labels = torch.stack([test[i][1] for i in range(len(test))])

    class Oracle:
        seen = 0

        def __call__(self, frames):
            truth = labels[self.seen:self.seen + len(frames)]
            self.seen += len(frames)
            return {'segmentation': torch.nn.functional.one_hot(truth, 9).permute(0, 3, 1, 2).float()}

    perfect = part_iou(Oracle(), test, 'cpu', batch_size=5)
    assert set(perfect) == set(np.unique(labels.numpy())) and all(v == 1 for v in perfect.values())

    def background_only(frames):
        return {'segmentation': torch.eye(9)[0].view(1, 9, 1, 1).expand(len(frames), 9, 64, 64)}

    constant = part_iou(background_only, test, 'cpu')
    share = float((labels == 0).float().mean())
    assert constant[0] == pytest.approx(share) and all(v == 0 for p, v in constant.items() if p != 0)
    assert mean_part_iou(constant) == 0


def test_train_segmentation_end_to_end_and_part_swap_with_it(tmp_path, cartoon):
    config = small_config(tmp_path, cartoon)
    out = run('--config', config, '--mode', 'train_segmentation', '--cpu', '--num_workers', '0',
              '--log_dir', tmp_path / 'log')
    assert out.returncode == 0, out.stderr[-3000:]
    assert 'test split IoU: background' in out.stderr
    folder = next((tmp_path / 'log').iterdir())
    lines = (folder / 'log.txt').read_text().splitlines()
    assert len(lines) == 2 and all(re.match(r'^\d{8}\) cross_entropy - \d+\.\d{5}$', line) for line in lines)
    losses = [float(line.split(' - ')[1]) for line in lines]
    assert losses[1] < losses[0] < 2.5  # from about ln 9 = 2.2 down
    checkpoint = torch.load(folder / '00000001-segmentation.pth.tar', weights_only=True)
    assert checkpoint['epoch'] == 1 and set(checkpoint['iou']) <= set(cartoon_faces.PARTS)

    from modules.config import load_config
    segmenter = load_network_segmenter(load_config(config), folder / '00000001-segmentation.pth.tar', 'cpu')
    assert segmenter.part_names == cartoon_faces.PARTS
    masks = segmenter(torch.rand(2, 3, 128, 128))  # another size: resized in and out
    assert masks.shape == (2, 9, 128, 128) and torch.allclose(masks.sum(1), torch.ones(2, 128, 128), atol=1e-4)

    result = tmp_path / 'swap.mp4'
    out = subprocess.run(
        [sys.executable, 'part_swap.py', '--config', config, '--checkpoint', BUNDLED / 'cartoon-64.pth.tar',
         '--source_image', BUNDLED / 'source.png', '--target_video', BUNDLED / 'driving.mp4', '--cpu',
         '--segmentation_checkpoint', folder / '00000001-segmentation.pth.tar', '--swap_index', 'face,hair',
         '--use_source_segmentation', '--result_video', result], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert result.is_file()


def test_train_segmentation_errors_are_one_line(tmp_path, cartoon):
    no_section = yaml.safe_load((REPO / 'config' / 'cartoon-64.yaml').read_text())
    del no_section['segmentation_params']
    path = tmp_path / 'plain.yaml'
    path.write_text(yaml.safe_dump(no_section))
    out = run('--config', path, '--mode', 'train_segmentation', '--cpu', '--log_dir', tmp_path / 'log')
    assert out.returncode == 2 and 'has no segmentation_params section' in out.stderr.strip().splitlines()[-1]

    config = yaml.safe_load(small_config(tmp_path, cartoon).read_text())
    config['segmentation_params']['train_params']['batch_size'] = 1000
    path.write_text(yaml.safe_dump(config))
    out = run('--config', path, '--mode', 'train_segmentation', '--cpu', '--log_dir', tmp_path / 'log')
    assert out.returncode == 2 and 'batch_size 1000 is larger' in out.stderr.strip().splitlines()[-1]

    config['segmentation_params']['part_names'] = ['background']
    path.write_text(yaml.safe_dump(config))
    out = run('--config', path, '--mode', 'train_segmentation', '--cpu', '--log_dir', tmp_path / 'log')
    assert out.returncode == 2 and 'part_names' in out.stderr.strip().splitlines()[-1]


def test_network_segmenter_needs_divisible_sides():
    network = build_segmentation_network({'part_names': ['background', 'a'],
                                          'model_params': {'block_expansion': 4, 'max_features': 8, 'num_blocks': 3}})
    with pytest.raises(InputError, match='divisible by 8'):
        network(torch.rand(1, 3, 60, 64))
    segmenter = NetworkSegmenter(network, ['background', 'a'], (64, 64))
    assert segmenter(torch.rand(1, 3, 60, 60)).shape == (1, 2, 60, 60)  # resized to 64 and back


def test_segmentation_params_are_checked_like_the_rest_of_the_config():
    from modules.config import validate_config
    from modules.errors import ConfigError
    config = yaml.safe_load((REPO / 'config' / 'cartoon-64.yaml').read_text())
    assert validate_config(config)['segmentation_params']['part_names'][1] == 'face'
    config['segmentation_params']['train_params']['learning_rate'] = 0.1
    with pytest.raises(ConfigError, match='learning_rate'):
        validate_config(config)

"""CPABMM's feature losses (modules/cpabmm/feature_losses.py) with small random-weight extractors, the
DINO ViT and SAM encoders' state-dict layouts, and the errors for missing weight files."""
import pytest
import torch
import yaml

from modules.errors import InputError
from modules.sam_encoder import SamImageEncoder
from modules.cpabmm.feature_losses import KeypointSemanticLoss, StructureLoss, load_extractor
from modules.vit import VisionTransformer
from tests.conftest import REPO


def small_vit():
    torch.manual_seed(0)
    return VisionTransformer(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2)


def small_sam():
    torch.manual_seed(0)
    return SamImageEncoder(img_size=64, patch_size=16, embed_dim=32, depth=2, num_heads=2, out_chans=16,
                           window_size=2, global_attn_indexes=(1,))


def test_dino_vit_b8_has_dinos_keys():
    state = VisionTransformer().to('meta').state_dict()
    assert len(state) == 150
    shapes = {'cls_token': (1, 1, 768), 'pos_embed': (1, 785, 768), 'patch_embed.proj.weight': (768, 3, 8, 8),
              'blocks.11.attn.qkv.weight': (2304, 768), 'blocks.11.attn.qkv.bias': (2304,),
              'blocks.0.mlp.fc1.weight': (3072, 768), 'blocks.0.mlp.fc2.weight': (768, 3072), 'norm.bias': (768,)}
    for key, shape in shapes.items():
        assert tuple(state[key].shape) == shape, key


def test_sam_vit_b_encoder_has_sams_keys():
    state = SamImageEncoder().to('meta').state_dict()
    assert len(state) == 177
    shapes = {'patch_embed.proj.weight': (768, 3, 16, 16), 'pos_embed': (1, 64, 64, 768),
              'blocks.0.attn.rel_pos_h': (27, 64), 'blocks.2.attn.rel_pos_w': (127, 64),
              'blocks.5.mlp.lin1.weight': (3072, 768), 'neck.0.weight': (256, 768, 1, 1), 'neck.1.weight': (256,),
              'neck.2.weight': (256, 256, 3, 3), 'neck.3.bias': (256,)}
    for key, shape in shapes.items():
        assert tuple(state[key].shape) == shape, key


def test_vit_keys_are_the_qkv_keys_of_the_block():
    vit = small_vit().eval()
    images = torch.rand(2, 3, 32, 40)  # 4 x 5 tokens: the position embedding is resized
    captured = {}
    vit.blocks[1].attn.qkv.register_forward_hook(lambda m, i, o: captured.update(qkv=o))
    vit(images)
    k = captured['qkv'].reshape(2, 21, 3, 2, 16)[:, :, 1].reshape(2, 21, 32)
    assert torch.allclose(vit.keys(images, 1), k, atol=1e-6)


def test_sam_windowed_attention_equals_global_attention_on_one_window():
    torch.manual_seed(1)
    windowed = SamImageEncoder(img_size=64, patch_size=16, embed_dim=32, depth=1, num_heads=2, out_chans=8,
                               window_size=4, global_attn_indexes=())
    whole = SamImageEncoder(img_size=64, patch_size=16, embed_dim=32, depth=1, num_heads=2, out_chans=8,
                            window_size=4, global_attn_indexes=(0,))
    with torch.no_grad():
        for p in windowed.parameters():
            p.normal_(0, 0.2)
    whole.load_state_dict(windowed.state_dict())
    images = torch.rand(2, 3, 64, 64)
    assert torch.allclose(windowed(images), whole(images), atol=1e-5)
    padded = SamImageEncoder(img_size=80, patch_size=16, embed_dim=32, depth=1, num_heads=2, out_chans=8,
                             window_size=4, global_attn_indexes=())  # 5 x 5 tokens in 4 x 4 windows
    assert padded(torch.rand(1, 3, 80, 80)).shape == (1, 8, 5, 5)


def test_structure_loss():
    loss = StructureLoss(small_vit(), layer=1, size=32)
    driving = torch.rand(2, 3, 64, 64)
    assert loss(driving, driving) == 0
    near = (driving + 0.01 * torch.randn_like(driving)).clamp(0, 1).requires_grad_()
    far = torch.rand(2, 3, 64, 64, requires_grad=True)
    assert 0 < loss(near, driving) < loss(far, driving)
    loss(far, driving).backward()
    assert far.grad.abs().sum() > 0
    assert all(p.grad is None and not p.requires_grad for p in loss.extractor.parameters()), 'frozen'
    assert not loss.train().extractor.training


def test_keypoint_semantic_loss_pulls_keypoints_to_the_same_features():
    loss = KeypointSemanticLoss(small_sam())
    image = torch.rand(1, 3, 48, 48)
    kp = torch.rand(1, 10, 2) * 1.6 - 0.8
    assert loss(image, image, kp, kp).abs() < 1e-6
    moved = (kp + 0.3 * torch.randn(1, 10, 2)).requires_grad_()
    value = loss(image, image, kp, moved)
    assert value > 0.01
    value.backward()
    assert moved.grad.abs().sum() > 0, 'the loss trains the keypoint detector'


def test_missing_or_unsafe_weight_files_are_one_line_errors(tmp_path):
    with pytest.raises(InputError, match='train_params.vit_weights: .* not a file'):
        load_extractor('vit', tmp_path / 'dino.pth')
    with pytest.raises(InputError, match='train_params.sam_model_path: None is not a file'):
        load_extractor('sam', None)
    import pickle
    (tmp_path / 'code.pth').write_bytes(pickle.dumps(print))
    with pytest.raises(InputError, match='cannot read .* safely'):
        load_extractor('vit', tmp_path / 'code.pth')
    torch.save({'image_encoder.' + k: v for k, v in small_sam().state_dict().items()}, tmp_path / 'sam.pth')
    assert isinstance(load_extractor('sam', tmp_path / 'sam.pth', img_size=64, patch_size=16, embed_dim=32, depth=2,
                                     num_heads=2, out_chans=16, window_size=2, global_attn_indexes=(1,)),
                      SamImageEncoder)
    with pytest.raises(InputError, match='does not fit the SAM extractor'):
        load_extractor('sam', tmp_path / 'sam.pth')
    torch.save({**small_vit().state_dict(), 'head.weight': torch.zeros(1)}, tmp_path / 'vit.pth')
    assert isinstance(load_extractor('vit', tmp_path / 'vit.pth', img_size=32, embed_dim=32, depth=2, num_heads=2),
                      VisionTransformer)


def cpab_train_config(**train):
    config = yaml.safe_load((REPO / 'config' / 'cpabmm-cartoon-64.yaml').read_text())
    config['train_params'].update(train)
    return config


def test_generator_full_model_adds_both_losses():
    from modules.build import build_models
    from modules.config import validate_config
    from modules.cpabmm.model import GeneratorFullModel
    config = validate_config(cpab_train_config(use_vit_loss=True))
    config['train_params']['loss_weights'].update(structure=0.1, sam=1)
    models = build_models(config['model_params'])
    full = GeneratorFullModel(models['kp_detector'], None, models['dense_motion_network'],
                              models['inpainting_network'], config['train_params'],
                              structure_extractor=small_vit(), semantic_extractor=small_sam())
    full.structure.layer, full.structure.size = 1, 32
    x = {'source': torch.rand(2, 3, 64, 64), 'driving': torch.rand(2, 3, 64, 64)}
    losses, _ = full(x, epoch=5)
    assert {'structure_loss', 'sam'} <= set(losses) and all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    assert models['kp_detector'].fg_encoder.fc.weight.grad.abs().sum() > 0
    config['train_params']['vit_weights'] = '/nonexistent/dino_vitbase8_pretrain.pth'
    with pytest.raises(InputError, match='vit_weights: /nonexistent/dino_vitbase8_pretrain.pth is not a file'):
        GeneratorFullModel(models['kp_detector'], None, models['dense_motion_network'], models['inpainting_network'],
                           config['train_params'])

"""CPABMM's training losses: TPSMM's (modules.tpsmm.model), plus its two feature losses
(modules.cpabmm.feature_losses) when its config asks for them."""
from modules.cpabmm.feature_losses import configured_losses
from modules.tpsmm import model as tpsmm_model


class GeneratorFullModel(tpsmm_model.GeneratorFullModel):
    """CPABMM's training step: TPSMM's (same arguments, same losses, same random draws), then
    'structure_loss' (with use_vit_loss and a non-zero loss_weights.structure) and 'sam' (with a
    non-zero loss_weights.sam), already weighted, 0-dim. A config that asks for neither trains exactly
    as with TPSMM's class.

    structure_extractor, semantic_extractor: the losses' feature extractors (modules.vit's
    VisionTransformer, modules.sam_encoder's SamImageEncoder, or any module with their interface);
    without them the extractors are loaded from the local files train_params.vit_weights and
    train_params.sam_model_path (InputError if a needed one is missing).
    """

    def __init__(self, kp_extractor, bg_predictor, dense_motion_network, inpainting_network, train_params, *args,
                 structure_extractor=None, semantic_extractor=None):
        super().__init__(kp_extractor, bg_predictor, dense_motion_network, inpainting_network, train_params, *args)
        self.structure, self.semantic = configured_losses(train_params, structure_extractor, semantic_extractor)

    def extra_losses(self, x, generated, epoch):
        weights = self.loss_weights
        losses = {}
        if self.structure is not None:
            losses['structure_loss'] = weights['structure'] * self.structure(generated['prediction'], x['driving'])
        if self.semantic is not None:
            losses['sam'] = weights['sam'] * self.semantic(x['source'], x['driving'], generated['kp_source']['fg_kp'],
                                                           generated['kp_driving']['fg_kp'])
        return losses

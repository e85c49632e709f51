"""What CPABMM gives the family registry (modules.families) beyond TPSMM's parts: its networks, which
are TPSMM's with CpabDenseMotionNetwork as the dense motion network. CPABMM's configs name K
common_params.num_cpab (its vox config: num_tps)."""
from modules.cpabmm.dense_motion import CpabDenseMotionNetwork
from modules.tpsmm import family as tpsmm

TRANSFORM_KEYS = ('num_cpab', 'num_tps')


def networks(model_params):
    """TPSMM's networks (modules.tpsmm.family.networks) with
    dense_motion_network = CpabDenseMotionNetwork(num_cpab, **common_params, **dense_motion_params)."""
    return tpsmm.networks(model_params, CpabDenseMotionNetwork, TRANSFORM_KEYS, k_name='num_cpab')

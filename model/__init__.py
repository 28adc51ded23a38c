"""The Robust Video Matting network (Lin et al., arXiv 2108.11515), loading the released checkpoints unchanged."""
from .checkpoint import describe_state_dict, load_backbone_weights, load_checkpoint, read_state_dict
from .errors import CheckpointError, ModelInputError, UnsafeCheckpointError
from .matting import VARIANTS, MattingNetwork, lowres_size, state_shapes

__all__ = [
    "MattingNetwork", "load_checkpoint", "load_backbone_weights", "read_state_dict", "describe_state_dict",
    "lowres_size", "state_shapes", "VARIANTS",
    "CheckpointError", "ModelInputError", "UnsafeCheckpointError",
]

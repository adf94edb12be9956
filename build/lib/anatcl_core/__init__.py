"""anatcl_core: AnatCL reproduced — encoder, anatomical descriptors, objectives, data, training, evaluation."""
from anatcl_core.checkpoints import CheckpointError, load_checkpoint, load_released, save_checkpoint
from anatcl_core.encoder import AnatCLModel

__all__ = ["AnatCLModel", "CheckpointError", "load_checkpoint", "load_released", "save_checkpoint"]
__version__ = "0.1.0"

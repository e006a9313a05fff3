"""The CIM reward: equations (pure tensor maths) and the scorer that joins encoders and the index."""
from cim.reward.equations import MODES, cim_reward, group_advantages, grc, qir, rank_weights

__all__ = ["MODES", "cim_reward", "group_advantages", "grc", "qir", "rank_weights"]

"""The CIM reward: equations (pure tensor maths), the item/result schema, and the scorer that joins encoders
and the index."""
from cim.reward.equations import cim_reward, group_advantages, grc, qir, rank_weights
from cim.reward.schema import NUMERIC_KEYS, RESULT_KEYS, RewardItem, RewardResult, empty_result

__all__ = ["NUMERIC_KEYS", "RESULT_KEYS", "RewardItem", "RewardResult", "cim_reward", "empty_result",
           "group_advantages", "grc", "qir", "rank_weights"]

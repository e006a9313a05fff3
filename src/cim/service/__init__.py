"""The reward service (HTTP, dynamic batching) and its clients (imported on first use)."""
from cim.lazy import lazy_exports

__all__ = ["AsyncRewardClient", "MicroBatcher", "RewardClient", "ServiceError"]
__getattr__, __dir__ = lazy_exports(__name__, {"MicroBatcher": "cim.service.batching",
                                               "AsyncRewardClient": "cim.service.client",
                                               "RewardClient": "cim.service.client",
                                               "ServiceError": "cim.service.client"})

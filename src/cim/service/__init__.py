"""The reward service (HTTP, dynamic batching) and its clients."""
from cim.service.batching import MicroBatcher
from cim.service.client import AsyncRewardClient, RewardClient, ServiceError

__all__ = ["AsyncRewardClient", "MicroBatcher", "RewardClient", "ServiceError"]

"""Start, check and stop a reward service in a child process (what `cim train` and the Prefect flow use)."""
from __future__ import annotations

import ipaddress
import logging
import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from typing import Optional, Sequence
from urllib.parse import urlparse

from cim.service.client import HEALTH_S, RewardClient, ServiceError, read_token, wait_healthy

log = logging.getLogger(__name__)


def is_loopback_url(url: str) -> bool:
    return is_loopback_host(urlparse(url).hostname or "")


def is_loopback_host(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass
class ServiceHandle:
    url: str
    process: Optional[subprocess.Popen] = None   # None: the service was already up (not ours to stop)
    health: Optional[dict] = None
    others: tuple = ()                           # the other replicas' handles (a URL list), stopped with this one

    def stop(self, wait_s: float = 30.0) -> None:
        """SIGINT, then SIGKILL when the process has not exited within ``wait_s``."""
        for other in self.others:
            other.stop(wait_s)
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(timeout=wait_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=wait_s)


def check(url: str, token_env: str = "", timeout_s: float = HEALTH_S) -> Optional[dict]:
    """``/health`` of the service at ``url``, or None when nothing answers."""
    with RewardClient(url, token=read_token(token_env), timeout_s=timeout_s, retries=0) as client:
        try:
            return client.health()
        except ServiceError:
            return None


def start(params: str, overrides: Sequence[str], host: str, port: int, *, token_env: str,
          startup_timeout_s: float, log_path: Optional[str] = None) -> ServiceHandle:
    """The reward service (``python -m cim.service``: what ``cim serve`` runs) in a child process; returns once
    ``/health`` answers (bounded wait)."""
    cmd = [sys.executable, "-m", "cim.service", "--params", params, "--host", host, "--port", str(port), *overrides]
    out = open(log_path, "ab") if log_path else subprocess.DEVNULL
    proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT if log_path else None, env=os.environ.copy())
    url = f"http://{host}:{port}"
    handle = ServiceHandle(url, proc)

    def alive() -> None:
        if proc.poll() is not None:
            raise ServiceError(f"reward service exited with code {proc.returncode} while starting"
                               + (f" (log: {log_path})" if log_path else ""))

    try:
        with RewardClient(url, token=read_token(token_env), timeout_s=HEALTH_S, retries=0) as client:
            handle.health = wait_healthy(client.health_of, [url], startup_timeout_s, alive=alive)[0]
    except BaseException:
        handle.stop()
        raise
    return handle


def service_url(cfg) -> str:
    """Where verl's reward function sends captions: ``train.service.url``, else the service ``cim train``
    starts on ``host:port`` (a wildcard bind is reached on loopback); ``""`` with ``train.service.in_process``."""
    s = cfg.train.service
    if s.in_process:
        return ""
    if s.url:
        return s.url
    host = "127.0.0.1" if s.host in ("", "0.0.0.0", "::") else s.host
    return f"http://{host}:{s.port}"


def ensure_for(cfg, params: str, overrides: Sequence[str], log_path: Optional[str] = None) -> Optional[ServiceHandle]:
    """The service verl's reward function will score through (:func:`service_url`), up and answering
    ``/health`` (started on loopback with ``params`` and ``overrides`` when down, see :func:`ensure`); ``None``
    with ``train.service.in_process``."""
    from omegaconf import OmegaConf

    url = service_url(cfg)
    if not url:
        return None
    return ensure(OmegaConf.merge(cfg, {"train": {"service": {"url": url}}}), params, overrides, log_path=log_path)


def ensure(cfg, params: str, overrides: Sequence[str], log_path: Optional[str] = None) -> ServiceHandle:
    """Every replica of ``train.service.url`` (one URL or a comma-separated list) up and answering: each one
    that answers is used, each one that does not is started there when its URL is on loopback and
    ``train.service.start`` is set, else this raises. The handle's ``url`` is the whole list; stopping it
    stops every replica started here."""
    from cim.service.client import split_urls

    s = cfg.train.service
    if not s.url:
        raise ValueError("train.service.url is empty: the reward is computed in-process, no service needed")
    handles = []
    try:
        for n, url in enumerate(split_urls(s.url)):
            handles.append(_ensure_one(s, url, params, overrides,
                                       log_path if n == 0 or not log_path else f"{log_path}.{n}"))
    except BaseException:
        for h in handles:
            h.stop()
        raise
    first = handles[0]
    return ServiceHandle(",".join(h.url for h in handles), first.process, first.health, tuple(handles[1:]))


def _ensure_one(s, url: str, params: str, overrides: Sequence[str], log_path: Optional[str]) -> ServiceHandle:
    health = check(url, s.token_env)
    if health is not None:
        log.info("reward service up at %s (corpus %s)", url, health.get("corpus_size"))
        return ServiceHandle(url, None, health)
    if not (s.start and is_loopback_url(url)):
        raise ServiceError(f"no reward service at {url} (start it with `cim serve`, or set train.service.start "
                           "with a loopback URL)")
    parsed = urlparse(url)
    return start(params, overrides, parsed.hostname or "127.0.0.1", parsed.port or s.port, token_env=s.token_env,
                 startup_timeout_s=s.startup_timeout_s, log_path=log_path)

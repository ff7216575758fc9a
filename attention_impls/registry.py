"""One registry of methods: name -> operator class."""

from __future__ import annotations

from typing import Any

from .base import AttentionOperator

_REGISTRY: dict[str, type[AttentionOperator]] = {}


def register(cls: type[AttentionOperator]) -> type[AttentionOperator]:
    """Class decorator: make ``cls`` available under ``cls.name``."""
    if cls.name in _REGISTRY and _REGISTRY[cls.name] is not cls:
        raise ValueError(f"method {cls.name!r} is registered twice")
    _REGISTRY[cls.name] = cls
    return cls


def available() -> list[str]:
    """Names of all registered methods, sorted."""
    return sorted(_REGISTRY)


def get(name: str, **params: Any) -> AttentionOperator:
    """Build the operator ``name`` with ``params``; ValueError lists what exists."""
    try:
        cls = _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown method {name!r}; available: {', '.join(available())}") from None
    return cls(**params)


def method_class(name: str) -> type[AttentionOperator]:
    if name not in _REGISTRY:
        raise ValueError(f"unknown method {name!r}; available: {', '.join(available())}")
    return _REGISTRY[name]

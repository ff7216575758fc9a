"""Attention operators for lifelong user-behaviour sequences, behind one interface.

>>> import attention_impls as ai
>>> ai.available()
['dense', 'linrec', 'lrea', 'performer', 'svd_exact', 'svd_tokens']
"""

from . import dense, linrec, lrea, performer, svd_exact, svd_tokens  # noqa: F401  (registers)
from .base import (
    AttentionOperator,
    BaseState,
    Cost,
    Shape,
    dtype_from_name,
    dtype_name,
)
from .layer import AttentionLayer
from .registry import available, get, method_class, register

__all__ = [
    "AttentionLayer",
    "AttentionOperator",
    "BaseState",
    "Cost",
    "Shape",
    "available",
    "dtype_from_name",
    "dtype_name",
    "get",
    "method_class",
    "register",
]

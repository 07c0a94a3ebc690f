"""Kubernetes LabelSelectors: whether one is well formed (admission) and whether it matches a set of labels. Used by
BackupStores (which namespaces may use one) and DatabaseBackupPolicies (which namespaces and StatefulSets one
covers)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, Final

from common.fields import FieldError, show

__all__ = ["SELECTOR_OPERATORS", "selector_matches", "selector_problems"]

SELECTOR_OPERATORS: Final = ("In", "NotIn", "Exists", "DoesNotExist")


def selector_matches(selector: Mapping[str, Any] | None, labels: Mapping[str, str]) -> bool:
    """A Kubernetes LabelSelector against a set of labels (an empty selector matches everything). A selector this
    function cannot read matches nothing: it fails closed."""
    if selector is None:
        return True
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expression in selector.get("matchExpressions") or []:
        key, operator = expression.get("key"), expression.get("operator")
        values = expression.get("values") or []
        present = key in labels
        if operator == "In" and not (present and labels[key] in values):
            return False
        if operator == "NotIn" and present and labels[key] in values:
            return False
        if operator == "Exists" and not present:
            return False
        if operator == "DoesNotExist" and present:
            return False
        if operator not in SELECTOR_OPERATORS:
            return False
    return True


def selector_problems(where: str, selector: Mapping[str, Any]) -> Iterator[FieldError]:
    labels = selector.get("matchLabels")
    if labels is not None and not (
        isinstance(labels, Mapping) and all(isinstance(k, str) and isinstance(v, str) for k, v in labels.items())
    ):
        yield FieldError(f"{where}.matchLabels", f"must map label names to strings, not {show(labels)}")
    expressions = selector.get("matchExpressions")
    if expressions is not None and not isinstance(expressions, list):
        yield FieldError(f"{where}.matchExpressions", f"must be a list, not {show(expressions)}")
        return
    for index, expression in enumerate(expressions or []):
        at = f"{where}.matchExpressions[{index}]"
        if not isinstance(expression, Mapping) or not isinstance(expression.get("key"), str):
            yield FieldError(at, "must be an object with a key, an operator and (for In and NotIn) values")
            continue
        operator, values = expression.get("operator"), expression.get("values")
        if operator not in SELECTOR_OPERATORS:
            yield FieldError(f"{at}.operator", f"{show(operator)} is not one of {', '.join(SELECTOR_OPERATORS)}")
        elif operator in ("In", "NotIn") and not (isinstance(values, list) and values):
            yield FieldError(f"{at}.values", f"must list at least one value with operator {operator}")
        elif operator in ("Exists", "DoesNotExist") and values:
            yield FieldError(f"{at}.values", f"must be empty with operator {operator}")

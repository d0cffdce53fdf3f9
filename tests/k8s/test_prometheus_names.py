"""Label values and matchers are matched whole: a trailing newline does not slip through."""

from __future__ import annotations

import pytest

from triton_ops.k8s.prometheus import Prometheus, PrometheusError


@pytest.mark.parametrize("matcher", ['namespace="ml"\n', 'namespace="ml"\n,job="x"'])
def test_prometheus_matcher_with_newline_is_refused(matcher: str) -> None:
    with pytest.raises(PrometheusError):
        Prometheus("http://127.0.0.1:9", matchers=[matcher])


def test_prometheus_model_name_with_newline_is_refused() -> None:
    with pytest.raises(PrometheusError, match="cannot be used"):
        Prometheus("http://127.0.0.1:9").selector("m\n", [1])

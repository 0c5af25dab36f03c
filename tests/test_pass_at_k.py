"""pass@k: the unbiased estimator 1 - C(n-c, k) / C(n, k) (Chen et al., 2021)."""

from math import comb

import pytest

from evalsuite.scoring.code import pass_at_k


@pytest.mark.parametrize("k", [1, 2, 3, 4, 5])
def test_no_correct_sample_gives_zero_for_every_k(k):
    assert pass_at_k(5, 0, k) == 0.0


def test_k_larger_than_n_is_not_reported():
    assert pass_at_k(2, 1, 5) is None
    assert pass_at_k(2, 0, 5) is None


def test_pass_at_1_is_the_fraction_correct():
    assert pass_at_k(10, 3, 1) == pytest.approx(0.3, abs=1e-12)


def test_pass_at_5_matches_the_binomial_form():
    # 1 - C(7,5)/C(10,5) = 1 - 21/252 = 11/12
    assert pass_at_k(10, 3, 5) == pytest.approx(1 - comb(7, 5) / comb(10, 5), abs=1e-12)
    assert pass_at_k(10, 3, 5) == pytest.approx(11 / 12, abs=1e-12)


def test_fewer_wrong_samples_than_k_gives_one():
    # n - c = 2 < k = 3: every draw of 3 contains a correct sample.
    assert pass_at_k(10, 8, 3) == 1.0
    assert pass_at_k(4, 4, 4) == 1.0


def test_large_n_stays_finite_and_exact():
    # C(200, 100) overflows a float; the product form does not. Hand value: 1 - C(199,100)/C(200,100) = 1/2.
    assert pass_at_k(200, 1, 100) == pytest.approx(0.5, abs=1e-12)


@pytest.mark.parametrize("n,c,k", [(5, 6, 1), (5, -1, 1), (5, 2, 0)])
def test_invalid_counts_raise(n, c, k):
    with pytest.raises(ValueError):
        pass_at_k(n, c, k)

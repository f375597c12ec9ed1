"""The plugin contract, checked the way any third-party package checks its plugins."""

from ddbench_example.lowres import LowResPixelPrior
from ddbench_example.mmd import MMDMatcher

from ddbench.testing import check_matcher, check_prior


def test_lowres_prior_keeps_the_contract():
    check_prior(LowResPixelPrior, factor=2)


def test_mmd_matcher_keeps_the_contract(tmp_path):
    check_matcher(MMDMatcher, cache_dir=tmp_path, batch_real=4)

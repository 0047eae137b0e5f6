"""posereg: human pose regression with Residual Log-likelihood Estimation (Li et al., ICCV 2021)."""

__version__ = "0.1.0"

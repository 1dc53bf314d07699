"""Reference-value policies (PURE): model, canonical digest, appraisal."""

from ca_service.policy.appraise import Appraisal, AppraisalCheck, appraise
from ca_service.policy.model import Policy, load_policy

__all__ = ["Appraisal", "AppraisalCheck", "Policy", "appraise", "load_policy"]
